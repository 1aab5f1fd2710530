"""Fixtures of the reliability suite: a simulated CPA on a thread, a loopback inbox, real daemons."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon_process import KEY, DaemonConfig, DaemonProcess
from inbox import Inbox, serve_inbox

from reauthd.sim import scenarios
from reauthd.sim.server import SimThread, run_sim_in_thread

# An Apprise URL token that must never be printed (json://host:port/<token>).
APPRISE_TOKEN = "apprise-CANARY-5c1e88d0b2"


def add_credentials(sim: SimThread, *providers: str) -> list[str]:
    """One fresh, healthy credential per provider; returns their file names."""
    return sim.call(lambda s: [scenarios.add_credential(s, p).name for p in providers])


def revoke_live(sim: SimThread, *names: str) -> None:
    """Revoke upstream and send one request through each, so CPA itself sees the failure."""
    sim.call(lambda s: [scenarios.revoke(s, n, live=True) for n in names])


@pytest.fixture
def sim() -> Iterator[SimThread]:
    thread = run_sim_in_thread(management_key=KEY, watcher_delay=0.5)
    try:
        yield thread
    finally:
        thread.stop()


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    with serve_inbox(APPRISE_TOKEN) as box:
        yield box


DaemonFactory = Callable[..., DaemonProcess]


@pytest.fixture
def daemon(sim: SimThread, inbox: Inbox, tmp_path: Path) -> Iterator[DaemonFactory]:
    """`daemon(**DaemonConfig fields)` → a configured, not yet started DaemonProcess; stopped at the end."""
    made: list[DaemonProcess] = []

    def make(**overrides: Any) -> DaemonProcess:
        config = DaemonConfig(sim_url=sim.base_url, notify_url=inbox.url(), state_dir=tmp_path, **overrides)
        process = DaemonProcess(config)
        made.append(process)
        return process

    try:
        yield make
    finally:
        for process in made:
            process.stop()
