"""Probes that confirm live evidence go before the idle sweep (issue 12): a sweep that has more due than
the rate allows never delays the probe behind an `errors` event, a failure in the listing or an operator's
`scan --probe`; the sweep stretches its period instead of building a backlog."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from structlog.testing import capture_logs

from reauthd.config import DetectConfig
from reauthd.core.model import VerdictKind
from reauthd.cpa.client import CPAClient
from reauthd.detect.engine import DetectionEngine
from reauthd.sim import SimServer, scenarios

# 2 probes/s shared by everything, a sweep that wants every credential now.
CONGESTED = DetectConfig(
    poll_interval_s=3600, error_stream=True, probe_interval_s=60, probe_concurrency=2, probe_rate_per_s=2
)


def fleet(sim: SimServer, count: int) -> list[str]:
    return [scenarios.add_credential(sim.state, "codex").name for _ in range(count)]


async def flood_idle(engine: DetectionEngine, rounds: int = 6) -> int:
    """Ask the sweep for everything that is due an hour from now, several times (as its loop would)."""
    later = engine.clock() + timedelta(hours=1)
    return sum([await engine.run_idle_probes(later) for _ in range(rounds)])


async def test_errors_event_is_confirmed_ahead_of_a_congested_sweep(
    sim: SimServer, client: CPAClient
) -> None:
    names = fleet(sim, 60)
    engine = DetectionEngine({"main": client}, CONGESTED)
    runner = asyncio.create_task(engine.run())
    try:
        for _ in range(200):
            if engine.cycles and sim.state.subscribers["errors"]:
                break
            await asyncio.sleep(0.02)
        await flood_idle(engine)
        started = time.monotonic()
        scenarios.revoke(sim.state, names[-1], live=True)
        event = await asyncio.wait_for(engine.confirmed.get(), 15)
        elapsed = time.monotonic() - started
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await engine.aclose()
    assert event.ref.name == names[-1]
    # Behind a FIFO of the flooded sweep (dozens of probes at 2/s) this took well over 10 s.
    assert elapsed < 2.0, elapsed


async def test_operator_probe_and_listing_failure_go_before_the_sweep(
    sim: SimServer, client: CPAClient
) -> None:
    names = fleet(sim, 60)
    engine = DetectionEngine({"main": client}, CONGESTED)
    try:
        await engine.cycle()
        await flood_idle(engine)
        # scan --probe: one credential, now.
        started = time.monotonic()
        view = await engine.probe_now("main", engine.latest()[10].ref.auth_index)
        assert view is not None and view.verdict.kind is VerdictKind.HEALTHY
        assert time.monotonic() - started < 2.0
        # A failed request shows in the listing (nobody subscribed to `errors`): the cycle's confirming probe.
        scenarios.revoke(sim.state, names[20], live=True)
        started = time.monotonic()
        await engine.cycle(wait_for_probes=True)
        event = await asyncio.wait_for(engine.confirmed.get(), 10)
        assert event.ref.name == names[20]
        assert time.monotonic() - started < 2.0
    finally:
        await engine.aclose()


async def test_an_idle_probe_still_waiting_is_promoted_by_live_evidence(
    sim: SimServer, client: CPAClient
) -> None:
    fleet(sim, 30)
    engine = DetectionEngine({"main": client}, CONGESTED)
    try:
        await engine.cycle()
        await flood_idle(engine, rounds=1)
        queued = sorted(engine._idle_queued)
        assert queued, "the sweep has idle probes waiting for the gate"
        key = queued[-1]
        started = time.monotonic()
        await engine.probe_now(*key)
        assert time.monotonic() - started < 2.0
        assert key not in engine._idle_queued
    finally:
        await engine.aclose()


async def test_the_sweep_keeps_at_most_a_few_idle_probes_in_flight(sim: SimServer, client: CPAClient) -> None:
    fleet(sim, 40)
    engine = DetectionEngine({"main": client}, CONGESTED)
    try:
        await engine.cycle()
        started = await flood_idle(engine, rounds=10)
        assert started <= 2 * CONGESTED.probe_concurrency
        assert len(engine._in_flight) <= 2 * CONGESTED.probe_concurrency
    finally:
        await engine.aclose()


async def test_sweep_period_stretches_to_the_rate_and_says_so(sim: SimServer, client: CPAClient) -> None:
    fleet(sim, 40)
    for _ in range(10):  # no probe for these: not on the sweep, and no reason for the period to waver
        scenarios.add_credential(sim.state, "antigravity")
    config = DetectConfig(poll_interval_s=3600, probe_interval_s=60, probe_rate_per_s=0.25)
    engine = DetectionEngine({"main": client}, config)
    try:
        assert engine.sweep_note is None
        with capture_logs() as logs:
            runner = asyncio.create_task(engine.run())  # the idle sweep runs: its period is reported
            while not engine.cycles:
                await asyncio.sleep(0.01)
            await engine.cycle()
            await engine.cycle()
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        # 40 credentials per 60 s need 0.67 probes/s; the sweep has 80 % of 0.25/s: 200 s.
        assert engine.sweep_period_s == 200.0
        (line,) = [entry for entry in logs if entry["event"] == "detect.sweep.period"]  # once, not per cycle
        assert (line["log_level"], line["period_s"], line["scheduled"]) == ("warning", 200, 40)
        assert engine.sweep_note == (
            "the idle sweep probes each of 40 credentials every 3 min instead of every 60 s "
            "(probe_interval_s): probe_rate_per_s = 0.25 leaves it 0.2 probes/s after live evidence"
        )
        # Newly scheduled probes use the stretched period.
        assert engine._idle.interval_s == 200.0
    finally:
        await engine.aclose()
    relaxed = DetectionEngine({"main": client}, DetectConfig(poll_interval_s=3600, probe_interval_s=600))
    try:
        with capture_logs() as logs:
            await relaxed.cycle()
        assert not [entry for entry in logs if entry["event"] == "detect.sweep.period"]
        assert relaxed.sweep_period_s == 600.0 and relaxed.sweep_note is None
    finally:
        await relaxed.aclose()
