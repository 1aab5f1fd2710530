"""Fixtures for the simulator's own tests: a fresh SimServer per test and clients bound to it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from reauthd.sim import SimServer
from reauthd.sim.clock import SimClock

KEY = "sim-key"


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    """A simulator whose clock only moves with `state.advance()`: windows are crossed exactly, and a
    slow, busy machine cannot make a "not yet" assertion late."""
    async with SimServer(KEY, watcher_delay=1.0, clock=SimClock(frozen=True)) as server:
        yield server


@pytest.fixture
async def client(sim: SimServer) -> AsyncIterator[httpx.AsyncClient]:
    """Authenticated management client (Bearer key) against /v0/management."""
    async with httpx.AsyncClient(
        base_url=f"{sim.base_url}/v0/management", headers={"Authorization": f"Bearer {KEY}"}, timeout=10
    ) as c:
        yield c


@pytest.fixture
async def anon(sim: SimServer) -> AsyncIterator[httpx.AsyncClient]:
    """Client without a key, rooted at the simulator's base URL."""
    async with httpx.AsyncClient(base_url=sim.base_url, timeout=10) as c:
        yield c
