"""OAuth flows, session lifetimes, the callback contract and re-login semantics (§4, §11.7-9, §12).

OAuth login flows, session lifetimes, the callback contract and re-login semantics
(contract §4, §11.7-§11.9, §12 watcher lag).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from reauthd.sim import SimServer


async def start(client: httpx.AsyncClient, provider: str) -> dict[str, Any]:
    r = await client.get(f"/{provider}-auth-url")
    assert r.status_code == 200
    return dict(r.json())


async def status(client: httpx.AsyncClient, state: str) -> dict[str, Any]:
    r = await client.get("/get-auth-status", params={"state": state})
    return dict(r.json())


async def browser_login(anon: httpx.AsyncClient, url: str, **form: str) -> str:
    """What a person does at the fake provider page; returns the localhost URL the browser lands on."""
    page = await anon.get(url)
    assert page.status_code == 200
    assert "<form" in page.text
    assert "<script" not in page.text
    q = parse_qs(urlsplit(url).query)
    data = {"state": q["state"][0], "redirect_uri": q["redirect_uri"][0], "action": "allow", **form}
    r = await anon.post(urlsplit(url).path, data=data)
    assert r.status_code == 302
    return str(r.headers["location"])


@pytest.mark.parametrize(
    ("provider", "redirect"),
    [
        ("codex", "http://localhost:1455/auth/callback"),
        ("anthropic", "http://localhost:54545/callback"),
        ("antigravity", "http://localhost:51121/oauth-callback"),
    ],
)
async def test_callback_auth_urls(
    sim: SimServer, client: httpx.AsyncClient, provider: str, redirect: str
) -> None:
    """§4.1/§11.7: 32-hex states with no prefix; the URL carries the real localhost redirect_uri."""
    body = await start(client, provider)
    assert set(body) == {"status", "url", "state"}
    assert re.fullmatch(r"[0-9a-f]{32}", body["state"])
    q = parse_qs(urlsplit(body["url"]).query)
    assert q["redirect_uri"] == [redirect]
    assert q["state"] == [body["state"]]
    assert body["url"].startswith(f"{sim.base_url}/_sim/provider/{provider}/authorize?")
    assert await status(client, body["state"]) == {"status": "wait"}


CPA_AUTHORIZE_QUERIES = {
    # internal/auth/claude/anthropic_auth.go GenerateAuthURL
    "anthropic": {
        "code": "true",
        "client_id": "9d1c250a-e61b-44d9-88ed-5944d1962f5e",
        "response_type": "code",
        "redirect_uri": "http://localhost:54545/callback",
        "scope": "user:profile user:inference user:sessions:claude_code user:mcp_servers user:file_upload",
        "code_challenge": None,
        "code_challenge_method": "S256",
        "state": None,
    },
    # internal/auth/codex/openai_auth.go GenerateAuthURL
    "codex": {
        "client_id": "app_EMoamEEZ73f0CkXaXp7hrann",
        "response_type": "code",
        "redirect_uri": "http://localhost:1455/auth/callback",
        "scope": "openid email profile offline_access",
        "state": None,
        "code_challenge": None,
        "code_challenge_method": "S256",
        "prompt": "login",
        "id_token_add_organizations": "true",
        "codex_cli_simplified_flow": "true",
    },
    # internal/auth/antigravity/auth.go BuildAuthURL, constants.go ClientID/Scopes
    "antigravity": {
        "access_type": "offline",
        "client_id": "1071006060591-tmhssin2h21lcre235vtolojh4g403ep.apps.googleusercontent.com",
        "prompt": "consent",
        "redirect_uri": "http://localhost:51121/oauth-callback",
        "response_type": "code",
        "scope": "https://www.googleapis.com/auth/cloud-platform https://www.googleapis.com/auth/userinfo.email"
        " https://www.googleapis.com/auth/userinfo.profile https://www.googleapis.com/auth/cclog"
        " https://www.googleapis.com/auth/experimentsandconfigs",
        "state": None,
    },
}


@pytest.mark.parametrize("provider", sorted(CPA_AUTHORIZE_QUERIES))
async def test_authorize_url_query_is_cpas(client: httpx.AsyncClient, provider: str) -> None:
    """The query of each authorize URL is exactly what CPA builds: the same parameters and values (Claude's
    `code=true` included), keys sorted and escaped as Go's url.Values.Encode does."""
    body = await start(client, provider)
    raw = urlsplit(body["url"]).query
    pairs = [p.split("=", 1) for p in raw.split("&")]
    keys = [k for k, _ in pairs]
    assert keys == sorted(CPA_AUTHORIZE_QUERIES[provider])
    q = {k: v[0] for k, v in parse_qs(raw).items()}
    for key, want in CPA_AUTHORIZE_QUERIES[provider].items():
        if want is not None:
            assert q[key] == want, key
    assert q["state"] == body["state"]
    if "code_challenge" in q:
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", q["code_challenge"])
    # Go's QueryEscape: a space is "+", ":" and "/" are escaped
    assert "%20" not in raw and ":" not in raw and "/" not in raw


