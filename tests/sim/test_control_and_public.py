"""The public /v1 path, vertex import, usage queue, control API, faults, op log, runner, secrets.

The public /v1 path (prefix routing, §5 workaround, §12 Vertex), vertex import (§6), usage queue (§7),
the control API, faults, the operation log, the thread runner and secret hygiene.
"""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest

from reauthd.sim import SimServer, run_sim_in_thread
from reauthd.sim.cli import seed_demo_world
from reauthd.sim.credentials import service_account

PROXY = {"Authorization": "Bearer sim-proxy-key"}


async def test_prefix_routes_to_one_credential_and_marks(
    sim: SimServer, client: httpx.AsyncClient, anon: httpx.AsyncClient
) -> None:
    """§5 workaround: `<prefix>/<model>` reaches only that credential and runs MarkResult."""
    good = sim.state.add_credential("codex", email="g@x.com")
    bad = sim.state.add_credential("codex", email="b@x.com")
    sim.state.revoke(bad.name, "token_invalidated")
    await client.patch("/auth-files/fields", json={"name": bad.name, "prefix": "verify1"})
    # §13: the prefix routes only once the watcher reloaded the file the PATCH rewrote; until then the
    # model is unroutable: 400 model_not_found (handlers_routing.go, since 2026-08-06; 502 before)
    early = await anon.post("/v1/chat/completions", headers=PROXY, json={"model": "verify1/gpt-5"})
    assert early.status_code == 400
    assert early.json() == {
        "error": {
            "message": "unknown provider for model verify1/gpt-5",
            "type": "invalid_request_error",
            "code": "model_not_found",
            "param": "model",
        }
    }
    sim.state.advance(sim.state.settings.watcher_delay + 0.1)
    assert (await anon.get("/v1/models")).status_code == 401
    assert (await anon.get("/v1/models", headers={"Authorization": "Bearer nope"})).status_code == 401
    ids = [m["id"] for m in (await anon.get("/v1/models", headers=PROXY)).json()["data"]]
    assert "verify1/gpt-5" in ids
    assert "gpt-5" in ids
    r = await anon.post(
        "/v1/chat/completions", headers=PROXY, json={"model": "verify1/gpt-5", "messages": []}
    )
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "auth_unavailable"
    r = await anon.post("/v1/chat/completions", headers=PROXY, json={"model": "gpt-5", "messages": []})
    assert r.status_code == 200
    assert good.success == 1
    assert bad.status == "error"


async def test_example_api_keys_disable_the_proxy_api() -> None:
    """server_middleware.go exampleAPIKeySafeModeMiddleware: while api-keys holds a template key
    (safemode/example_api_keys.go: your-api-key-1..3) every /v1 route answers 403 before any key check."""
    async with (
        SimServer("k", proxy_api_keys=("your-api-key-1", "real-key")) as sim,
        httpx.AsyncClient(base_url=sim.base_url) as anon,
    ):
        for headers in ({"Authorization": "Bearer real-key"}, {}):
            r = await anon.post("/v1/chat/completions", headers=headers, json={"model": "gpt-5"})
            assert r.status_code == 403
            assert r.headers["x-cpa-safe-mode"] == "example-api-key"
            assert r.json()["error"] == "unsafe_example_api_key"
        assert (await anon.get("/v1/models", headers={"Authorization": "Bearer real-key"})).status_code == 403


async def test_vertex_import_and_verification(
    sim: SimServer, client: httpx.AsyncClient, anon: httpx.AsyncClient
) -> None:
    """§6 import → vertex-<project>.json via the watcher; §12: a dead key only shows through /v1."""
    sa = {
        "type": "service_account",
        "project_id": "my proj/1",
        "private_key_id": "k1",
        "private_key": "-----BEGIN PRIVATE KEY-----\\nAAA\\n-----END PRIVATE KEY-----\\n",
        "client_email": "svc@p.iam.gserviceaccount.com",
    }
    r = await client.post(
        "/vertex/import",
        files={"file": ("sa.json", json.dumps(sa).encode())},
        data={"location": "europe-west4"},
    )
    assert r.json() == {
        "status": "ok",
        "auth-file": "/sim/auths/vertex-my-proj_1.json",
        "project_id": "my proj/1",
        "email": "svc@p.iam.gserviceaccount.com",
        "location": "europe-west4",
    }
    assert (await client.get("/auth-files")).json()["files"] == []
    sim.state.advance(1.1)
    [entry] = (await client.get("/auth-files")).json()["files"]
    assert (entry["name"], entry["type"], entry["project_id"]) == (
        "vertex-my-proj_1.json",
        "vertex",
        "my proj/1",
    )
    for bad, err in [
        ({"file": ("a.json", b"[")}, "invalid json"),
        ({"file": ("a.json", b"{}")}, "invalid service account"),
        ({"x": ("a.json", b"{}")}, "file required"),
    ]:
        assert (await client.post("/vertex/import", files=bad)).json()["error"] == err
    sim.state.revoke(entry["name"], "vertex_key_deleted")
    await client.patch("/auth-files/fields", json={"name": entry["name"], "prefix": "vx"})
    sim.state.advance(1.1)  # the patch is persisted and reloaded by the watcher, resetting state (§3)
    r = await anon.post("/v1/chat/completions", headers=PROXY, json={"model": "vx/gemini-2.5-pro"})
    assert r.status_code == 500
    e = (await client.get("/auth-files")).json()["files"][0]
    assert e["status"] == "error"
    assert "invalid_grant" in e["status_message"]


