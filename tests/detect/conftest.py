"""Detection tests run against the CPA simulator over loopback, with the real CPA client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from reauthd.cpa.client import CPAClient
from reauthd.sim import SimServer

KEY = "sim-key-detect-0123"


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    async with SimServer(KEY, watcher_delay=0.2) as server:
        yield server


@pytest.fixture
async def client(sim: SimServer) -> AsyncIterator[CPAClient]:
    async with CPAClient("main", sim.base_url, KEY, timeout=10) as cpa:
        yield cpa


@pytest.fixture
def key() -> str:
    return KEY
