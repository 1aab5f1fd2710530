"""Go durations and ban answers parsed from CPA's error texts (handler.go AuthenticateManagementKey)."""

from __future__ import annotations

import pytest

from reauthd.cpa.errors import (
    ClientPaused,
    CPARequestError,
    KeyProblem,
    ManagementBanned,
    ManagementKeyRejected,
    format_seconds,
    parse_ban_retry_after,
    parse_go_duration,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("29m59s", 1799.0),
        ("30m0s", 1800.0),
        ("1h0m0s", 3600.0),
        ("45s", 45.0),
        ("0s", 0.0),
        ("1.5s", 1.5),
        ("2h", 7200.0),
        ("500ms", 0.5),
        ("", None),
        ("soon", None),
        ("29m59", None),
        ("m5s", None),
        ("5s extra", None),
    ],
)
def test_parse_go_duration(text: str, seconds: float | None) -> None:
    assert parse_go_duration(text) == seconds


@pytest.mark.parametrize(
    ("error_text", "seconds"),
    [
        ("IP banned due to too many failed attempts. Try again in 29m59s", 1799.0),
        ("IP banned due to too many failed attempts. Try again in 1h0m0s", 3600.0),
        ("ERR IP banned due to too many failed attempts. Try again in 45s", 45.0),
        ("IP banned due to too many failed attempts.", None),
    ],
)
def test_parse_ban_retry_after(error_text: str, seconds: float | None) -> None:
    assert parse_ban_retry_after(error_text) == seconds


@pytest.mark.parametrize(("seconds", "text"), [(1799, "29m59s"), (7260, "2h1m"), (45, "45s"), (-3, "0s")])
def test_format_seconds(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text


def test_sentences_name_cpa_and_endpoint_and_groups_branch() -> None:
    banned = ManagementBanned("prod", "/v0/management/auth-files", 1799.0)
    assert "'prod'" in str(banned) and "/v0/management/auth-files" in str(banned) and "29m59s" in str(banned)
    assert banned.retry_after_s == 1799.0
    paused = ClientPaused("prod", "/v0/management/api-call", banned, None)
    assert isinstance(paused, KeyProblem) and paused.cause is banned
    assert "/v0/management/api-call" in str(paused)
    rejected = ManagementKeyRejected("prod", "/x", "invalid management key")
    assert rejected.counts_as_failure and not banned.counts_as_failure
    req = CPARequestError("prod", "/v0/management/auth-files", 404, "auth file not found")
    assert (req.status, req.error_text) == (404, "auth file not found")
    assert str(req).count(".") <= 2  # one sentence