@pytest.mark.parametrize(("provider", "prefix", "expires"), [("kimi", "kmi-", None), ("xai", "xai-", 1800)])
async def test_device_auth_urls(
    client: httpx.AsyncClient, provider: str, prefix: str, expires: int | None
) -> None:
    """§4.1: device flows carry `flow`, `user_code` and a `kmi-`/`xai-<nanos>` state; xAI always sends
    `expires_in` (1800 when the upstream gives none), Kimi only when its upstream gave one."""
    body = await start(client, provider)
    assert re.fullmatch(re.escape(prefix) + r"\d{19}", body["state"])
    assert (body["flow"], body.get("expires_in")) == ("device", expires)
    assert ("expires_in" in body) is (expires is not None)
    assert re.fullmatch(r"[0-9A-F]{4}-[0-9A-F]{4}", body["user_code"])


@pytest.mark.parametrize(("told", "expired_after"), [(None, 900), (600, 600), (1800, 900)])
async def test_kimi_expires_in_only_when_the_upstream_gives_it(
    sim: SimServer, client: httpx.AsyncClient, told: int | None, expired_after: int
) -> None:
    """§4.1/§4.2: Kimi's answer has `expires_in` only when the upstream gave one; CPA polls at most 15 min."""
    sim.state.sessions.kimi_expires_in = told
    body = await start(client, "kimi")
    assert body.get("expires_in") == told
    sim.state.advance(expired_after - 5)
    assert await status(client, body["state"]) == {"status": "wait"}
    sim.state.advance(10)
    answer = await status(client, body["state"])
    assert answer["status"] == "error" and "expired" in answer["error"]


@pytest.mark.parametrize(
    ("provider", "port"), [("codex", 1455), ("anthropic", 54545), ("antigravity", 51121)]
)
async def test_is_webui_forwarder_port_taken(
    sim: SimServer, client: httpx.AsyncClient, provider: str, port: int
) -> None:
    """§4.1: with `is_webui`, a forwarder port CPA cannot listen on gives 500 `failed to start callback
    server`; the session is already registered and stays pending (no waiter, so no 5-minute timeout)."""
    sim.state.sessions.forwarder_ports_in_use.add(port)
    r = await client.get(f"/{provider}-auth-url", params={"is_webui": "TRUE"})
    assert (r.status_code, r.json()) == (500, {"error": "failed to start callback server"})
    assert r.headers.get("x-cpa-version")  # CPA's own answer, past the key middleware
    [left] = sim.state.sessions.sessions.values()
    assert left.provider == provider
    sim.state.advance(6 * 60)
    assert await status(client, left.state) == {"status": "wait"}
    # Without is_webui (or with a false value) no forwarder is started, so the port does not matter.
    for params in ({}, {"is_webui": "0"}):
        assert (await client.get(f"/{provider}-auth-url", params=params)).status_code == 200
    sim.state.sessions.forwarder_ports_in_use.clear()
    assert (await client.get(f"/{provider}-auth-url", params={"is_webui": "1"})).status_code == 200


