"""Fixtures of the reliability suite: a simulated CPA on a thread, a loopback inbox, real daemons."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reauthd.sim.server import SimThread, run_sim_in_thread
from tests.reliability.daemon_process import KEY, DaemonConfig, DaemonProcess
from tests.reliability.staging import APPRISE_TOKEN, DaemonFactory
from tests.support.inbox import Inbox, serve_inbox


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
