"""The management key as CPA reads it (handler.go `Middleware`): the part after "Bearer " untrimmed."""

from __future__ import annotations

import httpx

from reauthd.sim import SimServer
from tests.sim.conftest import KEY


async def test_the_key_after_bearer_is_not_trimmed(sim: SimServer) -> None:
    """CPA takes the part after the first space as is: "Bearer  <key>" offers " <key>" and is refused."""
    async with httpx.AsyncClient(base_url=f"{sim.base_url}/v0/management", timeout=10) as c:
        spaced = await c.get("/auth-files", headers={"Authorization": f"Bearer  {KEY}"})
        assert (spaced.status_code, spaced.json()) == (401, {"error": "invalid management key"})
        assert (await c.get("/auth-files", headers={"Authorization": f"bearer {KEY}"})).status_code == 200
        assert (await c.get("/auth-files", headers={"Authorization": KEY})).status_code == 200
        assert (await c.get("/auth-files", headers={"X-Management-Key": KEY})).status_code == 200
