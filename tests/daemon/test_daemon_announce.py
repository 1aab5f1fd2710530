"""A live revocation reaches the person in seconds (issue 12): the task's message goes out as soon as its
digest window allows, not at the next tick of the main loop."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

import reauthd.daemon as daemon_module
from reauthd.config import load_config
from reauthd.daemon import Daemon
from reauthd.sim import scenarios
from reauthd.sim.server import SimThread
from tests.daemon.inprocess import KEY, running, wait_until
from tests.support.inbox import serve_inbox
from tests.support.servers import free_port


def config(tmp_path: Path, sim_url: str, notify_url: str, window_s: float) -> Path:
    port = free_port()
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[state]
path = "{tmp_path / "state.db"}"
[[cpa]]
name = "sim"
base_url = "{sim_url}"
management_key = "{KEY}"
[detect]
poll_interval_s = 3600
[notify]
urls = ["{notify_url}"]
group_window_s = {window_s}
[web]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
""",
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize("window_s", [0, 1.5])
async def test_an_errors_event_is_delivered_when_its_window_closes_not_at_the_next_tick(
    tmp_path: Path, sim: SimThread, monkeypatch: pytest.MonkeyPatch, window_s: float
) -> None:
    # A tick so slow that a message waiting for it could not arrive within this test.
    monkeypatch.setattr(daemon_module, "TICK_S", 120.0)
    victim = sim.call(lambda state: scenarios.add_credential(state, "codex").name)
    with serve_inbox("announce") as inbox:
        daemon = Daemon(load_config(config(tmp_path, sim.base_url, inbox.url(), window_s)))
        async with running(daemon):
            await wait_until(lambda: sim.call(lambda s: bool(s.subscribers["errors"])), 10, "the stream")
            await asyncio.sleep(0.2)
            started = time.monotonic()
            sim.call(lambda state: scenarios.revoke(state, victim, live=True))
            await wait_until(lambda: inbox.messages("new"), 15, "the message")
            elapsed = time.monotonic() - started
    assert len(inbox.messages("new")) == 1
    assert window_s <= elapsed < window_s + 2.0, elapsed
