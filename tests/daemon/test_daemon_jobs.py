"""The embedded daemon's scheduler jobs and what a reload changes: job settings that keep a suspended host
from replaying a burst of ticks, and metrics series for notification routes a reload added."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from apscheduler.triggers.interval import IntervalTrigger
from structlog.testing import capture_logs

import reauthd.daemon as daemon_module
from reauthd.config import load_config
from reauthd.daemon import HEARTBEAT_S, TICK_S, Daemon
from reauthd.sim.server import SimThread
from tests.daemon.inprocess import running, started, wait_until, write_config
from tests.support.servers import free_port


async def test_every_job_catches_up_once_and_never_runs_twice_at_once(tmp_path: Path, sim: SimThread) -> None:
    """coalesce: missed runs (a suspended host, a long tick) collapse into one; max_instances=1: a tick never
    overlaps the previous one; a run missed by more than 30 s is skipped rather than run late."""
    daemon = Daemon(load_config(write_config(tmp_path, sim.base_url)))
    async with running(daemon):
        graph = daemon.graph
        assert graph is not None
        jobs = {job.id: job for job in graph.scheduler.get_jobs()}
        assert set(jobs) == {"heartbeat", "tick", "reconcile"}
        for job in jobs.values():
            assert (job.coalesce, job.max_instances, job.misfire_grace_time) == (True, 1, 30), job.id
            assert isinstance(job.trigger, IntervalTrigger)
        periods = {name: job.trigger.interval.total_seconds() for name, job in jobs.items()}
        # detect.poll_interval_s = 5: reconcile every max(5, 5 / 2) s.
        assert periods == {"heartbeat": HEARTBEAT_S, "tick": TICK_S, "reconcile": 5.0}


async def test_a_reload_that_adds_a_route_creates_its_metrics_series_at_zero(
    tmp_path: Path, sim: SimThread
) -> None:
    port = free_port()  # the same web address before and after the reload
    config = write_config(tmp_path, sim.base_url, port=port)
    daemon = Daemon(load_config(config), config_path=config)
    async with running(daemon):
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=5) as client:
            assert 'route="ops"' not in (await client.get("/metrics")).text
        old_graph = daemon.graph
        ops = '[[notify.routes]]\nname = "ops"\nproviders = ["claude"]\nurls = ["json://127.0.0.1:9/ops"]'
        write_config(tmp_path, sim.base_url, routes=ops, port=port)
        daemon.request_reload()  # what SIGHUP does
        await wait_until(lambda: daemon.graph is not old_graph and started(daemon), 30, "the reload")
        async with httpx.AsyncClient(base_url=base, timeout=5) as client:
            after = (await client.get("/metrics")).text
        for name in ("sent", "failed", "gave_up"):
            assert f'reauthd_notifications_{name}_total{{route="ops"}} 0.0' in after, name


async def test_a_background_task_that_swallows_its_cancellation_does_not_hang_stop_or_reload(
    tmp_path: Path, sim: SimThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python 3.11's asyncio.wait_for can swallow a cancellation (gh-86296); the CPA error stream reads
    with it. A reload or SIGTERM then must not wait forever for the detection task."""
    monkeypatch.setattr(daemon_module, "BACKGROUND_STOP_S", 0.5)
    cancellations = 0

    async def stubborn() -> None:
        nonlocal cancellations
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancellations += 1
                if cancellations > 2:  # the one left behind ends when cancelled again at the very end
                    raise

    config = write_config(tmp_path, sim.base_url)
    daemon = Daemon(load_config(config), config_path=config)
    left_behind: list[asyncio.Task[None]] = []
    with capture_logs() as logs:
        async with running(daemon):
            graph = daemon.graph
            assert graph is not None
            left_behind.append(asyncio.create_task(stubborn(), name="stubborn"))
            graph.background.append(left_behind[0])
            write_config(tmp_path, sim.base_url, routes='[[notify.routes]]\nurls = ["json://127.0.0.1:9/x"]')
            daemon.request_reload()
            await wait_until(lambda: daemon.graph is not graph and started(daemon), 10, "the reload")
    # `running` checked that the daemon exited 0 after SIGTERM's path.
    stuck = [e for e in logs if e["event"] == "daemon.background_not_stopped"]
    assert stuck and stuck[0]["tasks"] == ["stubborn"]
    left_behind[0].cancel()
    await asyncio.gather(*left_behind, return_exceptions=True)
    assert left_behind[0].cancelled()
