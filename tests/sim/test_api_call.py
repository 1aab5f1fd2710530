"""POST /api-call: the providers' probe endpoints per token state (contract §5, §11.10, §12)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from reauthd.sim import SimServer

PROBES = {
    "codex": "https://chatgpt.com/backend-api/wham/usage",
    "claude": "https://api.anthropic.com/api/oauth/usage",
    "kimi": "https://api.kimi.com/coding/v1/usages",
    "xai": "https://api.x.ai/v1/me",
    "antigravity": "https://cloudcode-pa.googleapis.com/v1internal:fetchAvailableModels",
}


def probe(index: str, provider: str, header: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "auth_index": index,
        "method": "get",
        "url": PROBES[provider],
        "header": header or {"Authorization": "Bearer $TOKEN$"},
    }


@pytest.mark.parametrize("provider", sorted(PROBES))
async def test_valid_token_answers_200(sim: SimServer, client: httpx.AsyncClient, provider: str) -> None:
    """§5: a live token gets the provider's realistic 200 body, wrapped as status_code/header/body."""
    a = sim.state.add_credential(provider, email="v@x.com", plan="plus" if provider == "codex" else None)
    r = await client.post("/api-call", json=probe(a.auth_index, provider))
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"status_code", "header", "body"}
    assert body["status_code"] == 200
    assert all(isinstance(v, list) for v in body["header"].values())
    assert isinstance(body["body"], str)
    if provider == "codex":
        usage = json.loads(body["body"])
        assert usage["plan_type"] == "plus"
        assert usage["rate_limit"]["primary_window"]["used_percent"] < 100


@pytest.mark.parametrize(
    ("provider", "kind", "status_code", "needle"),
    [
        ("codex", "token_invalidated", 401, "token_invalidated"),
        ("claude", "claude_revoked", 403, "OAuth token has been revoked"),
        ("xai", "xai_bad_credentials", 403, "bad-credentials"),
        ("kimi", "invalid_grant", 401, "invalid_authentication_error"),
        ("codex", "refresh_token_reused", 401, "token_expired"),
    ],
)
async def test_silently_revoked_token_seen_only_by_probe(
    sim: SimServer, client: httpx.AsyncClient, provider: str, kind: str, status_code: int, needle: str
) -> None:
    """§5/§11.10: the probe answers the provider's real status/body (not reshaped); status and counters
    of the auth do not change (no MarkResult, no refresh)."""
    a = sim.state.add_credential(provider, email="s@x.com")
    sim.state.revoke(a.name, kind)
    token_before = a.access_token
    body = (await client.post("/api-call", json=probe(a.auth_index, provider))).json()
    assert body["status_code"] == status_code
    assert needle in body["body"]
    e = (await client.get("/auth-files", params={"name": a.name})).json()["files"][0]
    assert (e["status"], e["status_message"], e["failed"], e["success"]) == ("active", "", 0, 0)
    assert a.access_token == token_before


async def test_quota_and_deactivated(sim: SimServer, client: httpx.AsyncClient) -> None:
    """§5: quota exhausted → 200 with a limit-reached body; deactivated workspace → 402."""
    q = sim.state.add_credential("codex", email="q@x.com")
    d = sim.state.add_credential("codex", email="d@x.com")
    sim.state.exhaust_quota(q.name)
    sim.state.deactivate_workspace(d.name)
    qb = (await client.post("/api-call", json=probe(q.auth_index, "codex"))).json()
    assert qb["status_code"] == 200
    assert json.loads(qb["body"])["rate_limit"]["limit_reached"] is True
    db = (await client.post("/api-call", json=probe(d.auth_index, "codex"))).json()
    assert (db["status_code"], json.loads(db["body"])) == (402, {"detail": {"code": "deactivated_workspace"}})


