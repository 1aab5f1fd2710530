"""The lean listing reader: same rules as the client's AuthFile model, one entry at a time."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from reauthd.cpa.models import parse_auth_file_listing
from reauthd.detect.listing import ListingSyntaxError, parse_listing

ENTRY = {
    "id": "codex-1a2b3c4d-u@x.com-plus.json",
    "auth_index": "9f86d081884c7d65",
    "name": "codex-1a2b3c4d-u@x.com-plus.json",
    "type": "codex",
    "provider": "codex",
    "label": "u@x.com",
    "status": "error",
    "status_message": '{"error":{"code":"auth_unavailable"}}',
    "disabled": False,
    "unavailable": True,
    "runtime_only": False,
    "source": "file",
    "email": "u@x.com",
    "account_type": "oauth",
    "account": "u@x.com",
    "modtime": "2026-08-22T23:09:03.123456789+08:00",
    "last_refresh": "2026-08-20T10:00:00Z",
    "next_retry_after": "0001-01-01T00:00:00Z",
    "id_token": {"chatgpt_account_id": "acct-1", "plan_type": "plus"},
    "priority": 3,
    "recent_requests": [{"time": "10:00-10:10", "success": 1, "failed": 0}] * 20,
}


def body(*entries: object, extra: str = "") -> bytes:
    return ('{"files":' + json.dumps(list(entries)) + extra + "}").encode()


def test_fields_match_the_clients_model() -> None:
    (ours,) = parse_listing(body(ENTRY), "main").credentials
    (theirs,) = parse_auth_file_listing(body(ENTRY)).files
    # Same Credential as the client's model gives, except that Go's zero time reads as "not set".
    assert ours == replace(theirs.to_credential("main"), next_retry_after=None)
    assert ours.account_id == "acct-1" and ours.plan_type == "plus" and ours.priority == 3
    assert ours.modtime == datetime(2026, 8, 22, 15, 9, 3, 123456, tzinfo=UTC)
    assert ours.next_retry_after is None  # Go's zero time


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"status": "ready"}, "status"),
        ({"status": "refreshing"}, "status"),
        ({"disabled": "true"}, "disabled"),
        ({"auth_index": ""}, "auth_index"),
        ({"auth_index": None}, "auth_index"),
        ({"priority": "5"}, "priority"),
        ({"last_refresh": "yesterday"}, "Invalid isoformat"),
    ],
)
def test_bad_entries_are_skipped_not_fatal(change: dict[str, object], problem: str) -> None:
    good = dict(ENTRY, name="good.json", auth_index="0" * 16)
    listing = parse_listing(body(dict(ENTRY, **change), good, "not an object"), "main")
    assert [c.name for c in listing.credentials] == ["good.json"]
    assert listing.skipped == 2
    assert problem in listing.problems[0]


def test_api_key_account_is_never_taken_as_email() -> None:
    entry = {k: v for k, v in ENTRY.items() if k != "email"} | {"account_type": "api_key", "account": "sk-1"}
    (credential,) = parse_listing(body(entry), "main").credentials
    assert credential.email is None


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[]",
        b"{}",
        b'{"files": {}}',
        b'{"files": [1, 2',
        b'{"files": []',
        b"\xff\xfe",
        b'{"x":1}',
    ],
)
def test_broken_envelope_raises(raw: bytes) -> None:
    with pytest.raises(ListingSyntaxError):
        parse_listing(raw, "main")


def test_other_keys_and_huge_values_are_skipped_over() -> None:
    raw = (
        '{"padding": "' + " " * 1_000_000 + '", "files": ' + json.dumps([ENTRY]) + ', "more": {"a": [1]}}'
    ).encode()
    assert len(parse_listing(raw, "main").credentials) == 1
    assert parse_listing(b'{"files": []}', "main").credentials == []
