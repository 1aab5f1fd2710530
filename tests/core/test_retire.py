"""Retire rules as tables: settings carried over, the step plan per policy, the re-check before a change."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from reauthd.core.identity import OldCredential
from reauthd.core.model import Credential
from reauthd.core.retire import (
    AuthFileUnreadable,
    OldProbe,
    RecheckKind,
    RetireStep,
    parse_auth_file,
    recheck_old,
    retire_plan,
    settings_to_copy,
)


def test_parse_auth_file_canonicalises_legacy_keys() -> None:
    raw = json.dumps({"type": "codex", "proxy-url": "socks5://p:1", "excluded-models": ["a"]}).encode()
    assert parse_auth_file(raw) == {"type": "codex", "proxy_url": "socks5://p:1", "excluded_models": ["a"]}
    # The canonical spelling wins when both are present (NormalizeCredentialMetadata).
    both = json.dumps({"proxy-url": "old", "proxy_url": "new"}).encode()
    assert parse_auth_file(both) == {"proxy_url": "new"}


@pytest.mark.parametrize("raw", [b"not json", b"[1,2]", b"\xff\xfe", b'"x"'])
def test_parse_auth_file_rejects_non_objects_without_quoting_them(raw: bytes) -> None:
    with pytest.raises(AuthFileUnreadable) as info:
        parse_auth_file(raw)
    assert "not" in str(info.value)
    assert raw.decode("utf-8", "replace") not in str(info.value)


OLD_FILE: dict[str, Any] = {
    "type": "codex",
    "access_token": "old-access",
    "refresh_token": "old-refresh",
    "id_token": "eyJold",
    "email": "u@x.com",
    "account_id": "acct",
    "last_refresh": "2026-01-01T00:00:00Z",
    "expired": "2026-01-02T00:00:00Z",
    "disabled": True,
    "prefix": "team-a",
    "proxy_url": "http://proxy:3128",
    "priority": 5,
    "weight": 3,
    "note": "finance seat",
    "headers": {"X-Team": "a", "X-Empty": ""},
    "excluded_models": ["gpt-5-mini"],
    "websockets": True,
    "request_retry": 2,
}


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        # A fresh file under a new name: every user setting goes over, no token, identity or `disabled`.
        (
            OLD_FILE,
            {"type": "codex", "access_token": "new", "email": "u@x.com"},
            {
                "prefix": "team-a",
                "proxy_url": "http://proxy:3128",
                "priority": 5,
                "weight": 3,
                "note": "finance seat",
                "headers": {"X-Team": "a"},
                "excluded_models": ["gpt-5-mini"],
                "websockets": True,
                "request_retry": 2,
            },
        ),
        # The new file's own settings win (CPA's merge rule); headers merge by name, case-insensitively.
        (
            OLD_FILE,
            {"prefix": "mine", "note": "kept", "headers": {"x-team": "b"}, "priority": None},
            {
                "proxy_url": "http://proxy:3128",
                "priority": 5,
                "weight": 3,
                "excluded_models": ["gpt-5-mini"],
                "websockets": True,
                "request_retry": 2,
            },
        ),
        # Values CPA's PATCH would reject or misread are skipped.
        ({"weight": "3", "request_retry": -1, "prefix": "", "note": None, "headers": "x"}, {}, {}),
        ({"weight": True, "request_retry": 1.5}, {}, {}),
        # The public-API check leaves "" where the new file had no prefix (PATCH never deletes a key,
        # contract §3): "" is no prefix, so the old file's prefix still goes over.
        ({"prefix": "team-a"}, {"prefix": ""}, {"prefix": "team-a"}),
        ({"prefix": "team-a"}, {"prefix": "  "}, {"prefix": "team-a"}),
        # ... but only for `prefix`: an empty note is the new file's own choice.
        ({"note": "seat"}, {"note": ""}, {}),
        # A temporary verification prefix left by a crash is never carried over.
        ({"prefix": "reauthd-verify-abc123"}, {}, {}),
        # Running it again after the copy landed copies nothing (idempotent).
        (
            {"prefix": "p", "headers": {"A": "1"}},
            {"prefix": "p", "headers": {"A": "1"}},
            {},
        ),
        # Kebab-case arrives canonicalised via parse_auth_file; unknown keys are not settings.
        ({"model_aliases": {"a": "b"}, "account_id": "x", "custom": 1}, {}, {"model_aliases": {"a": "b"}}),
    ],
)
def test_settings_to_copy(old: dict[str, Any], new: dict[str, Any], expected: dict[str, Any]) -> None:
    assert settings_to_copy(old, new) == expected


@pytest.mark.parametrize(
    ("policy", "same_name", "expected"),
    [
        ("delete", False, (RetireStep.COPY_SETTINGS, RetireStep.DISABLE_OLD, RetireStep.DELETE_OLD)),
        ("disable", False, (RetireStep.COPY_SETTINGS, RetireStep.DISABLE_OLD)),
        ("keep", False, (RetireStep.COPY_SETTINGS,)),
        ("delete", True, ()),
        ("disable", True, ()),
        ("keep", True, ()),
    ],
)
def test_retire_plan(policy: Any, same_name: bool, expected: tuple[RetireStep, ...]) -> None:
    assert retire_plan(policy, same_name) == expected


OLD = OldCredential("codex-u@x.com-plus.json", "aaaa", "codex", "u@x.com", "acct")
CUR = Credential(cpa="main", name=OLD.name, auth_index="aaaa", provider="codex", status="error")
NEW = Credential(
    cpa="main", name="codex-12345678-u@x.com-plus.json", auth_index="bbbb", provider="codex", status="active"
)
DISABLED_BY_US = replace(CUR, status="disabled", disabled=True)
ACTIVE = replace(CUR, status="active")

D, X, C = RetireStep.DISABLE_OLD, RetireStep.DELETE_OLD, RetireStep.COPY_SETTINGS
K = RecheckKind


@pytest.mark.parametrize(
    ("step", "current", "sent_before", "we_disabled", "old_probe", "probe_available", "kind", "someone"),
    [
        # Still failing → go.
        (D, CUR, False, False, None, True, K.PROCEED, False),
        (X, DISABLED_BY_US, False, True, None, True, K.PROCEED, False),
        # Gone: deleted by someone else → leave; our own delete sent before a crash → done.
        (D, None, False, False, None, True, K.LEAVE, False),
        (X, None, False, True, None, True, K.LEAVE, False),
        (X, None, True, True, None, True, K.ALREADY_DONE, False),
        # Replaced by a different file under the same name → leave.
        (D, replace(CUR, auth_index="cccc"), False, False, None, True, K.LEAVE, False),
        (X, replace(DISABLED_BY_US, provider="claude"), False, True, None, True, K.LEAVE, False),
        # It is the new credential → never.
        (D, replace(CUR, name=NEW.name), False, False, None, True, K.LEAVE, False),
        (X, replace(CUR, auth_index=NEW.auth_index), False, True, None, True, K.LEAVE, False),
        # Already disabled: our own (crash after sending) → done; a person's → done, and say so.
        (D, DISABLED_BY_US, True, False, None, True, K.ALREADY_DONE, False),
        (D, DISABLED_BY_US, False, False, None, True, K.ALREADY_DONE, True),
        (X, DISABLED_BY_US, False, False, None, True, K.PROCEED, True),
        # Active in the listing: probe the old token first; it decides.
        (D, ACTIVE, False, False, None, True, K.PROBE_OLD, False),
        (D, ACTIVE, False, False, OldProbe.DEAD, True, K.PROCEED, False),
        (D, ACTIVE, False, False, OldProbe.WORKS, True, K.LEAVE, False),
        (D, ACTIVE, False, False, OldProbe.UNKNOWN, True, K.WAIT, False),
        # Active and no probe for this provider (Vertex): never destroy what may work again.
        (D, ACTIVE, False, False, None, False, K.LEAVE, False),
        # Re-enabled by someone after our disable: the old token decides again.
        (X, ACTIVE, False, True, None, True, K.PROBE_OLD, False),
    ],
)
def test_recheck_old(
    step: RetireStep,
    current: Credential | None,
    sent_before: bool,
    we_disabled: bool,
    old_probe: OldProbe | None,
    probe_available: bool,
    kind: RecheckKind,
    someone: bool,
) -> None:
    result = recheck_old(
        step,
        OLD,
        current,
        NEW,
        sent_before=sent_before,
        we_disabled=we_disabled,
        old_probe=old_probe,
        probe_available=probe_available,
    )
    assert result.kind is kind, result.reason
    assert result.disabled_by_someone is someone
    if kind is K.LEAVE:
        assert OLD.name in result.reason


@pytest.mark.parametrize(
    ("step", "current", "sent_before", "we_disabled", "kind"),
    [
        # The file was rewritten since reauthd last saw it: someone else's doing → leave it.
        (D, CUR, False, False, K.LEAVE),
        (X, replace(CUR, status="active"), False, True, K.LEAVE),  # re-enabled after our disable
        # Our own disable rewrote it before a crash: that is not "someone else".
        (D, DISABLED_BY_US, True, False, K.ALREADY_DONE),
        (X, DISABLED_BY_US, False, True, K.PROCEED),
    ],
)
def test_recheck_old_rewritten(
    step: RetireStep, current: Credential, sent_before: bool, we_disabled: bool, kind: RecheckKind
) -> None:
    result = recheck_old(
        step, OLD, current, NEW, sent_before=sent_before, we_disabled=we_disabled, old_probe=None,
        probe_available=True, rewritten=True,
    )  # fmt: skip
    assert result.kind is kind, result.reason
    if kind is K.LEAVE:
        assert "changed by someone else" in result.reason


def test_leave_reasons_say_why() -> None:
    def reason(current: Credential | None, probe: OldProbe | None = None) -> str:
        return recheck_old(
            D, OLD, current, NEW, sent_before=False, we_disabled=False, old_probe=probe, probe_available=True
        ).reason

    assert "removed" in reason(None)
    assert "replaced" in reason(replace(CUR, auth_index="zzzz"))
    assert "new credential" in reason(replace(CUR, name=NEW.name))
    assert "works again" in reason(ACTIVE, OldProbe.WORKS)