async def test_one_is_webui_forwarder_per_port(sim: SimServer, client: httpx.AsyncClient) -> None:
    """§13, auth_files_oauth_callback.go startCallbackForwarder: a second is_webui login of the same
    provider stops the first one's forwarder and takes the port; the first login can still be completed
    by pasting (oauth-callback). The forwarder stops when its own login ends."""
    first = (await client.get("/anthropic-auth-url", params={"is_webui": "1"})).json()
    assert sim.state.sessions.forwarders == {54545: first["state"]}
    second = (await client.get("/anthropic-auth-url", params={"is_webui": "1"})).json()
    assert sim.state.sessions.forwarders == {54545: second["state"]}
    await login_with(sim, client, first["state"])
    assert sim.state.sessions.forwarders == {54545: second["state"]}  # not the first's to stop
    await login_with(sim, client, second["state"])
    assert sim.state.sessions.forwarders == {}


async def login_with(sim: SimServer, client: httpx.AsyncClient, st: str) -> None:
    await client.post("/oauth-callback", json={"redirect_url": sim.state.provider_login(st)})
    sim.state.advance(0.6)
    assert await status(client, st) == {"status": "ok"}


async def test_is_webui_is_ignored_for_device_flows(sim: SimServer, client: httpx.AsyncClient) -> None:
    """§4.1: `is_webui` applies to anthropic, codex and antigravity only."""
    sim.state.sessions.forwarder_ports_in_use.update({1455, 54545, 51121})
    for provider in ("kimi", "xai"):
        assert (await client.get(f"/{provider}-auth-url", params={"is_webui": "true"})).status_code == 200


async def test_codex_full_flow_with_watcher_lag(
    sim: SimServer, client: httpx.AsyncClient, anon: httpx.AsyncClient
) -> None:
    """§4.3 recipe + §12: provider page → 302 to localhost; redirect_url POST; ok; file appears ~1 s later."""
    sim.state.set_next_login("codex", email="new@x.com", plan="pro", account_id="acc-9")
    body = await start(client, "codex")
    landed = await browser_login(anon, body["url"], email="new@x.com", plan="pro", account_id="acc-9")
    assert landed.startswith("http://localhost:1455/auth/callback?code=")
    r = await anon.post("/v0/management/oauth-callback", json={"provider": "codex", "redirect_url": landed})
    assert r.json() == {"status": "ok"}
    assert await status(client, body["state"]) == {"status": "wait"}
    sim.state.advance(0.6)
    assert await status(client, body["state"]) == {"status": "ok"}
    # runtimeAuthSyncHook (sdk/cliproxy/builder.go) registered the raw record at once: no status yet
    [raw] = (await client.get("/auth-files")).json()["files"]
    assert (raw["status"], raw["status_message"], "last_refresh" in raw) == ("", "", False)
    sim.state.advance(1.0)
    files = (await client.get("/auth-files")).json()["files"]
    assert [f["name"] for f in files] == [
        "codex-" + __import__("hashlib").sha256(b"acc-9").hexdigest()[:8] + "-new@x.com-pro.json"
    ]
    assert (files[0]["status"], files[0]["status_message"]) == ("active", "")


async def test_completed_state_kept_60s_then_unknown(sim: SimServer, client: httpx.AsyncClient) -> None:
    """§4.2/§11.7: a completed state answers ok for 60 s, then "unknown or expired state"."""
    body = await start(client, "anthropic")
    await client.post("/oauth-callback", json={"redirect_url": sim.state.provider_login(body["state"])})
    sim.state.advance(1)
    assert await status(client, body["state"]) == {"status": "ok"}
    sim.state.advance(58)
    assert await status(client, body["state"]) == {"status": "ok"}
    sim.state.advance(2)
    assert await status(client, body["state"]) == {"status": "error", "error": "unknown or expired state"}


@pytest.mark.parametrize(
    ("provider", "message"),
    [
        ("codex", "Timeout waiting for OAuth callback"),
        ("anthropic", "Timeout waiting for OAuth callback"),
        ("antigravity", "OAuth flow timed out"),
    ],
)
async def test_callback_wait_times_out_after_5_min(
    sim: SimServer, client: httpx.AsyncClient, provider: str, message: str
) -> None:
    """§4.2: the waiter gives up after 5 min; the error is kept 30 min, then the state is unknown."""
    body = await start(client, provider)
    sim.state.advance(299)
    assert await status(client, body["state"]) == {"status": "wait"}
    sim.state.advance(2)
    assert await status(client, body["state"]) == {"status": "error", "error": message}
    r = await client.post("/oauth-callback", json={"state": body["state"], "code": "c"})
    assert (r.status_code, r.json()) == (409, {"status": "error", "error": message})
    sim.state.advance(29 * 60)
    assert (await status(client, body["state"]))["error"] == message
    sim.state.advance(61)
    assert await status(client, body["state"]) == {"status": "error", "error": "unknown or expired state"}


