"""Fixtures of the in-process daemon tests: a simulated CPA on a thread that knows the in-process key."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from reauthd.sim.server import SimThread, run_sim_in_thread
from tests.daemon.inprocess import KEY


@pytest.fixture
def sim() -> Iterator[SimThread]:
    thread = run_sim_in_thread(management_key=KEY)
    try:
        yield thread
    finally:
        thread.stop()
