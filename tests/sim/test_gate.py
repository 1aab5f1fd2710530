"""The management key gate, bans, availability and headers (contract §1, §11.1)."""

from __future__ import annotations

import httpx
import pytest

from reauthd.sim import SimServer

KEY = "sim-key"

BAN_MSG = "IP banned due to too many failed attempts. Try again in "


@pytest.mark.parametrize(
    ("headers", "status", "error"),
    [
        ({}, 401, "missing management key"),
        ({"Authorization": "Bearer nope"}, 401, "invalid management key"),
        ({"Authorization": f"bEaReR {KEY}"}, 200, None),
        ({"Authorization": KEY}, 200, None),  # no Bearer prefix: the whole value is the key
        ({"X-Management-Key": KEY}, 200, None),
        ({"Authorization": "Bearer nope", "X-Management-Key": KEY}, 401, "invalid management key"),
    ],
)
async def test_key_transport(
    anon: httpx.AsyncClient, headers: dict[str, str], status: int, error: str | None
) -> None:
    """§1 key transport: Bearer (any case) or the raw header, X-Management-Key only as fallback."""
    r = await anon.get("/v0/management/auth-files", headers=headers)
    assert r.status_code == status
    if error:
        assert r.json() == {"error": error}
    for h in ("X-CPA-VERSION", "X-CPA-COMMIT", "X-CPA-BUILD-DATE", "X-CPA-SUPPORT-PLUGIN"):
        assert h in r.headers


async def test_fifth_failure_401_then_ban_even_for_right_key(sim: SimServer, anon: httpx.AsyncClient) -> None:
    """§1/§11.1: the 5th bad attempt is a 401 and starts a 30-minute ban; the right key then gets 403."""
    for _ in range(5):
        r = await anon.get("/v0/management/auth-files", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
    r = await anon.get("/v0/management/auth-files", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 403
    assert r.json()["error"] in (BAN_MSG + "30m0s", BAN_MSG + "29m59s")
    assert "x-cpa-version" in r.headers
    sim.state.advance(1.2)
    r = await anon.get("/v0/management/auth-files", headers={"Authorization": f"Bearer {KEY}"})
    assert r.json() == {"error": BAN_MSG + "29m59s"}
    sim.state.advance(30 * 60)
    r = await anon.get("/v0/management/auth-files", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200
    assert sim.state.counter_snapshot()["failed_key_attempts"]["127.0.0.1"] == 5


async def test_success_resets_counter(anon: httpx.AsyncClient) -> None:
    """§1: any successful authentication resets the failure counter."""
    for _ in range(4):
        await anon.get("/v0/management/auth-files", headers={"Authorization": "Bearer wrong"})
    assert (await anon.get("/v0/management/auth-files", headers={"X-Management-Key": KEY})).status_code == 200
    for _ in range(4):
        r = await anon.get("/v0/management/auth-files", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    assert (await anon.get("/v0/management/auth-files", headers={"X-Management-Key": KEY})).status_code == 200


async def test_forwarded_ip_is_judged_remote_and_banned_separately(
    sim: SimServer, anon: httpx.AsyncClient
) -> None:
    """§1: gin trusts every proxy, so X-Forwarded-For decides the client IP; non-local → 403."""
    r = await anon.get(
        "/v0/management/auth-files",
        headers={"X-Forwarded-For": "10.1.2.3, 127.0.0.1", "Authorization": f"Bearer {KEY}"},
    )
    assert (r.status_code, r.json()) == (403, {"error": "remote management disabled"})
    for _ in range(6):
        r = await anon.get("/v0/management/auth-files", headers={"X-Real-IP": "10.9.9.9"})
        assert r.status_code == 403  # remote-disabled does not count as a failure
    assert "10.9.9.9" not in sim.state.counter_snapshot()["failed_key_attempts"]


async def test_remote_allowed_bans_forwarded_ip_only() -> None:
    """§1: with allow-remote the forwarded IP is banned on its own; loopback stays usable."""
    async with SimServer(KEY, allow_remote=True) as sim, httpx.AsyncClient(base_url=sim.base_url) as c:
        for _ in range(5):
            r = await c.get("/v0/management/auth-files", headers={"X-Forwarded-For": "203.0.113.7"})
            assert r.status_code == 401
        r = await c.get(
            "/v0/management/auth-files",
            headers={"X-Forwarded-For": "203.0.113.7", "Authorization": f"Bearer {KEY}"},
        )
        assert r.status_code == 403
        r = await c.get("/v0/management/auth-files", headers={"Authorization": f"Bearer {KEY}"})
        assert r.status_code == 200


async def test_management_not_configured_is_404_empty() -> None:
    """§1: without a secret every management route is 404 with an empty body."""
    async with SimServer(None) as sim, httpx.AsyncClient(base_url=sim.base_url) as c:
        r = await c.get("/v0/management/auth-files", headers={"Authorization": "Bearer x"})
        assert (r.status_code, r.content) == (404, b"")


async def test_cors_preflight_and_unknown_route(anon: httpx.AsyncClient, client: httpx.AsyncClient) -> None:
    """§1 CORS OPTIONS 204; §4.1 unknown route: 404 empty with a valid key, 401 with a bad one."""
    r = await anon.options("/v0/management/auth-files")
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "*"
    r = await client.get("/iflow-auth-url")
    assert (r.status_code, r.content) == (404, b"")
    for removed in ("/gemini-cli-auth-url", "/qwen-auth-url", "/usage"):
        assert (await client.get(removed)).status_code == 404
    r = await anon.get("/v0/management/iflow-auth-url", headers={"Authorization": "Bearer bad"})
    assert r.status_code == 401


@pytest.mark.parametrize(
    ("headers", "local"),
    [
        ({"X-Forwarded-For": "127.0.0.1"}, True),
        ({"X-Forwarded-For": "127.0.0.1, 10.0.0.1"}, True),  # leftmost wins: every proxy is trusted
        ({"X-Forwarded-For": "10.0.0.1, 127.0.0.1"}, False),
        ({"X-Forwarded-For": "10.0.0.1, junk", "X-Real-IP": "::1"}, True),  # invalid header → next one
        ({"X-Real-IP": "192.0.2.1"}, False),
    ],
)
async def test_client_ip_like_gin(anon: httpx.AsyncClient, headers: dict[str, str], local: bool) -> None:
    """§1: c.ClientIP() with trusted proxies decides "local" for the remote-management check."""
    r = await anon.get("/v0/management/auth-files", headers={**headers, "Authorization": f"Bearer {KEY}"})
    assert r.status_code == (200 if local else 403)
