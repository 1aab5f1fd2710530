"""The Home simulator and the cluster-node simulator against the facts of shared/home-contract.md, one test per
behaviour (issue 15 point 2)."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from reauthd.sim.clock import SimClock
from reauthd.sim.home import HomeSimServer, code_for

KEY = "sim-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
M = "/v0/management"


@pytest.fixture
async def home() -> AsyncIterator[HomeSimServer]:
    async with HomeSimServer(KEY, clock=SimClock(frozen=True)) as server:
        yield server


@pytest.fixture
async def http(home: HomeSimServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=home.base_url, timeout=5) as client:
        yield client


async def login(http: httpx.AsyncClient, home: HomeSimServer, route: str, email: str) -> str:
    start = (await http.get(f"{M}/{route}-auth-url", headers=AUTH)).json()
    query = parse_qs(urlsplit(start["url"]).query)
    redirect = f"{query['redirect_uri'][0]}?code={code_for(email)}&state={start['state']}"
    answer = await http.post(f"{M}/oauth-callback", json={"redirect_url": redirect}, headers=AUTH)
    assert answer.json() == {"status": "ok"}
    home.state.clock.advance(1)
    return str(start["state"])


# ---------------------------------------------------------------------------- §2 headers, key, bans


async def test_home_headers_come_first_on_every_management_answer(http: httpx.AsyncClient) -> None:
    # server.go:657-671 withBuildInfoHeaders: before availability and auth checks.
    for headers in (AUTH, {}, {"Authorization": "Bearer wrong"}):
        answer = await http.get(f"{M}/auth-files", headers=headers)
        assert answer.headers["x-cpa-home-version"] == "v1.0.67-sim"
        assert answer.headers["x-cpa-version"] == "dev"


async def test_without_a_secret_management_is_an_empty_404_with_home_headers_only() -> None:
    async with HomeSimServer(None) as server, httpx.AsyncClient(base_url=server.base_url) as http:
        answer = await http.get(f"{M}/auth-files", headers=AUTH)
    assert answer.status_code == 404 and answer.content == b""
    assert "x-cpa-home-version" in answer.headers and "x-cpa-version" not in answer.headers


async def test_bad_keys_ban_this_home_instance_and_x_forwarded_for_is_ignored(
    home: HomeSimServer, http: httpx.AsyncClient
) -> None:
    codes = [
        (await http.get(f"{M}/auth-files", headers={"Authorization": "Bearer x"})).status_code
        for _ in range(5)
    ]
    assert codes == [401] * 5
    banned = await http.get(f"{M}/auth-files", headers={**AUTH, "X-Forwarded-For": "203.0.113.9"})
    assert banned.status_code == 403
    assert banned.json()["error"].startswith("IP banned due to too many failed attempts. Try again in ")
    # Another Home instance has its own table (home-contract §2, point 2).
    async with HomeSimServer(KEY) as other, httpx.AsyncClient(base_url=other.base_url) as http2:
        assert (await http2.get(f"{M}/auth-files", headers=AUTH)).status_code == 200


async def test_unknown_routes_and_delete_oauth_session_need_the_key_and_count(
    http: httpx.AsyncClient,
) -> None:
    # NoRoute (server.go:620-622,673-715); DELETE /oauth-session is not registered (§3.12).
    for method, path in (("DELETE", "/oauth-session?state=cla-x"), ("GET", "/no-such-route")):
        assert (await http.request(method, M + path)).status_code == 401
        good = await http.request(method, M + path, headers=AUTH)
        assert good.status_code == 404 and good.content == b""
    for _ in range(
        5
    ):  # the good key above reset the count (handler.go): five more bad ones on unknown routes
        await http.get(f"{M}/no-such-route")
    assert (await http.get(f"{M}/auth-files", headers=AUTH)).status_code == 403  # 5 failures: banned


# --------------------------------------------------------------------------------- §3.1 listing


async def test_listing_is_home_shaped(home: HomeSimServer, http: httpx.AsyncClient) -> None:
    home.state.add_credential("codex", "b@x.com")
    home.state.add_credential("codex", "B@x.com")
    home.state.add_credential("claude", "a@x.com")
    body = (await http.get(f"{M}/auth-files?name=codex-b@x.com.json", headers=AUTH)).json()
    assert body["in_flight_observed_at"] is None
    files = body["files"]
    assert len(files) == 3  # query filters ignored (oauth.go:24-27)
    assert [f["name"] for f in files] == ["claude-a@x.com.json", "codex-B@x.com.json", "codex-b@x.com.json"]
    for f in files:
        assert f["id"] == f["auth_index"] and uuid.UUID(f["id"])
        assert f["source"] == "db" and f["file_name"] == f["name"] and f["modtime"] == f["updated_at"]
        for absent in (
            "last_refresh",
            "next_retry_after",
            "success",
            "failed",
            "recent_requests",
            "id_token",
        ):
            assert absent not in f


async def test_every_login_writes_a_new_row_with_the_same_name(
    home: HomeSimServer, http: httpx.AsyncClient
) -> None:
    old = home.state.add_credential("claude", "u@x.com")
    old.metadata["note"] = "team laptop"
    await login(http, home, "anthropic", "u@x.com")
    files = (await http.get(f"{M}/auth-files", headers=AUTH)).json()["files"]
    assert [f["name"] for f in files] == ["claude-u@x.com.json"] * 2  # names are not unique (§5.4)
    new = next(f for f in files if f["id"] != old.id)
    assert "note" not in new  # nothing is carried over
    assert new["created_at"] >= next(f for f in files if f["id"] == old.id)["created_at"]


# ------------------------------------------------------------------------- §3.2 revocation states


async def test_a_dead_refresh_token_makes_home_disable_the_credential_itself(
    home: HomeSimServer, http: httpx.AsyncClient
) -> None:
    row = home.state.add_credential("codex", "u@x.com")
    home.state.revoke(row)
    entry = (await http.get(f"{M}/auth-files", headers=AUTH)).json()["files"][0]
    assert (entry["disabled"], entry["status"], entry["status_message"], entry["unavailable"]) == (
        True, "disabled", "unauthorized", True,
    )  # fmt: skip


async def test_a_node_failure_is_an_error_with_its_body_and_a_one_minute_401_cooldown(
    home: HomeSimServer, http: httpx.AsyncClient
) -> None:
    row = home.state.add_credential("claude", "u@x.com")
    home.state.record_result(row, 401, "upstream unauthorized")
    entry = (await http.get(f"{M}/auth-files", headers=AUTH)).json()["files"][0]
    assert (entry["status"], entry["status_message"], entry["disabled"]) == (
        "error",
        "upstream unauthorized",
        False,
    )
    assert row.next_retry_after is not None
    assert (row.next_retry_after - home.state.now()).total_seconds() == 60


async def test_failed_request_events_can_be_polled_in_order(
    home: HomeSimServer, http: httpx.AsyncClient
) -> None:
    a = home.state.add_credential("claude", "a@x.com")
    b = home.state.add_credential("codex", "b@x.com")
    home.state.record_result(a, 200)
    home.state.clock.advance(1)
    home.state.record_result(a, 401, "upstream unauthorized")
    home.state.clock.advance(1)
    start = home.state.now()
    home.state.revoke(b)
    query = "status=failed&sort=timestamp_asc&limit=500"
    page = (await http.get(f"{M}/request-events?{query}", headers=AUTH)).json()
    assert page["total"] == 2 and page["limit"] == 200 and page["sort"] == "timestamp_asc"
    assert [e["credential"]["credential_id"] for e in page["items"]] == [a.id, b.id]
    assert page["items"][0]["id"].startswith("evt_") and page["items"][0]["timestamp"].endswith("Z")
    since = start.isoformat()
    later = (
        await http.get(f"{M}/request-events", params={"status": "failed", "from": since}, headers=AUTH)
    ).json()
    assert [e["credential"]["auth_index"] for e in later["items"]] == [b.id]
    assert later["items"][0]["error"]["body_preview"].startswith('{"error"')


# ---------------------------------------------------------------------- §3.3-3.6 by id, not name


async def test_status_patch_by_id_and_the_lost_version_race(
    home: HomeSimServer, http: httpx.AsyncClient
) -> None:
    row = home.state.add_credential("codex", "u@x.com")
    answer = await http.patch(f"{M}/auth-files/status", json={"name": row.id, "disabled": True}, headers=AUTH)
    assert answer.json() == {"status": "ok", "disabled": True}
    assert (row.status, row.status_message) == ("disabled", "disabled via management API")
    home.state.lost_status_writes = 1
    again = await http.patch(f"{M}/auth-files/status", json={"name": row.id, "disabled": False}, headers=AUTH)
    assert again.status_code == 200 and row.disabled  # repository.go:198-203: 200, nothing written
    missing = await http.patch(
        f"{M}/auth-files/status", json={"name": "nope", "disabled": True}, headers=AUTH
    )
    assert (missing.status_code, missing.json()) == (404, {"error": "auth file not found"})


async def test_fields_download_and_delete_by_id(home: HomeSimServer, http: httpx.AsyncClient) -> None:
    old = home.state.add_credential("codex", "u@x.com")
    new = home.state.add_credential("codex", "u@x.com")
    assert (
        await http.patch(f"{M}/auth-files/fields", json={"id": new.id, "note": "n"}, headers=AUTH)
    ).json() == {"status": "ok"}
    assert new.metadata["note"] == "n" and "note" not in old.metadata
    download = await http.get(f"{M}/auth-files/download", params={"id": old.id}, headers=AUTH)
    assert download.json()["uuid"] == old.id
    assert (await http.delete(f"{M}/auth-files", params={"id": old.id}, headers=AUTH)).json() == {
        "status": "ok"
    }
    ids = [f["id"] for f in (await http.get(f"{M}/auth-files", headers=AUTH)).json()["files"]]
    assert ids == [new.id]
    gone = await http.delete(f"{M}/auth-files", params={"id": old.id}, headers=AUTH)
    assert (gone.status_code, gone.json()) == (404, {"error": "not_found", "message": "not_found"})


# ----------------------------------------------------------------------------------- §3.9-3.11 OAuth


@pytest.mark.parametrize(
    ("route", "prefix", "redirect"),
    [
        ("anthropic", "cla", "http://localhost:54545/callback"),
        ("codex", "cdx", "http://localhost:1455/auth/callback"),
        ("antigravity", "agv", "http://localhost:51121/oauth-callback"),
        ("xai", "xai", "http://127.0.0.1:56121/callback"),  # a callback flow on Home, not device code
    ],
)
async def test_login_start_states_and_redirects(
    http: httpx.AsyncClient, route: str, prefix: str, redirect: str
) -> None:
    body = (await http.get(f"{M}/{route}-auth-url?is_webui=true", headers=AUTH)).json()
    assert set(body) == {"status", "url", "state"}
    assert re.fullmatch(prefix + r"-[A-Za-z0-9_-]{32}", body["state"])
    assert parse_qs(urlsplit(body["url"]).query)["redirect_uri"] == [redirect]


async def test_kimi_answers_only_url_and_state(http: httpx.AsyncClient) -> None:
    body = (await http.get(f"{M}/kimi-auth-url", headers=AUTH)).json()
    assert set(body) == {"status", "url", "state"} and body["state"].startswith("kmi-")


async def test_the_callback_needs_the_key(home: HomeSimServer, http: httpx.AsyncClient) -> None:
    state = (await http.get(f"{M}/codex-auth-url", headers=AUTH)).json()["state"]
    answer = await http.post(f"{M}/oauth-callback", json={"state": state, "code": code_for("u@x.com")})
    assert answer.status_code == 401


async def test_login_completes_then_is_forgotten_after_60_s(
    home: HomeSimServer, http: httpx.AsyncClient
) -> None:
    state = await login(http, home, "codex", "u@x.com")
    assert (await http.get(f"{M}/get-auth-status", params={"state": state}, headers=AUTH)).json() == {
        "status": "ok"
    }
    late = await http.post(
        f"{M}/oauth-callback", json={"state": state, "code": code_for("u@x.com")}, headers=AUTH
    )
    assert (late.status_code, late.json()["error"]) == (409, "oauth flow is not pending")
    home.state.clock.advance(61)
    gone = (await http.get(f"{M}/get-auth-status", params={"state": state}, headers=AUTH)).json()
    assert gone == {"status": "error", "error": "unknown or expired state"}


async def test_pending_logins_time_out_after_20_minutes_and_errors_stay(
    home: HomeSimServer, http: httpx.AsyncClient
) -> None:
    state = (await http.get(f"{M}/anthropic-auth-url", headers=AUTH)).json()["state"]
    home.state.clock.advance(19 * 60)
    assert (await http.get(f"{M}/get-auth-status", params={"state": state}, headers=AUTH)).json() == {
        "status": "wait"
    }
    home.state.clock.advance(61)
    timed_out = {"status": "error", "error": "OAuth flow timed out"}
    assert (await http.get(f"{M}/get-auth-status", params={"state": state}, headers=AUTH)).json() == timed_out
    home.state.clock.advance(24 * 3600)
    assert (await http.get(f"{M}/get-auth-status", params={"state": state}, headers=AUTH)).json() == timed_out
    late = await http.post(f"{M}/oauth-callback", json={"state": state, "code": "c"}, headers=AUTH)
    assert late.status_code == 409


async def test_a_refused_exchange_reads_as_home_words_it(
    home: HomeSimServer, http: httpx.AsyncClient
) -> None:
    state = (await http.get(f"{M}/antigravity-auth-url", headers=AUTH)).json()["state"]
    await http.post(f"{M}/oauth-callback", json={"state": state, "code": "bad"}, headers=AUTH)
    home.state.clock.advance(1)
    body = (await http.get(f"{M}/get-auth-status", params={"state": state}, headers=AUTH)).json()
    assert body == {"status": "error", "error": "Failed to exchange token"}
    assert (await http.get(f"{M}/auth-files", headers=AUTH)).json()["files"] == []


# ------------------------------------------------------------------------- §3.8, §7 tools


async def test_api_call_runs_with_the_rows_token(home: HomeSimServer, http: httpx.AsyncClient) -> None:
    row = home.state.add_credential("codex", "u@x.com")
    call = {"auth_index": row.id, "method": "GET", "url": "https://chatgpt.com/backend-api/wham/usage",
            "header": {"Authorization": "Bearer $TOKEN$"}, "proxy_url": "http://ignored"}  # fmt: skip
    assert (await http.post(f"{M}/api-call", json=call, headers=AUTH)).json()["status_code"] == 200
    home.state.revoke(row)
    assert (await http.post(f"{M}/api-call", json=call, headers=AUTH)).json()["status_code"] == 401
    unknown = await http.post(f"{M}/api-call", json={**call, "auth_index": "nope"}, headers=AUTH)
    assert (unknown.status_code, unknown.json()) == (400, {"error": "auth not found"})


async def test_capabilities_name_the_home_version(http: httpx.AsyncClient) -> None:
    body = (await http.get(f"{M}/capabilities", headers=AUTH)).json()
    assert body["server_info"]["home_version"] == "v1.0.67-sim" and body["capabilities"]["request_events"]


# --------------------------------------------------------------------------------- RESP, node


async def resp(url: str, payload: bytes) -> bytes:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(payload)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(200), 2)
    writer.close()
    return data


async def test_home_resp_wants_mtls_and_never_counts_toward_the_ban(
    home: HomeSimServer, http: httpx.AsyncClient
) -> None:
    for _ in range(6):
        assert (
            await resp(home.base_url, b"*2\r\n$4\r\nAUTH\r\n$5\r\nwrong\r\n")
            == b"-ERR RESP AUTH disabled; use mTLS\r\n"
        )
        assert await resp(home.base_url, b"*1\r\n$4\r\nPING\r\n") == b"-NOAUTH Authentication required.\r\n"
    assert (await http.get(f"{M}/auth-files", headers=AUTH)).status_code == 200


async def test_a_node_has_no_management_and_refuses_resp() -> None:
    async with HomeSimServer(KEY, node=True) as node, httpx.AsyncClient(base_url=node.base_url) as http:
        answer = await http.get(f"{M}/auth-files", headers=AUTH)
        callback = await http.post(f"{M}/oauth-callback", json={})
        assert (
            await resp(node.base_url, b"*1\r\n$4\r\nPING\r\n")
            == b"-ERR redis usage output disabled in home mode\r\n"
        )
    for a in (answer, callback):
        assert a.status_code == 404 and a.content == b""
        assert not [h for h in a.headers if h.lower().startswith("x-cpa")]


async def test_request_events_query_rules(home: HomeSimServer, http: httpx.AsyncClient) -> None:
    # usage_observability.go:854-892, 971-1030: default 50, clamp 200, 400s in the DB-handler envelope.
    row = home.state.add_credential("codex", "u@x.com")
    for _ in range(60):
        home.state.record_result(row, 500, "boom")
    assert (await http.get(f"{M}/request-events", headers=AUTH)).json()["limit"] == 50
    bad = {"limit": "0", "sort": "newest", "from": "yesterday", "offset": "-1"}
    codes = {
        "limit": "invalid_limit",
        "sort": "invalid_sort",
        "from": "invalid_time_range",
        "offset": "invalid_offset",
    }
    for key, value in bad.items():
        answer = await http.get(f"{M}/request-events", params={key: value}, headers=AUTH)
        assert answer.status_code == 400 and answer.json()["error"] == codes[key]
    future = {"status": "error", "from": str(int(home.state.now().timestamp()) + 10)}
    assert (await http.get(f"{M}/request-events", params=future, headers=AUTH)).json()["total"] == 0


async def test_xai_login_is_stored_under_homes_xai_file_name(
    home: HomeSimServer, http: httpx.AsyncClient
) -> None:
    # internal/auth/xai/token.go:10-43 CredentialFileName (a callback flow on Home, §3.9).
    await login(http, home, "xai", "grok user@x.com")
    files = (await http.get(f"{M}/auth-files", headers=AUTH)).json()["files"]
    assert [(f["name"], f["type"]) for f in files] == [("xai-grok-user@x.com.json", "xai")]


async def test_kimi_completes_without_a_callback_and_refuses_one(
    home: HomeSimServer, http: httpx.AsyncClient
) -> None:
    # oauth_login.go:370 (kimi rejected on the callback), :468-511 (Home polls the device code itself).
    state = (await http.get(f"{M}/kimi-auth-url", headers=AUTH)).json()["state"]
    refused = await http.post(
        f"{M}/oauth-callback", json={"state": state, "code": "x", "provider": "kimi"}, headers=AUTH
    )
    assert (refused.status_code, refused.json()["error"]) == (400, "unsupported provider")
    row = home.state.approve_device(state, "k@x.com")
    assert (await http.get(f"{M}/get-auth-status", params={"state": state}, headers=AUTH)).json() == {
        "status": "ok"
    }
    assert row.name.startswith("kimi-") and row.provider == "kimi"