async def test_token_only_in_headers_and_unknown_index(sim: SimServer, client: httpx.AsyncClient) -> None:
    """§5: $TOKEN$ is replaced in header values only; an unknown auth_index leaves it literal → 401."""
    a = sim.state.add_credential("claude", email="h@x.com")
    req = probe(a.auth_index, "claude", {"Authorization": "Bearer $TOKEN$", "X-Other": "a-$TOKEN$"})
    req["data"] = "$TOKEN$"
    assert (await client.post("/api-call", json=req)).json()["status_code"] == 200
    req["auth_index"] = "0123456789abcdef"
    body = (await client.post("/api-call", json=req)).json()
    assert body["status_code"] == 401
    assert "Invalid bearer token" in body["body"]
    req.pop("auth_index")
    req["authIndex"] = a.auth_index
    assert (await client.post("/api-call", json=req)).json()["status_code"] == 200


async def test_vertex_and_antigravity_specials(sim: SimServer, client: httpx.AsyncClient) -> None:
    """§12: vertex → 400 auth token not found; antigravity refreshes a soon-expiring token inside
    /api-call and a dead refresh token gives 400 auth token refresh failed."""
    v = sim.state.add_credential("vertex", project_id="p1")
    r = await client.post("/api-call", json=probe(v.auth_index, "antigravity"))
    assert (r.status_code, r.json()) == (400, {"error": "auth token not found"})
    ok = sim.state.add_credential("antigravity", email="ok@x.com", expires_in=10)
    old = ok.access_token
    r = await client.post("/api-call", json=probe(ok.auth_index, "antigravity"))
    assert r.json()["status_code"] == 200
    assert ok.access_token != old
    dead = sim.state.add_credential("antigravity", email="dead@x.com", expires_in=10)
    sim.state.revoke(dead.name, "invalid_grant")
    r = await client.post("/api-call", json=probe(dead.auth_index, "antigravity"))
    assert (r.status_code, r.json()) == (400, {"error": "auth token refresh failed"})
    live = sim.state.add_credential("antigravity", email="live@x.com")  # expires in an hour
    token = live.access_token
    assert (await client.post("/api-call", json=probe(live.auth_index, "antigravity"))).json()[
        "status_code"
    ] == 200
    assert live.access_token == token  # not within 30 s of `expired`: no refresh
    # A revocation that expires the access token expires `expired` too (CPA's token endpoint sets
    # both): /api-call then refreshes, and the dead refresh token answers 400.
    sim.state.revoke(live.name, "invalid_grant")
    r = await client.post("/api-call", json=probe(live.auth_index, "antigravity"))
    assert (r.status_code, r.json()) == (400, {"error": "auth token refresh failed"})


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"method": "GET", "url": "https://example.com/"}, 502, "request failed"),
        ({"url": "https://chatgpt.com/"}, 400, "missing method"),
        ({"method": "GET"}, 400, "missing url"),
        ({"method": "GET", "url": "/relative"}, 400, "invalid url"),
        ({"method": "GET", "url": "https://chatgpt.com/", "proxy_url": "ftp://x"}, 400, "invalid proxy_url"),
        ({"method": "GET", "url": "https://chatgpt.com/", "header": {"a": 1}}, 400, "invalid body"),
    ],
)
async def test_errors(client: httpx.AsyncClient, body: dict[str, Any], status: int, error: str) -> None:
    """§5 error answers; no internet, so any other URL is a transport failure."""
    r = await client.post("/api-call", json=body)
    assert (r.status_code, r.json()) == (status, {"error": error})


async def test_probe_override_and_counter(sim: SimServer, client: httpx.AsyncClient) -> None:
    """Control API: a per-credential probe answer; the api-call counter counts every call."""
    a = sim.state.add_credential("kimi")
    sim.state.set_probe(a.name, 503, '{"error":"maintenance"}')
    body = (await client.post("/api-call", json=probe(a.auth_index, "kimi"))).json()
    assert (body["status_code"], body["body"]) == (503, '{"error":"maintenance"}')
    assert sim.state.counter_snapshot()["api_calls"] == 1
