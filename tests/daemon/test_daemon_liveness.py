"""/livez and the systemd watchdog say whether the main loop turns, not whether slow I/O has finished: a slow
notifier keeps them green, a step that never returns, a blocked event loop or a dead scheduler turns them red."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from reauthd.config import load_config
from reauthd.core.model import TaskState as S
from reauthd.daemon import Daemon
from reauthd.notify.notifier import Notifier, SendOutcome
from reauthd.notify.templates import Message
from reauthd.sim.server import SimThread
from reauthd.store import DeliveryStatus
from tests.daemon.inprocess import (
    WatchdogSocket,
    add_final_notices,
    largest_gap,
    running,
    wait_until,
    write_config,
)

LIVENESS_S = 2.0


class SlowNotifier(Notifier):
    """Every send takes `delay_s` (a slow webhook); with `hang` set, sends wait until `release` is set."""

    def __init__(self, *args: object, delay_s: float = 0.0, hang: bool = False, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.delay_s = delay_s
        self.hang = hang
        self.release = asyncio.Event()
        self.sent = 0

    async def send(self, channel: str, message: Message, now: datetime) -> SendOutcome:
        if self.hang:
            await self.release.wait()
        await asyncio.sleep(self.delay_s)
        self.sent += 1
        return SendOutcome(True)


@pytest.fixture
async def watchdog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[WatchdogSocket]:
    """systemd asks for a watchdog ping every 0.1 s (WatchdogSec=0.2 s) on a socket the test reads."""
    socket = WatchdogSocket(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(socket.path))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    socket.start()
    try:
        yield socket
    finally:
        await socket.close()


def make_daemon(tmp_path: Path, sim: SimThread, notifier_kwargs: dict[str, object]) -> Daemon:
    settings = load_config(write_config(tmp_path, sim.base_url))
    notifier = SlowNotifier(settings.notify, **notifier_kwargs)
    # A small liveness limit, so that the old "beat once at the start of a tick" fails within seconds.
    return Daemon(settings, notifier=notifier, liveness_timeout_s=LIVENESS_S, step_timeout_s=LIVENESS_S)


async def test_a_slow_notifier_with_many_deliveries_keeps_livez_and_the_watchdog_going(
    tmp_path: Path, sim: SimThread, watchdog: WatchdogSocket
) -> None:
    """12 due messages on one channel, 0.5 s per send: one tick's flush takes 6 s, three times the liveness
    limit, and the daemon is alive all along."""
    daemon = make_daemon(tmp_path, sim, {"delay_s": 0.5})
    notifier = daemon._notifier_override
    assert isinstance(notifier, SlowNotifier)
    async with running(daemon):
        assert daemon.web_url is not None
        loop = asyncio.get_running_loop()
        add_final_notices(daemon, 12)
        began = loop.time()
        answers: list[int] = []
        live: list[bool] = []
        async with httpx.AsyncClient(base_url=daemon.web_url, timeout=5) as client:
            while notifier.sent < 12:
                assert loop.time() - began < 40, f"only {notifier.sent} of 12 sent"
                answers.append((await client.get("/livez")).status_code)
                live.append(daemon.health.live().ok)
                await asyncio.sleep(0.1)
        ended = loop.time()
        assert ended - began > 2 * LIVENESS_S  # the slow work really outlasted the limit
        assert set(answers) == {200} and all(live)
        assert largest_gap(watchdog.pings, began, ended) < LIVENESS_S
        store = daemon.store
        assert store is not None
        assert {d.status for d in store.list_deliveries()} == {DeliveryStatus.SENT}


async def test_a_step_that_never_returns_flips_livez_and_stops_the_watchdog(
    tmp_path: Path, sim: SimThread, watchdog: WatchdogSocket
) -> None:
    daemon = make_daemon(tmp_path, sim, {"hang": True})
    notifier = daemon._notifier_override
    assert isinstance(notifier, SlowNotifier)
    async with running(daemon):
        assert daemon.web_url is not None
        loop = asyncio.get_running_loop()
        async with httpx.AsyncClient(base_url=daemon.web_url, timeout=5) as client:
            assert (await client.get("/livez")).status_code == 200
            add_final_notices(daemon, 1)  # the next tick's send never returns
            await wait_until(lambda: not daemon.health.live().ok, 10, "/livez to notice the stuck step")
            livez = await client.get("/livez")
            assert livez.status_code == 503
            assert "a main-loop step has made no progress for" in livez.text
            await asyncio.sleep(0.3)  # a ping may have been on its way
            silent_from = loop.time()
            await asyncio.sleep(1.0)
            assert watchdog.pings_between(silent_from, loop.time()) == []  # systemd will kill us

            notifier.release.set()  # the step finishes after all: alive again
            await wait_until(lambda: daemon.health.live().ok, 10, "/livez to recover")
            assert (await client.get("/livez")).status_code == 200


async def test_a_blocked_event_loop_or_a_dead_scheduler_flips_livez(
    tmp_path: Path, sim: SimThread, watchdog: WatchdogSocket
) -> None:
    daemon = make_daemon(tmp_path, sim, {})
    async with running(daemon):
        assert daemon.health.live().ok
        time.sleep(LIVENESS_S + 0.5)  # blocking the event loop is the point
        report = daemon.health.live()
        assert not report.ok and "the main loop has not completed a turn" in report.text
        await wait_until(lambda: daemon.health.live().ok, 10, "the heartbeat to resume")

        graph = daemon.graph
        assert graph is not None
        graph.scheduler.pause()  # no job runs any more, the event loop itself is fine
        loop = asyncio.get_running_loop()
        paused_at = loop.time()
        await wait_until(lambda: not daemon.health.live().ok, 10, "/livez to notice the dead scheduler")
        assert loop.time() - paused_at >= LIVENESS_S - 1.0
        graph.scheduler.resume()
        await wait_until(lambda: daemon.health.live().ok, 10, "the heartbeat to resume")


async def test_a_slow_cpa_makes_ticks_share_the_work_round_robin_and_stay_live(
    tmp_path: Path, sim: SimThread, watchdog: WatchdogSocket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five logins being verified against a CPA that takes 0.5 s per step: each tick stops starting steps
    after its 1 s budget and the next one continues with the tasks not advanced yet (no task starves)."""
    settings = load_config(write_config(tmp_path, sim.base_url))
    daemon = Daemon(
        settings,
        notifier=SlowNotifier(settings.notify),
        liveness_timeout_s=LIVENESS_S,
        step_timeout_s=LIVENESS_S,
        tick_budget_s=1.0,
    )
    advanced: list[str] = []

    async def slow_step(task_id: str, now: datetime, *, wait: bool = False) -> None:
        await asyncio.sleep(0.5)
        advanced.append(task_id)

    async with running(daemon):
        graph, store = daemon.graph, daemon.store
        assert graph is not None and store is not None
        monkeypatch.setattr(graph.completion, "advance", slow_step)
        now = datetime.now(UTC)
        for i in range(5):
            task = store.create_task(
                cpa="sim", auth_name=f"codex-{i}.json", auth_index=f"idx-{i}", provider="codex",
                account_masked=f"u{i}***@example.com", reason="revoked", now=now,
                deadline=now + timedelta(days=7),
            )  # fmt: skip
            for state in (S.OPENED, S.LOGIN_STARTED, S.CALLBACK_RECEIVED, S.VERIFYING):
                store.apply_transition(task.id, state, "step", now)
        with capture_logs() as logs:
            live = []
            while len(advanced) < 10:
                live.append(daemon.health.live().ok)
                await asyncio.sleep(0.1)
        assert all(live)
        assert len(set(advanced[:5])) == 5, advanced  # every task had its step before any had a second
        spent = [e for e in logs if e["event"] == "daemon.tick_budget_spent"]
        assert spent and all(e["steps_done"] <= 3 for e in spent), spent