async def test_get_auth_status_edge_cases(client: httpx.AsyncClient) -> None:
    """§4.2 table: missing state → ok (sic); malformed → 400; unknown → error."""
    assert (await client.get("/get-auth-status")).json() == {"status": "ok"}
    r = await client.get("/get-auth-status", params={"state": "a/b"})
    assert (r.status_code, r.json()) == (400, {"status": "error", "error": "invalid state"})
    assert await status(client, "0" * 32) == {"status": "error", "error": "unknown or expired state"}


async def test_cancel_session(sim: SimServer, client: httpx.AsyncClient) -> None:
    """§4.2 DELETE /oauth-session: only pending sessions; a cancelled flow never writes a file."""
    body = await start(client, "codex")
    url = sim.state.provider_login(body["state"])
    assert (await client.delete("/oauth-session")).json() == {"status": "error", "error": "missing state"}
    r = await client.delete("/oauth-session", params={"state": body["state"]})
    assert r.json() == {"status": "ok", "cancelled": True}
    assert (await client.delete("/oauth-session", params={"state": body["state"]})).json()[
        "cancelled"
    ] is False
    r = await client.post("/oauth-callback", json={"redirect_url": url})
    assert (r.status_code, r.json()["error"]) == (404, "unknown or expired state")
    sim.state.advance(5)
    assert sim.state.disk == {}


async def test_callback_error_precedence(
    sim: SimServer, client: httpx.AsyncClient, anon: httpx.AsyncClient
) -> None:
    """§4.3/§11.8: unauthenticated; exact order and codes of the checks; all errors carry status:error."""
    pending = (await start(client, "codex"))["state"]
    failed = (await start(client, "antigravity"))["state"]
    done = (await start(client, "anthropic"))["state"]
    await anon.post(
        "/v0/management/oauth-callback",
        json={"state": done, "code": "x", "redirect_url": sim.state.provider_login(done)},
    )  # explicit code wins: exchange fails
    sim.state.advance(1)
    assert (await status(client, done))["status"] == "error"
    done = (await start(client, "anthropic"))["state"]
    await anon.post("/v0/management/oauth-callback", json={"redirect_url": sim.state.provider_login(done)})
    await anon.post("/v0/management/oauth-callback", json={"state": failed, "error": "access_denied"})
    sim.state.advance(1)
    assert await status(client, done) == {"status": "ok"}
    assert await status(client, failed) == {"status": "error", "error": "Authentication failed"}
    cases: list[tuple[Any, int, str]] = [
        ("not json", 400, "invalid body"),
        ({"redirect_url": "http://[::1"}, 400, "invalid redirect_url"),
        ({"redirect_url": "http://localhost:1455/a%zz?state=x"}, 400, "invalid redirect_url"),
        ({"redirect_url": "http://localhost:1455/cb?code=a b"}, 400, "state is required"),  # spaces parse
        ({"code": "c"}, 400, "state is required"),
        ({"state": "bad/state", "code": "c"}, 400, "invalid state"),
        ({"state": pending}, 400, "code or error is required"),
        ({"state": "f" * 32, "code": "c"}, 404, "unknown or expired state"),
        ({"state": done, "code": "c", "provider": "???"}, 409, "oauth flow is already completed"),
        ({"state": failed, "code": "c", "provider": "no such!"}, 400, "unsupported provider"),
        ({"state": failed, "code": "c", "provider": "codex"}, 409, "Authentication failed"),
        ({"state": pending, "code": "c", "provider": "claude"}, 400, "provider does not match state"),
        (
            {
                "state": pending,
                "code": "c",
                "provider": "OpenAI",
                "redirect_url": "http://localhost:1455/auth/callback?state=other&code=zzz",
            },
            200,
            "",
        ),
    ]
    for body, code, error in cases:
        if isinstance(body, str):
            r = await anon.post("/v0/management/oauth-callback", content=body)
        else:
            r = await anon.post("/v0/management/oauth-callback", json=body)
        expected = {"status": "ok"} if code == 200 else {"status": "error", "error": error}
        assert (r.status_code, r.json()) == (code, expected), body
    r = await anon.get("/v0/management/oauth-callback", params={"state": pending, "error": "denied"})
    assert r.json() == {"status": "ok"}