async def test_vertex_reimport_keeps_the_old_files_settings(
    sim: SimServer, client: httpx.AsyncClient
) -> None:
    """vertex_import.go saves through saveTokenRecord → mergeExistingAuthFileMetadata: a re-import of the
    same project keeps the old file's keys the new record lacks; the new key, location and `disabled:
    false` (FileTokenStore.Save) win."""
    old = sim.state.add_credential(
        "vertex", project_id="proj-r", email="sa@proj-r.iam", prefix="team-v", note="finance",
        disabled=True, extra={"location": "europe-west4", "proxy_url": "http://p:1", "priority": 3},
    )  # fmt: skip
    sa = service_account("proj-r", "sa@proj-r.iam", "k-new")
    r = await client.post("/vertex/import", files={"file": ("sa.json", json.dumps(sa).encode())})
    assert r.json()["auth-file"].endswith(f"/{old.name}")
    saved = sim.state.disk[old.name].content
    kept = {k: saved.get(k) for k in ("prefix", "note", "proxy_url", "priority")}
    assert kept == {"prefix": "team-v", "note": "finance", "proxy_url": "http://p:1", "priority": 3}
    assert saved["service_account"]["private_key_id"] == "k-new"
    assert saved["location"] == "us-central1"  # the new record has one: it wins
    assert saved["disabled"] is False
    sim.state.advance(1.1)
    [entry] = (await client.get("/auth-files")).json()["files"]
    assert (entry["auth_index"], entry["note"], entry["disabled"]) == (old.auth_index, "finance", False)


async def test_usage_queue_pops(client: httpx.AsyncClient) -> None:
    """§7: always 200 [...]; a bad count is 400."""
    assert (await client.get("/usage-queue")).json() == []
    r = await client.get("/usage-queue", params={"count": "0"})
    assert (r.status_code, r.json()) == (400, {"error": "count must be a positive integer"})


async def test_usage_records_when_enabled() -> None:
    """§7: with usage statistics on, requests queue records carrying fail.status_code and body."""
    async with (
        SimServer("k", usage_statistics=True) as sim,
        httpx.AsyncClient(
            base_url=f"{sim.base_url}/v0/management", headers={"Authorization": "Bearer k"}
        ) as c,
    ):
        a = sim.state.add_credential("claude", email="u@x.com")
        sim.state.revoke(a.name, live=True)
        [record] = (await c.get("/usage-queue", params={"count": 5})).json()
        assert record["fail"]["status_code"] == 403
        assert record["auth_index"] == a.auth_index
        assert (await c.get("/usage-queue")).json() == []


async def test_operation_log_orders_and_redacts(
    sim: SimServer, client: httpx.AsyncClient, anon: httpx.AsyncClient
) -> None:
    """Control API: every management request in order, with query names and secrets removed."""
    a = sim.state.add_credential("codex", email="o@x.com")
    await client.post(
        "/api-call",
        json={
            "auth_index": a.auth_index,
            "method": "GET",
            "url": "https://chatgpt.com/backend-api/wham/usage",
            "header": {"Authorization": "Bearer $TOKEN$"},
        },
    )
    await client.patch("/auth-files/status", json={"name": a.name, "disabled": True})
    await anon.post(
        "/v0/management/oauth-callback",
        json={"redirect_url": "http://localhost:1455/auth/callback?code=SECRETCODE&state=" + "a" * 32},
    )
    log = (await anon.get("/_sim/oplog")).json()
    assert [(e["method"], e["path"], e["status"]) for e in log] == [
        ("POST", "/v0/management/api-call", 200),
        ("PATCH", "/v0/management/auth-files/status", 200),
        ("POST", "/v0/management/oauth-callback", 404),
    ]
    assert log[1]["body"] == {"name": a.name, "disabled": True}
    assert log[0]["body"]["header"] == "<redacted>"
    dumped = json.dumps(log)
    assert "SECRETCODE" not in dumped
    assert a.access_token not in dumped
    assert log[0]["seq"] < log[1]["seq"] < log[2]["seq"]
    assert (log[0]["upstream_status"], log[0]["probed_auth_indexes"]) == (200, [a.auth_index])


