"""The idle schedule spreads probes evenly; the rate limiter holds the global rate."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from reauthd.detect.schedule import IdleSchedule, RateLimiter, spread_offset

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
    assert schedule.pop_due(T0 + timedelta(seconds=600 + 539)) == []
    assert schedule.pop_due(T0 + timedelta(seconds=600 + 661)) == [key]
    schedule.probed(key, T0)
    schedule.discard(key)
    assert schedule.next_due() is None and len(schedule) == 0


async def test_rate_limiter_holds_the_rate() -> None:
    limiter = RateLimiter(20.0)
    started = time.monotonic()
    for _ in range(40):  # 20 from the full bucket, 20 more at 20/s
        await limiter.acquire()
    elapsed = time.monotonic() - started
    assert 0.8 <= elapsed <= 2.0