async def test_main_port_callback_always_200(
    sim: SimServer, client: httpx.AsyncClient, anon: httpx.AsyncClient
) -> None:
    """§4.3: /codex/callback on the main port writes the file when pending and always answers 200 HTML."""
    body = await start(client, "codex")
    landed = sim.state.provider_login(body["state"], email="cb@x.com", plan="plus", account_id="a1")
    r = await anon.get("/codex/callback?" + urlsplit(landed).query)
    assert r.status_code == 200
    assert "Authentication successful!" in r.text
    assert (await anon.get("/codex/callback?state=nope&code=x")).status_code == 200
    sim.state.advance(2)
    assert await status(client, body["state"]) == {"status": "ok"}


async def test_exchange_failure(sim: SimServer, client: httpx.AsyncClient) -> None:
    """§4.2 codex error message with cause when the code exchange fails."""
    sim.state.set_next_login("codex", email="x@x.com", exchange_fails=True)
    body = await start(client, "codex")
    await client.post("/oauth-callback", json={"redirect_url": sim.state.provider_login(body["state"])})
    sim.state.advance(1)
    result = await status(client, body["state"])
    assert result["status"] == "error"
    assert result["error"].startswith("Failed to exchange authorization code for tokens: ")


async def login(sim: SimServer, client: httpx.AsyncClient, provider: str, **ident: str) -> str:
    body = await start(client, provider)
    await client.post(
        "/oauth-callback", json={"redirect_url": sim.state.provider_login(body["state"], **ident)}
    )
    sim.state.advance(0.6)
    assert await status(client, body["state"]) == {"status": "ok"}
    return str(body["state"])


async def test_same_name_relogin_keeps_index_and_user_keys(sim: SimServer, client: httpx.AsyncClient) -> None:
    """§4.4/§11.9: overwrite in place, same auth_index, non-token user keys kept, disabled forced false,
    error state reset once the watcher reloaded."""
    old = sim.state.add_credential(
        "claude",
        email="same@x.com",
        note="keep me",
        prefix="p1",
        disabled=True,
        extra={"proxy_url": "socks5://h:1", "weight": 2},
    )
    old_token, old_index = old.access_token, old.auth_index
    sim.state.revoke(old.name, "claude_revoked", live=True)
    await login(sim, client, "anthropic", email="same@x.com")
    raw = (await client.get("/auth-files/download", params={"name": old.name})).json()
    assert (raw["note"], raw["prefix"], raw["proxy_url"], raw["weight"], raw["disabled"]) == (
        "keep me",
        "p1",
        "socks5://h:1",
        2,
        False,
    )
    assert raw["access_token"] != old_token
    sim.state.advance(1.0)
    files = (await client.get("/auth-files")).json()["files"]
    assert len(files) == 1
    assert (files[0]["auth_index"], files[0]["status"], files[0]["status_message"], files[0]["disabled"]) == (
        old_index,
        "active",
        "",
        False,
    )


