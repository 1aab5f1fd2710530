"""Parsing of CPA answers: the listing skips entries that break the contract, never the whole listing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from reauthd.cpa.models import (
    AuthFile,
    AuthStatus,
    AuthURL,
    ErrorEvent,
    VertexImportResult,
    parse_auth_file_listing,
)


def entry(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "codex-1a2b3c4d-u@x.com-plus.json",
        "auth_index": "9f86d081884c7d65",
        "name": "codex-1a2b3c4d-u@x.com-plus.json",
        "type": "codex",
        "provider": "codex",
        "label": "u@x.com",
        "status": "error",
        "status_message": '{"error":{"type":"authentication_error","code":"auth_unavailable"}}',
        "disabled": False,
        "unavailable": True,
        "runtime_only": False,
        "source": "file",
        "size": 812,
        "success": 3,
        "failed": 1,
        "recent_requests": [{"time": "10:00-10:10", "success": 0, "failed": 0}] * 20,
        "path": "/root/.cli-proxy-api/codex-1a2b3c4d-u@x.com-plus.json",
        "modtime": "2026-08-22T23:09:03.123456789+08:00",
        "email": "u@x.com",
        "account_type": "oauth",
        "account": "u@x.com",
        "last_refresh": "2026-08-22T15:00:00Z",
        "next_retry_after": "2026-08-22T15:30:00Z",
        "id_token": {
            "chatgpt_account_id": "acct-1",
            "plan_type": "plus",
            "chatgpt_subscription_active_start": 1,
        },
        "priority": 5,
        "note": "team A",
        "weight": 2,
        "websockets": True,
        "request_retry": 1,
        "some_future_field": {"nested": [1, 2, 3]},
    }
    base.update(over)
    return base


def listing(*entries: object) -> bytes:
    return json.dumps({"files": list(entries)}).encode()


def test_full_entry_becomes_a_credential() -> None:
    parsed = parse_auth_file_listing(listing(entry()))
    assert parsed.skipped == []
    (af,) = parsed.files
    assert af.modtime == datetime(2026, 8, 22, 15, 9, 3, 123456, tzinfo=UTC)  # nanoseconds truncated
    assert af.next_retry_after == datetime(2026, 8, 22, 15, 30, tzinfo=UTC)
    cred = af.to_credential("prod")
    assert (cred.cpa, cred.name, cred.auth_index, cred.provider) == (
        "prod",
        "codex-1a2b3c4d-u@x.com-plus.json",
        "9f86d081884c7d65",
        "codex",
    )
    assert (cred.status, cred.unavailable, cred.email, cred.account_id, cred.plan_type) == (
        "error",
        True,
        "u@x.com",
        "acct-1",
        "plus",
    )
    assert (cred.priority, cred.note) == (5, "team A")


def test_minimal_entry_uses_neutral_defaults() -> None:
    minimal = {k: entry()[k] for k in ("id", "auth_index", "name", "type", "provider", "status", "disabled")}
    (af,) = parse_auth_file_listing(listing(minimal)).files
    assert (af.status_message, af.unavailable, af.next_retry_after, af.id_token) == ("", False, None, None)


def test_api_key_account_is_never_an_email_nor_printed() -> None:
    af = AuthFile.model_validate_json(
        json.dumps(entry(email=None, account_type="api_key", account="sk-secret-value"))
    )
    assert af.account_email is None
    assert "sk-secret-value" not in repr(af)
    assert af.to_credential("p").email is None


@pytest.mark.parametrize(
    ("bad", "problem_part"),
    [
        (entry(name="ready.json", status="ready"), "status"),  # the docs' example status does not exist
        (entry(name="pending.json", status="pending"), "status"),  # in the Go enum but never assigned
        (entry(name="strbool.json", disabled="true"), "disabled"),  # CPA writes JSON bools
        (entry(name="noindex.json", auth_index=None), "auth_index"),
        ({k: v for k, v in entry(name="nostatus.json").items() if k != "status"}, "status"),
        (entry(name="prio.json", priority="5"), "priority"),
        (entry(name="when.json", modtime="yesterday"), "modtime"),
    ],
)
def test_one_bad_entry_is_skipped_and_named(bad: dict[str, Any], problem_part: str) -> None:
    good = entry(name="good.json", id="good.json")
    parsed = parse_auth_file_listing(listing(good, bad, good))
    assert [f.name for f in parsed.files] == ["good.json", "good.json"]
    (skipped,) = parsed.skipped
    assert skipped.position == 1
    assert skipped.name == bad["name"]
    assert problem_part in skipped.problem


def test_non_object_entries_are_skipped() -> None:
    parsed = parse_auth_file_listing(listing(entry(), 5, "x", None, []))
    assert len(parsed.files) == 1
    assert [s.position for s in parsed.skipped] == [1, 2, 3, 4]
    assert all(s.name is None for s in parsed.skipped)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[]",
        b'{"files": null}',
        b'{"files": {}}',
        b'{"other": []}',
        b'{"files": [',
        b"\xff\xfe",
    ],
)
def test_broken_envelope_raises(raw: bytes) -> None:
    with pytest.raises(ValidationError):
        parse_auth_file_listing(raw)


def test_empty_listing() -> None:
    assert parse_auth_file_listing(b'{"files":[]}').files == []


@pytest.mark.parametrize(
    ("raw", "flow", "user_code"),
    [
        (b'{"status":"ok","url":"https://auth.openai.com/x","state":"0123456789abcdef0123456789abcdef"}', "callback",
         None),
        (b'{"status":"ok","url":"https://kimi/device","state":"kmi-1","flow":"device","user_code":"AB-CD",'
         b'"expires_in":900}', "device", "AB-CD"),
    ],
)  # fmt: skip
def test_auth_url(raw: bytes, flow: str, user_code: str | None) -> None:
    result = AuthURL.model_validate_json(raw)
    assert (result.flow, result.user_code) == (flow, user_code)
    assert result.state not in repr(result) and result.url not in repr(result)


@pytest.mark.parametrize(
    ("raw", "ok"),
    [
        (b'{"status":"wait"}', True),
        (b'{"status":"ok"}', True),
        (b'{"status":"error","error":"unknown or expired state"}', True),
        (b'{"status":"ready"}', False),
        (b'{"error":"x"}', False),
    ],
)
def test_auth_status(raw: bytes, ok: bool) -> None:
    if ok:
        AuthStatus.model_validate_json(raw)
    else:
        with pytest.raises(ValidationError):
            AuthStatus.model_validate_json(raw)


def test_vertex_import_uses_cpa_dash_key() -> None:
    raw = b'{"status":"ok","auth-file":"/a/vertex-p.json","project_id":"p","email":"sa@p.iam","location":"us-central1"}'
    assert VertexImportResult.model_validate_json(raw).auth_file == "/a/vertex-p.json"


def test_error_event_shape_from_error_events_go() -> None:
    raw = json.dumps(
        {
            "timestamp": "2026-08-22T23:09:03.123456789+08:00",
            "provider": "codex",
            "model": "gpt-5",
            "auth_id": "codex-a.json",
            "auth_index": "9f86d081884c7d65",
            "status_code": 401,
            "body": '{"error":{"type":"authentication_error","code":"auth_unavailable"}}',
            "auth_status": {
                "status": "error",
                "status_message": "unauthorized",
                "disabled": False,
                "unavailable": True,
                "next_retry_after": "2026-08-22T23:39:03+08:00",
                "model": {"name": "gpt-5", "status": "error", "unavailable": True},
            },
        }
    )
    event = ErrorEvent.model_validate_json(raw)
    assert (event.status_code, event.retryable, event.code) == (401, False, None)
    assert event.auth_status.next_retry_after == datetime(
        2026, 8, 22, 23, 39, 3, tzinfo=timezone(timedelta(hours=8))
    )
    assert event.auth_status.model is not None and event.auth_status.model.name == "gpt-5"


def test_go_zero_time_means_unset() -> None:
    (af,) = parse_auth_file_listing(listing(entry(created_at="0001-01-01T00:00:00Z"))).files
    assert af.created_at is None
