"""The daemon embedded in the test's event loop (`await Daemon(settings).run()`) against the simulator, with a
fake systemd notify socket: what /livez, the watchdog, the scheduler and /metrics do while it runs."""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from reauthd.core.model import TaskState
from reauthd.daemon import Daemon
from reauthd.store import DeliveryKind
from tests.support.servers import free_port

KEY = "inprocess-daemon-key-CANARY"


def write_config(tmp_path: Path, sim_url: str, *, routes: str = "", port: int | None = None) -> Path:
    """A config file (so SIGHUP-style reloads can read it again); the notifier URL is never dialled when the
    test passes its own notifier."""
    port = port or free_port()
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
poll_interval_s = 5
probe_interval_s = 600
[notify]
urls = ["json://127.0.0.1:9/unused"]
group_window_s = 0
{routes}
[web]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
""",
        encoding="utf-8",
    )
    return path


class WatchdogSocket:
    """A datagram socket standing in for systemd's $NOTIFY_SOCKET; records when each WATCHDOG=1 arrived."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.pings: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while True:
                try:
                    datagram = self.sock.recv(4096)
                except BlockingIOError:
                    break
                if b"WATCHDOG=1" in datagram.split(b"\n"):
                    self.pings.append(loop.time())
            await asyncio.sleep(0.02)

    def start(self) -> None:
        self._task = asyncio.create_task(self._collect())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.sock.close()

    def pings_between(self, start: float, end: float) -> list[float]:
        return [t for t in self.pings if start <= t <= end]


def largest_gap(times: list[float], start: float, end: float) -> float:
    points = [start, *sorted(t for t in times if start <= t <= end), end]
    return max(b - a for a, b in itertools.pairwise(points))


async def wait_until(predicate: object, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if callable(predicate) and predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def started(daemon: Daemon) -> bool:
    """Startup finished: the first look at CPA and the first tick are done and the work jobs are scheduled."""
    graph = daemon.graph
    return graph is not None and graph.scheduler.get_job("tick") is not None


@asynccontextmanager
async def running(daemon: Daemon, *, wait_started: bool = True) -> AsyncIterator[asyncio.Task[int]]:
    """Run the daemon in this event loop; stop it (SIGTERM path) and check it exited cleanly at the end."""
    task = asyncio.create_task(daemon.run(), name="daemon-under-test")
    try:
        if wait_started:
            await wait_until(lambda: started(daemon) or task.done(), 30, "the daemon to start")
            assert not task.done(), task.result()
        yield task
    finally:
        daemon.request_stop()
        code = await asyncio.wait_for(task, 30)
    assert code == 0


def add_final_notices(daemon: Daemon, count: int) -> list[str]:
    """`count` closed tasks, each with one due final notice on the default channel (straight into the
    running daemon's store: same thread, same connection). Final notices need no CPA and no link."""
    store = daemon.store
    assert store is not None
    now = datetime.now(UTC)
    ids = []
    for i in range(count):
        task = store.create_task(
            cpa="sim",
            auth_name=f"codex-{i}.json",
            auth_index=f"idx-{i}",
            provider="codex",
            account_masked=f"u{i}***@example.com",
            reason="token revoked",
            now=now,
            deadline=now + timedelta(days=7),
        )
        store.apply_transition(task.id, TaskState.DONE, "the credential works again", now)
        store.enqueue_delivery(
            kind=DeliveryKind.RESOLVED,
            route="default#0",
            task_ids=[task.id],
            due_at=now,
            now=now,
            dedupe_key=f"test-final-{i}",
        )
        ids.append(task.id)
    return ids