async def test_faults(
    sim: SimServer, client: httpx.AsyncClient, anon: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Control API: injected 5xx, malformed JSON, unknown status, missing fields, drops, outage."""
    sim.state.add_credential("kimi")
    r = await anon.post(
        "/_sim/faults", json={"kind": "status", "status": 503, "count": 2, "path": "/auth-files"}
    )
    assert r.status_code == 200
    assert (await client.get("/auth-files")).status_code == 503
    assert (await client.get("/auth-files")).status_code == 503
    assert (await client.get("/auth-files")).status_code == 200
    sim.state.inject_fault("malformed_json")
    with pytest.raises(json.JSONDecodeError):
        (await client.get("/auth-files")).json()
    sim.state.inject_fault("unknown_status")
    assert (await client.get("/auth-files")).json()["files"][0]["status"] == "ready"
    sim.state.inject_fault("missing_fields")
    assert "status" not in (await client.get("/auth-files")).json()["files"][0]
    sim.state.inject_fault("drop")
    with pytest.raises(httpx.RemoteProtocolError):
        await client.get("/auth-files")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # a clean reset, no app error
    sim.state.inject_fault("outage", count=None)
    with pytest.raises(httpx.TransportError):
        await client.get("/auth-files")
    assert (await anon.get("/_sim/counters")).status_code == 200  # control API unaffected
    assert (await anon.delete("/_sim/faults")).json() == {"status": "ok"}
    assert (await client.get("/auth-files")).status_code == 200
    sim.state.inject_fault("slow", delay=0.2)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await client.get("/auth-files")
    assert loop.time() - t0 >= 0.2


async def test_drop_after_carries_the_request_out(sim: SimServer, client: httpx.AsyncClient) -> None:
    """Control API: `drop_after` runs the operation, then resets the connection; the op log says so."""
    a = sim.state.add_credential("claude", email="d@x.com")
    sim.state.inject_fault("drop_after", path="/auth-files/status", method="PATCH")
    with pytest.raises(httpx.RemoteProtocolError):
        await client.patch("/auth-files/status", json={"name": a.name, "disabled": True})
    assert a.disabled is True
    assert (sim.state.oplog[-1]["status"], sim.state.oplog[-1]["dropped"]) == (200, True)


async def test_huge_body_fault(sim: SimServer, client: httpx.AsyncClient) -> None:
    """Control API: a 50 MB listing body."""
    sim.state.inject_fault("huge_body", path="/auth-files")
    r = await client.get("/auth-files")
    assert len(r.content) > 50 * 1024 * 1024


async def test_control_api_over_http(sim: SimServer, anon: httpx.AsyncClient) -> None:
    """Control API routes mirror the in-process operations."""
    r = await anon.post("/_sim/credentials", json={"provider": "codex", "email": "c@x.com", "plan": "team"})
    made = r.json()
    assert made["provider"] == "codex"
    assert made["name"].endswith("-c@x.com-team.json")
    assert (await anon.post(f"/_sim/credentials/{made['name']}/revoke", json={"live": True})).json()[
        "status"
    ] == "error"
    r = await anon.post(f"/_sim/credentials/{made['auth_index']}/request", json={})
    assert r.json()["status_code"] == 401
    assert (await anon.post("/_sim/credentials/none.json/revoke", json={})).status_code == 404
    assert (await anon.post("/_sim/credentials/bulk", json={"count": 30})).json()["created"] == 30
    r = await anon.post("/_sim/clock/advance", json={"seconds": 3600})
    assert r.status_code == 200
    assert (await anon.get("/_sim/clock")).json()["offset_seconds"] >= 3600
    assert (
        await anon.post("/_sim/next-login", json={"provider": "codex", "email": "n@x.com"})
    ).status_code == 200
    assert (await anon.post("/_sim/timing", json={"watcher_delay": 0.1})).status_code == 200
    assert sim.state.settings.watcher_delay == 0.1
    assert (await anon.get("/_sim/counters")).json()["credentials"] == 31
    assert (await anon.post("/_sim/reset")).json() == {"status": "ok"}
    assert sim.state.auths == {}


def test_thread_runner_for_sync_code() -> None:
    """run_sim_in_thread: a handle usable from sync code; `.call` runs on the sim's loop."""
    handle = run_sim_in_thread(management_key="k")
    try:
        handle.call(seed_demo_world)
        r = httpx.get(f"{handle.base_url}/v0/management/auth-files", headers={"Authorization": "Bearer k"})
        files = r.json()["files"]
        assert len(files) == 7
        assert sum(f["status"] == "error" for f in files) == 1
        assert handle.call(lambda s: len(s.auths)) == 7
    finally:
        handle.stop()


async def test_secrets_never_in_responses_or_errors(sim: SimServer, client: httpx.AsyncClient) -> None:
    """Canary: the management key and tokens never appear in listings, errors or the op log."""
    a = sim.state.add_credential("claude", email="canary@x.com")
    bodies = [
        (await client.get("/auth-files")).text,
        (await client.get("/auth-files", headers={"Authorization": "Bearer sim-key-wrong"})).text,
        (
            await client.post(
                "/api-call",
                json={
                    "auth_index": a.auth_index,
                    "method": "GET",
                    "url": "https://example.com",
                    "header": {"Authorization": "Bearer $TOKEN$"},
                },
            )
        ).text,
        json.dumps(sim.state.oplog),
    ]
    for text in bodies:
        assert "sim-key" not in text
        assert a.access_token not in text
        assert str(a.metadata["refresh_token"]) not in text
