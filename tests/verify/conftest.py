"""Fixtures for verify/retire tests: a fresh simulated CPA, store and client per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from reauthd.cpa.client import CPAClient
from reauthd.cpa.wire import RetryPolicy
from reauthd.sim import SimServer
from reauthd.store.sqlite import Store
from tests.verify.verify_world import KEY, PROXY_KEY, World


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    async with SimServer(KEY, watcher_delay=1.0, proxy_api_keys=(PROXY_KEY,)) as server:
        yield server


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "state.db") as st:
        yield st


@pytest.fixture
async def world(sim: SimServer, store: Store, tmp_path: Path) -> AsyncIterator[World]:
    client = CPAClient(
        "main",
        sim.base_url,
        KEY,
        timeout=5,
        retry=RetryPolicy(attempts=2, base_delay_s=0.01, max_delay_s=0.05),
    )
    try:
        yield World(sim, store, client, tmp_path)
    finally:
        await client.aclose()
