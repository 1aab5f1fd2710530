"""`last_refresh` as CPA's runtime `LastRefreshedAt` (contract §13), point by point."""

from __future__ import annotations

import json
from typing import Any

import httpx

from reauthd.sim import SimServer
from reauthd.sim.clock import go_time


async def entry(client: httpx.AsyncClient, name: str) -> dict[str, Any]:
    files = (await client.get("/auth-files", params={"name": name})).json()["files"]
    return dict(files[0])


async def test_zero_on_load_even_when_the_file_has_the_key(sim: SimServer, client: httpx.AsyncClient) -> None:
    """sdk/auth/filestore.go builds every loaded auth with a zero LastRefreshedAt: the file's own
    `last_refresh` key (which logins and refreshes write) is not what the listing shows."""
    a = sim.state.add_credential("codex", email="u@x.com", plan="plus", account_id="A")
    assert "last_refresh" in sim.state.disk[a.name].content
    assert "last_refresh" not in await entry(client, a.name)


async def test_set_by_a_successful_refresh_only(sim: SimServer, client: httpx.AsyncClient) -> None:
    """conductor_refresh.go: `updated.LastRefreshedAt = now` on success; the refresh rewrites the file
    (modtime moves, the file's key too). A failed refresh moves nothing."""
    a = sim.state.add_credential("claude", email="c@x.com")
    before = await entry(client, a.name)
    sim.state.advance(10)
    sim.state.auto_refresh(a.name)
    after = await entry(client, a.name)
    assert after["last_refresh"] == go_time(sim.state.now())
    assert after["modtime"] != before["modtime"]
    assert sim.state.disk[a.name].content["last_refresh"] == sim.state.now().isoformat()
    sim.state.advance(10)
    sim.state.revoke(a.name, "claude_revoked")
    sim.state.auto_refresh(a.name)
    assert (await entry(client, a.name))["last_refresh"] == after["last_refresh"]


async def test_background_refresh_from_the_control_api(sim: SimServer, anon: httpx.AsyncClient) -> None:
    a = sim.state.add_credential("codex", email="u@x.com", plan="plus", account_id="A")
    r = await anon.post(f"/_sim/credentials/{a.name}/auto-refresh")
    assert r.status_code == 200
    assert sim.state.auths[a.name].last_refreshed_at == sim.state.now()


async def test_restart_clears_it(sim: SimServer, client: httpx.AsyncClient, anon: httpx.AsyncClient) -> None:
    a = sim.state.add_credential("claude", email="c@x.com")
    sim.state.auto_refresh(a.name)
    assert "last_refresh" in await entry(client, a.name)
    await anon.post("/_sim/restart")
    assert "last_refresh" not in await entry(client, a.name)


async def test_reload_copies_it_unless_disabled(sim: SimServer, client: httpx.AsyncClient) -> None:
    """service_auth.go prepareCoreAuthForModelRegistration copies LastRefreshedAt on a reload when neither
    the old nor the new auth is disabled; otherwise the new auth keeps the zero the file load gave it."""
    a = sim.state.add_credential("claude", email="c@x.com")
    sim.state.auto_refresh(a.name)
    kept = (await entry(client, a.name))["last_refresh"]
    sim.state.advance(30)
    content = dict(sim.state.disk[a.name].content, access_token="rewritten-by-hand")
    sim.state.write_file(a.name, content)
    sim.state.advance(2)
    e = await entry(client, a.name)
    assert (e["status"], e["last_refresh"]) == ("active", kept)
    sim.state.write_file(a.name, dict(content, disabled=True))
    sim.state.advance(2)
    assert "last_refresh" not in await entry(client, a.name)


async def test_upload_takes_the_files_key_else_keeps_the_old(
    sim: SimServer, client: httpx.AsyncClient
) -> None:
    """auth_files_crud.go: the only caller of extractLastRefreshTimestamp; without the key the existing
    auth's value is kept."""
    a = sim.state.add_credential("claude", email="c@x.com")
    sim.state.auto_refresh(a.name)
    kept = (await entry(client, a.name))["last_refresh"]
    content = {k: v for k, v in sim.state.disk[a.name].content.items() if k != "last_refresh"}
    r = await client.post("/auth-files", params={"name": a.name}, content=json.dumps(content))
    assert r.status_code == 200
    assert (await entry(client, a.name))["last_refresh"] == kept
    r = await client.post(
        "/auth-files",
        params={"name": a.name},
        content=json.dumps(dict(content, last_refresh="2026-01-02T03:04:05Z")),
    )
    assert r.status_code == 200
    assert (await entry(client, a.name))["last_refresh"].startswith("2026-01-02T03:04:05")