async def test_relogin_registers_at_once_and_keeps_last_refresh(
    sim: SimServer, client: httpx.AsyncClient
) -> None:
    """§13: saveTokenRecord → runtimeAuthSyncHook registers the new tokens at once (status ""), and the
    watcher's reload (status active, empty message, the new tokens) copies the old LastRefreshedAt
    (prepareCoreAuthForModelRegistration): an in-place re-login does not move `last_refresh`."""
    old = sim.state.add_credential("claude", email="trap@x.com")
    assert "last_refresh" not in (await client.get("/auth-files")).json()["files"][0]
    sim.state.auto_refresh(old.name)
    refreshed = (await client.get("/auth-files")).json()["files"][0]["last_refresh"]
    sim.state.advance(65)
    sim.state.revoke(old.name, "claude_revoked", live=True)
    await login(sim, client, "anthropic", email="trap@x.com")
    entry = (await client.get("/auth-files")).json()["files"][0]
    assert (entry["status"], entry["last_refresh"]) == ("", refreshed)
    sim.state.advance(2)
    entry = (await client.get("/auth-files")).json()["files"][0]
    assert (entry["status"], entry["status_message"], entry["last_refresh"]) == ("active", "", refreshed)
    assert sim.state.auths[old.name].access_token == sim.state.disk[old.name].content["access_token"]


@pytest.mark.parametrize(
    ("provider", "file_type", "before_reload"),
    [("codex", "codex", 400), ("anthropic", "claude", 400), ("antigravity", "antigravity", 200)],
)
async def test_api_call_before_and_after_the_reload(
    sim: SimServer, client: httpx.AsyncClient, provider: str, file_type: str, before_reload: int
) -> None:
    """§13: the raw record runtimeAuthSyncHook registers at once has, for providers that save through a
    TokenStorage, no token in its Metadata (auth_files_provider_oauth.go builds it with the account keys
    only; MergeExistingAuthMetadata never copies token keys): `$TOKEN$` finds none (400) until the
    watcher reloads the file. Antigravity's record is the whole token map. After the reload: the new token."""
    old = sim.state.add_credential(file_type, email="lag@x.com", plan="plus", account_id="lag")
    old_token = old.access_token
    sim.state.revoke(old.name)
    probe = {
        "auth_index": old.auth_index,
        "method": "GET",
        "url": "https://chatgpt.com/backend-api/wham/usage",
    }
    probe["header"] = {"Authorization": "Bearer $TOKEN$"}
    await login(sim, client, provider, email="lag@x.com", plan="plus", account_id="lag")
    on_disk = sim.state.disk[old.name].content["access_token"]
    assert on_disk != old_token
    in_memory = sim.state.auths[old.name].access_token
    if before_reload == 400:
        assert in_memory == ""
        r = await client.post("/api-call", json=probe)
        assert (r.status_code, r.json()) == (400, {"error": "auth token not found"})
    else:
        assert in_memory == on_disk
    sim.state.advance(1.0)
    assert sim.state.auths[old.name].access_token == on_disk


async def test_legacy_codex_name_gives_new_file(sim: SimServer, client: httpx.AsyncClient) -> None:
    """§4.4: a legacy-named codex file is not overwritten; the re-login writes the hashed name."""
    legacy = sim.state.add_credential(
        "codex", email="leg@x.com", plan="plus", account_id="A", name="codex-leg@x.com-plus.json"
    )
    sim.state.revoke(legacy.name, live=True)
    await login(sim, client, "codex", email="leg@x.com", plan="plus", account_id="A")
    sim.state.advance(1.0)
    files = {f["name"]: f for f in (await client.get("/auth-files")).json()["files"]}
    hashed = f"codex-{hashlib.sha256(b'A').hexdigest()[:8]}-leg@x.com-plus.json"
    assert set(files) == {"codex-leg@x.com-plus.json", hashed}
    assert files["codex-leg@x.com-plus.json"]["status"] == "error"
    assert files[hashed]["status"] == "active"


async def test_kimi_device_flow_new_file_each_login(
    sim: SimServer, client: httpx.AsyncClient, anon: httpx.AsyncClient
) -> None:
    """§4.4: every kimi login writes a new `kimi-<unixms>.json`; approval completes at the next poll."""
    sim.state.add_credential("kimi", name="kimi-1700000000000.json")
    body = await start(client, "kimi")
    page = await anon.get(body["url"])
    assert body["user_code"] in page.text
    assert "Approve" in page.text
    r = await anon.post(
        urlsplit(body["url"]).path, data={"user_code": body["user_code"], "action": "approve"}
    )
    assert r.status_code == 200
    assert await status(client, body["state"]) == {"status": "wait"}
    sim.state.advance(1.1)
    assert await status(client, body["state"]) == {"status": "ok"}
    sim.state.advance(1.1)
    names = [f["name"] for f in (await client.get("/auth-files")).json()["files"]]
    assert len(names) == 2
    assert all(re.fullmatch(r"kimi-\d{13}\.json", n) for n in names)


