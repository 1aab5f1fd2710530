"""Pure pieces of the simulator as tables: reshaping, request-scoped faults, Go formatting, states.

Pure pieces of the simulator as tables: executor reshaping (§9), request-scoped faults (§2.3 A.6),
Go time and duration formatting (§1, §2.1), OAuth state validation (§4.2), xAI file names (§4.4).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from reauthd.sim.clock import go_duration_seconds, go_time
from reauthd.sim.credentials import Identity, file_content, xai_file_name
from reauthd.sim.oauth import normalize_provider, valid_state
from reauthd.sim.scenarios import classify, request_scoped
from reauthd.sim.upstream import UpstreamAnswer

CODEX_401 = (
    '{"error":{"message":"Your authentication token has been invalidated. Please try signing in again.",'
    '"type":"invalid_request_error","code":"token_invalidated","param":null},"status":401}'
)


@pytest.mark.parametrize(
    ("provider", "status", "body", "want_status", "want_code"),
    [
        ("codex", 401, CODEX_401, 401, "auth_unavailable"),
        ("codex", 400, '{"error":{"message":"x","type":"authentication_error"}}', 401, "auth_unavailable"),
        ("codex", 400, '{"error":{"message":"refresh_token_reused"}}', 401, "auth_unavailable"),
        ("codex", 402, '{"detail":{"code":"deactivated_workspace"}}', 402, None),
        (
            "xai",
            403,
            '{"code":"bad-credentials","error":"The access token could not be validated"}',
            401,
            None,
        ),
        ("xai", 403, '{"error":"forbidden region"}', 403, None),
        ("claude", 403, '{"type":"error","error":{"type":"permission_error"}}', 403, None),
    ],
)
def test_classify(provider: str, status: int, body: str, want_status: int, want_code: str | None) -> None:
    got_status, got_body = classify(provider, UpstreamAnswer(status, body))
    assert got_status == want_status
    if want_code:
        err = json.loads(got_body)["error"]
        assert (err["type"], err["code"]) == ("authentication_error", want_code)
        assert set(err) == {"message", "type", "code"}
    else:
        assert got_body == body


@pytest.mark.parametrize(
    ("status", "body", "scoped"),
    [
        (400, '{"error":{"type":"invalid_request_error","message":"bad"}}', True),
        (422, "unprocessable", True),
        (401, '{"error":{"type":"authentication_error"}}', False),
        (401, '{"error":{"type":"invalid_request_error"}}', True),  # the non-Codex caveat of §2.3 A.6
        (400, '{"error":"invalid_grant"}', False),
        (429, '{"error":{"type":"usage_limit_reached"}}', False),
        (503, "oops", False),
    ],
)
def test_request_scoped(status: int, body: str, scoped: bool) -> None:
    assert request_scoped(status, body) is scoped


@pytest.mark.parametrize(
    ("value", "tz", "text"),
    [
        (
            datetime(2026, 8, 22, 15, 9, 3, 123456, UTC),
            timezone(timedelta(hours=8)),
            "2026-08-22T23:09:03.123456+08:00",
        ),
        (datetime(2026, 8, 22, 15, 9, 3, 120000, UTC), UTC, "2026-08-22T15:09:03.12Z"),
        (
            datetime(2026, 8, 22, 15, 9, 3, tzinfo=UTC),
            timezone(timedelta(hours=-5, minutes=-30)),
            "2026-08-22T09:39:03-05:30",
        ),
    ],
)
def test_go_time(value: datetime, tz: timezone, text: str) -> None:
    assert go_time(value, tz) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(1800, "30m0s"), (1799.4, "29m59s"), (1799.5, "30m0s"), (59, "59s"), (3661, "1h1m1s"), (0, "0s")],
)
def test_go_duration(seconds: float, text: str) -> None:
    assert go_duration_seconds(seconds) == text


@pytest.mark.parametrize(
    ("state", "ok"),
    [
        ("a" * 32, True),
        ("kmi-1700000000000000000", True),
        ("", False),
        ("a" * 129, False),
        ("a..b", False),
        ("a/b", False),
        ("a b", False),
    ],
)
def test_valid_state(state: str, ok: bool) -> None:
    assert valid_state(state) is ok


@pytest.mark.parametrize(
    ("given", "want"),
    [
        ("claude", "anthropic"),
        ("OpenAI", "codex"),
        ("grok", "xai"),
        ("anti-gravity", "antigravity"),
        ("gemini-cli", "gemini-cli"),
        ("no such!", None),
        ("", None),
    ],
)
def test_normalize_provider(given: str, want: str | None) -> None:
    assert normalize_provider(given) == want


@pytest.mark.parametrize(
    ("email", "sub", "want"),
    [
        # internal/auth/xai/token.go CredentialFileName: e-mail, else the token's `sub`, else unix ms.
        ("x@x.com", "sub-1", "xai-x@x.com.json"),
        ("", "sub-1", "xai-sub-1.json"),
        ("  ", "user|42 ", "xai-user-42.json"),  # sanitizeFileSegment: other runes become "-"
        ("", "|auth0|", "xai-auth0.json"),  # ... and dashes at the ends go
        ("", "", "xai-1767225600000.json"),
        ("", " - ", "xai-1767225600000.json"),
    ],
)
def test_xai_file_name(email: str, sub: str, want: str) -> None:
    assert xai_file_name(email, sub, datetime(2026, 1, 1, tzinfo=UTC)) == want


def test_xai_file_without_email_carries_sub_only() -> None:
    content = file_content(
        Identity("xai", "", account_id="sub-1"), "a", "r", datetime(2026, 1, 1, tzinfo=UTC), None
    )
    assert content["sub"] == "sub-1" and "email" not in content
    assert "sub" not in file_content(
        Identity("xai", "x@x.com"), "a", "r", datetime(2026, 1, 1, tzinfo=UTC), None
    )


T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("attempts", "then_key", "at", "want"),
    [
        (4, "right", 0, (True, 200, "")),
        (5, "right", 0, (False, 403, "IP banned due to too many failed attempts. Try again in 30m0s")),
        (5, "right", 1, (False, 403, "IP banned due to too many failed attempts. Try again in 29m59s")),
        (5, "right", 1800, (True, 200, "")),  # the ban expired: the counter starts again
        (5, "", 1800, (False, 401, "missing management key")),
    ],
)
def test_ban_table(attempts: int, then_key: str, at: float, want: tuple[bool, int, str]) -> None:
    """§1: five failures → 401s then a 30-minute ban that refuses even the right key."""
    from reauthd.sim.bans import BanTable

    table = BanTable()
    for _ in range(attempts):
        assert table.check("1.2.3.4", True, "bad", secret="right", allow_remote=False, now=T0).status == 401
    got = table.check(
        "1.2.3.4", True, then_key, secret="right", allow_remote=False, now=T0 + timedelta(seconds=at)
    )
    assert (got.allowed, got.status, got.error) == want


def test_ban_table_remote_checks_do_not_count() -> None:
    """§1: only 401 cases count; remote-disabled answers 403 and leaves the counter alone."""
    from reauthd.sim.bans import BanTable

    table = BanTable()
    for _ in range(10):
        got = table.check("10.0.0.1", False, "bad", secret="right", allow_remote=False, now=T0)
        assert (got.status, got.error) == (403, "remote management disabled")
    assert "10.0.0.1" not in table
