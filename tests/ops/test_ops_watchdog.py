"""The watchdog feeder pings a real datagram socket only while the main loop is alive."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from reauthd.ops.health import Health
from reauthd.ops.sdnotify import SystemdNotifier
from reauthd.ops.watchdog import feed_watchdog


async def _collect(sock: socket.socket, count: int, deadline_s: float = 5.0) -> list[bytes]:
    """Wait (bounded) until `count` datagrams arrived: robust on a busy machine, fast on an idle one."""
    got: list[bytes] = []
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while len(got) < count and loop.time() < end:
        got += _drain(sock)
        await asyncio.sleep(0.01)
    return got


def _drain(sock: socket.socket) -> list[bytes]:
    got: list[bytes] = []
    while True:
        try:
            got.append(sock.recv(256))
        except BlockingIOError:
            return got


async def test_pings_while_alive_and_stops_when_the_loop_hangs(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.setblocking(False)
        now = [0.0]
        health = Health(cpas=["main"], liveness_timeout_s=60, clock=lambda: now[0])
        task = asyncio.create_task(
            feed_watchdog(SystemdNotifier({"NOTIFY_SOCKET": str(path)}), lambda: health.live().ok, 0.02)
        )
        try:
            pings = await _collect(sock, 3)
            assert len(pings) >= 3
            assert set(pings) == {b"WATCHDOG=1"}

            now[0] += 61  # the main loop stopped beating: systemd must be allowed to kill us
            await asyncio.sleep(0.05)
            _drain(sock)  # a ping may have been in flight when the clock moved
            await asyncio.sleep(0.15)
            assert _drain(sock) == []

            health.beat()  # alive again (e.g. a long step finished before WatchdogSec)
            assert len(await _collect(sock, 3)) >= 3
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({}, 0.01),  # no notify socket: nothing to feed
        ({"NOTIFY_SOCKET": "/nonexistent/notify"}, None),  # no $WATCHDOG_USEC: systemd asked for none
        ({"NOTIFY_SOCKET": "/nonexistent/notify"}, 0.0),
    ],
)
async def test_returns_at_once_when_there_is_no_watchdog(env, interval, monkeypatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    await asyncio.wait_for(feed_watchdog(SystemdNotifier(env), lambda: True, interval), 1)