async def test_device_flows_expire(sim: SimServer, client: httpx.AsyncClient) -> None:
    """§4.2: device flows poll until the code expires (kimi 15 min) → `Authentication failed: <cause>`;
    xAI's 30-min code outlives the 30-min pending TTL, so its state is simply gone."""
    kimi, xai = await start(client, "kimi"), await start(client, "xai")
    sim.state.advance(901)
    result = await status(client, kimi["state"])
    assert result["status"] == "error"
    assert result["error"].startswith("Authentication failed: ")
    assert await status(client, xai["state"]) == {"status": "wait"}
    sim.state.advance(900)
    assert await status(client, xai["state"]) == {"status": "error", "error": "unknown or expired state"}


async def test_concurrent_sessions_same_provider(sim: SimServer, client: httpx.AsyncClient) -> None:
    """§4.2: several concurrent sessions, also for the same provider."""
    a, b = await start(client, "codex"), await start(client, "codex")
    await client.post("/oauth-callback", json={"redirect_url": sim.state.provider_login(b["state"])})
    sim.state.advance(1)
    assert await status(client, a["state"]) == {"status": "wait"}
    assert await status(client, b["state"]) == {"status": "ok"}


async def test_plugin_provider_route() -> None:
    """§4.1: configured plugin providers get `<id>-auth-url`; others stay 404."""
    async with (
        SimServer("k", plugin_providers=("gemini-cli",)) as sim,
        httpx.AsyncClient(
            base_url=f"{sim.base_url}/v0/management", headers={"Authorization": "Bearer k"}
        ) as c,
    ):
        r = await c.get("/gemini-cli-auth-url")
        assert r.status_code == 200
        assert set(r.json()) == {"status", "url", "state"}
        # ServePluginAuthURL hands the plugin managementCallbackURL("/v0/management/oauth-callback")
        q = parse_qs(urlsplit(r.json()["url"]).query)
        port = urlsplit(sim.base_url).port
        assert q["redirect_uri"] == [f"http://127.0.0.1:{port}/v0/management/oauth-callback"]
        assert q["state"] == [r.json()["state"]]
        assert (await c.get("/qwen-auth-url")).status_code == 404


async def test_callback_for_device_flow_is_accepted_and_ignored(
    sim: SimServer, client: httpx.AsyncClient
) -> None:
    """§4.3: a device-flow state passes every check (plugin-style provider id) and gets ok; nothing reads it."""
    body = await start(client, "kimi")
    r = await client.post("/oauth-callback", json={"state": body["state"], "code": "c"})
    assert r.json() == {"status": "ok"}
    sim.state.advance(2)
    assert await status(client, body["state"]) == {"status": "wait"}


async def test_browserless_login_over_control_http(
    sim: SimServer, client: httpx.AsyncClient, anon: httpx.AsyncClient
) -> None:
    """Control API: sign in or approve over HTTP (for scripts); the result is the real localhost URL."""
    body = await start(client, "antigravity")
    r = await anon.post(f"/_sim/oauth/{body['state']}/login", json={"email": "ag@x.com"})
    url = r.json()["callback_url"]
    assert url.startswith("http://localhost:51121/oauth-callback?code=")
    await client.post("/oauth-callback", json={"provider": "anti-gravity", "redirect_url": url})
    device = await start(client, "xai")
    assert (await anon.post(f"/_sim/oauth/{device['state']}/approve", json={"email": "x@x.com"})).json()[
        "approved"
    ] is True
    sim.state.advance(2)
    assert await status(client, body["state"]) == {"status": "ok"}
    assert await status(client, device["state"]) == {"status": "ok"}
    sim.state.advance(1.1)
    names = sorted(f["name"] for f in (await client.get("/auth-files")).json()["files"])
    assert names == ["antigravity-ag@x.com.json", "xai-x@x.com.json"]
    assert "routes" in (await anon.get("/_sim/")).json()
