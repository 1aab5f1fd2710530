"""The idle schedule spreads probes evenly; the rate limiter holds the global rate; the probe gate serves
probes confirming live evidence before the idle sweep; the sweep stretches to fit the rate."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from reauthd.detect.schedule import (
    SWEEP_SHARE,
    IdleSchedule,
    ProbeGate,
    spread_offset,
    sweep_period,
)

T0 = datetime(2026, 11, 27, tzinfo=UTC)


def test_first_probes_spread_evenly_over_the_interval() -> None:
    interval = 6 * 3600.0
    schedule = IdleSchedule(interval)
    for i in range(6000):
        schedule.add(("main", f"{i:016x}"), f"main/{i:016x}", T0)
    per_hour = [len(schedule.pop_due(T0 + timedelta(hours=h + 1))) for h in range(6)]
    assert sum(per_hour) == 6000
    assert all(900 <= n <= 1100 for n in per_hour), per_hour
    assert spread_offset("main/x", interval) == spread_offset("main/x", interval)  # stable across restarts


def test_probed_credentials_come_back_about_one_interval_later() -> None:
    schedule = IdleSchedule(600.0, jitter=0.1)
    key = ("main", "a" * 16)
    schedule.add(key, "main/a", T0)
    assert schedule.pop_due(T0 + timedelta(seconds=600)) == [key]
    assert schedule.pop_due(T0 + timedelta(seconds=6000)) == []  # not rescheduled until probed
    schedule.probed(key, T0 + timedelta(seconds=600))
    # Jitter only lengthens the interval: never sooner than one interval (≤ 4 idle probes a day at 6 h).
    assert schedule.pop_due(T0 + timedelta(seconds=600 + 599)) == []
    assert schedule.pop_due(T0 + timedelta(seconds=600 + 661)) == [key]
    schedule.probed(key, T0)
    schedule.discard(key)
    assert schedule.next_due() is None and len(schedule) == 0


async def test_probe_gate_holds_the_rate() -> None:
    gate = ProbeGate(20.0, 64)
    started = time.monotonic()
    for _ in range(40):  # 20 from the full bucket, 20 more at 20/s
        await gate.acquire(urgent=True)
        gate.release(urgent=True)
    elapsed = time.monotonic() - started
    assert 0.8 <= elapsed <= 2.0


def test_jitter_never_brings_an_idle_probe_sooner_than_one_interval() -> None:
    """The default 6 h interval means at most 4 idle probes per credential per day, jitter included."""
    schedule = IdleSchedule(6 * 3600.0)
    keys = [("main", f"{i:016x}") for i in range(500)]
    for key in keys:
        schedule.add(key, f"main/{key[1]}", T0)
        schedule.probed(key, T0)
    assert schedule.pop_due(T0 + timedelta(hours=6) - timedelta(seconds=1)) == []
    assert len(schedule.pop_due(T0 + timedelta(hours=6.6))) == 500


def test_sweep_period_stretches_only_when_the_rate_cannot_keep_up() -> None:
    six_hours = 6 * 3600.0
    assert sweep_period(10_000, six_hours, 2.0) == six_hours
    # 50,000 per 6 h would need 2.3 probes/s; the sweep has 80 % of 2/s.
    assert sweep_period(50_000, six_hours, 2.0) == 50_000 / (2.0 * SWEEP_SHARE)
    assert sweep_period(100_000, six_hours, 2.0) / 3600 > 17


async def _hold(gate: ProbeGate, urgent: bool, order: list[str], name: str, hold_s: float) -> None:
    await gate.acquire(urgent=urgent)
    order.append(name)
    try:
        await asyncio.sleep(hold_s)
    finally:
        gate.release(urgent=urgent)


async def test_gate_serves_urgent_probes_before_a_queue_of_idle_ones() -> None:
    """A long queue of idle probes is waiting for the rate; urgent probes that arrive later still go
    next (a FIFO limiter would put them behind the ~10 idle ones still waiting: 2 s at 5/s)."""
    gate = ProbeGate(5.0, 4)
    order: list[str] = []
    idle = [asyncio.create_task(_hold(gate, False, order, f"idle{i}", 0.01)) for i in range(15)]
    await asyncio.sleep(0.15)  # a few idle probes went out; the rest wait for tokens
    started = time.monotonic()
    urgent = [asyncio.create_task(_hold(gate, True, order, f"urgent{i}", 0.01)) for i in range(3)]
    await asyncio.gather(*urgent)
    waited = time.monotonic() - started
    await asyncio.gather(*idle)
    first_urgent = order.index("urgent0")
    assert all(order.index(f"urgent{i}") == first_urgent + i for i in range(3)), order
    assert first_urgent < 8, order  # only the idle probes granted before the urgent ones arrived
    assert waited < 1.0, waited


async def test_idle_probes_never_take_the_last_slot_or_the_last_token() -> None:
    gate = ProbeGate(1.0, 2)
    order: list[str] = []
    idle = [asyncio.create_task(_hold(gate, False, order, f"idle{i}", 0.5)) for i in range(2)]
    await asyncio.sleep(0.05)
    assert order == ["idle0"]  # the second idle probe waits: one slot and one token stay for live work
    started = time.monotonic()
    await _hold(gate, True, order, "urgent", 0.0)
    assert time.monotonic() - started < 0.1
    for task in idle:
        task.cancel()
    await asyncio.gather(*idle, return_exceptions=True)


async def test_a_cancelled_waiter_gives_back_nothing_it_did_not_get() -> None:
    gate = ProbeGate(50.0, 1)
    order: list[str] = []
    holder = asyncio.create_task(_hold(gate, True, order, "holder", 0.1))
    await asyncio.sleep(0.01)
    waiting = asyncio.create_task(gate.acquire(urgent=True))
    await asyncio.sleep(0.01)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    await holder
    await asyncio.wait_for(_hold(gate, True, order, "next", 0.0), 1.0)  # the one slot is free again
    assert order == ["holder", "next"]
