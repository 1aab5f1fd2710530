"""When to probe: the slow idle schedule (spread evenly with jitter), the global probe rate limit, and the
gate that gives probes confirming live evidence priority over the idle sweep."""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import random
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta

#: The share of `probe_rate_per_s` the idle sweep plans with. Live probes always go first (`ProbeGate`);
#: planning the sweep below the full rate keeps it from building a backlog whenever they take some.
SWEEP_SHARE = 0.8


class ProbeGate:
    """Concurrency slots and the probe rate shared by every probe, in two priorities (issue 12).

    An *urgent* probe confirms live evidence (an `errors` event, a fresh failure in the listing, an
    operator's `scan --probe`); an *idle* probe is the slow sweep. Urgent waiters are always served before
    idle ones, whenever they arrived, and the sweep never takes the last slot or the last token: an urgent
    probe waits at most for a probe already on the wire, never behind a queue of idle ones. The sweep gets
    what is left of `rate_per_s` (all of it while nothing is urgent).

    Grants are decided synchronously in `_dispatch`, so no waiter can overtake another of its class
    (FIFO within a class) and a cancelled waiter never takes a slot or a token with it.
    """

    def __init__(
        self, rate_per_s: float, concurrency: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate_per_s
        # One token is the reserve for urgent probes: idle ones only take a token above it.
        self.capacity = max(2.0, rate_per_s)
        self._tokens = self.capacity
        self._clock = clock
        self._updated = clock()
        self._free = concurrency
        # One slot is kept for urgent probes when there is more than one.
        self._idle_max = max(1, concurrency - 1)
        self._idle_running = 0
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._idle: deque[asyncio.Future[None]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def idle_waiting(self) -> int:
        return sum(1 for f in self._idle if not f.done())

    @property
    def idle_running(self) -> int:
        return self._idle_running

    async def acquire(self, *, urgent: bool) -> None:
        """Wait for a slot and a token; pair every successful acquire with one `release(urgent=...)`."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        (self._urgent if urgent else self._idle).append(future)
        self._dispatch()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(urgent=urgent)  # granted just as it was cancelled: give it back
            else:
                future.cancel()
                self._dispatch()
            raise

    def release(self, *, urgent: bool) -> None:
        self._free += 1
        if not urgent:
            self._idle_running -= 1
        self._dispatch()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    @staticmethod
    def _head(queue: deque[asyncio.Future[None]]) -> asyncio.Future[None] | None:
        while queue and queue[0].done():  # cancelled waiters
            queue.popleft()
        return queue[0] if queue else None

    def _dispatch(self) -> None:
        self._refill()
        while self._free > 0:
            urgent = self._head(self._urgent)
            if urgent is not None:
                if self._tokens < 1.0:
                    break
                self._urgent.popleft()
                self._grant(urgent)
                continue
            idle = self._head(self._idle)
            if idle is None or self._idle_running >= self._idle_max or self._tokens < 2.0:
                break
            self._idle.popleft()
            self._idle_running += 1
            self._grant(idle)
        self._arm_timer()

    def _grant(self, future: asyncio.Future[None]) -> None:
        self._free -= 1
        self._tokens -= 1.0
        future.set_result(None)

    def _arm_timer(self) -> None:
        """Wake up when the tokens the first blocked waiter needs have dripped in."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._free <= 0:
            return  # a release dispatches again
        if self._head(self._urgent) is not None:
            needed = 1.0
        elif self._head(self._idle) is not None and self._idle_running < self._idle_max:
            needed = 2.0
        else:
            return
        delay = max(0.0, (needed - self._tokens) / self.rate)
        self._timer = asyncio.get_running_loop().call_later(delay + 0.001, self._dispatch)


def sweep_period(credentials: int, interval_s: float, rate_per_s: float) -> float:
    """The idle sweep's effective period: the configured interval, stretched when `credentials` probes
    per interval would need more than the sweep's share of the probe rate (`SWEEP_SHARE`)."""
    return max(interval_s, credentials / (rate_per_s * SWEEP_SHARE))


def human_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def sweep_warning(credentials: int, interval_s: float, rate_per_s: float) -> str | None:
    """One sentence when `probe_interval_s` cannot be kept for `credentials` (`check-config`), else None."""
    period = sweep_period(credentials, interval_s, rate_per_s)
    if period <= interval_s:
        return None
    share = rate_per_s * SWEEP_SHARE
    return (
        f"[detect] probe_interval_s = {interval_s:g} cannot be kept for {credentials:,} credentials: "
        f"probe_rate_per_s = {rate_per_s:g} leaves the idle sweep {share:g} probes/s, so each credential "
        f"would be probed about every {human_duration(period)} (at most {int(share * interval_s):,} "
        f"credentials fit {human_duration(interval_s)}); reauthd stretches the sweep and says so in "
        f"/readyz, or raise probe_rate_per_s to {credentials / interval_s / SWEEP_SHARE:.2g} or "
        f"probe_interval_s to {period:.0f}"
    )


def spread_offset(key: str, interval_s: float) -> float:
    """A stable position in [0, interval) for a credential, so first probes spread evenly over the
    interval instead of all firing at start-up (and stay spread across restarts)."""
    digest = hashlib.sha256(key.encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return fraction * interval_s


#: (cpa name, auth_index): how detection names a credential.
K = tuple[str, str]


class IdleSchedule:
    """Per-credential next probe time in a heap; each credential is probed about once per interval.

    `interval_s` is the effective sweep period (the engine stretches it when the rate cannot keep up);
    jitter only lengthens it (up to `jitter` more), so a credential is never probed more often than once
    per interval: the default 6 h are at most 4 idle probes per credential per day."""

    def __init__(self, interval_s: float, *, jitter: float = 0.1, rng: random.Random | None = None) -> None:
        self.interval_s = interval_s
        self.jitter = jitter
        self._rng = rng or random.Random()
        self._known: set[K] = set()
        self._due: dict[K, datetime] = {}
        self._heap: list[tuple[datetime, int, K]] = []
        self._counter = 0

    def __len__(self) -> int:
        return len(self._known)

    def _push(self, key: K, when: datetime) -> None:
        self._due[key] = when
        self._counter += 1
        heapq.heappush(self._heap, (when, self._counter, key))

    def add(self, key: K, stable_name: str, now: datetime) -> None:
        """Schedule a newly seen credential at its spread position within the next interval."""
        if key not in self._known:
            self._known.add(key)
            self._push(key, now + timedelta(seconds=spread_offset(stable_name, self.interval_s)))

    def probed(self, key: K, now: datetime) -> None:
        """Any probe (confirming or idle) resets the clock: next one about one interval later."""
        if key in self._known:
            factor = 1.0 + self._rng.uniform(0.0, self.jitter)
            self._push(key, now + timedelta(seconds=self.interval_s * factor))

    def discard(self, key: K) -> None:
        self._known.discard(key)
        self._due.pop(key, None)  # the heap entry is skipped lazily

    def next_due(self) -> datetime | None:
        while self._heap:
            when, _, key = self._heap[0]
            if self._due.get(key) == when:
                return when
            heapq.heappop(self._heap)
        return None

    def pop_due(self, now: datetime, limit: int | None = None) -> list[K]:
        due: list[K] = []
        while self._heap and (limit is None or len(due) < limit):
            when, _, key = self._heap[0]
            if self._due.get(key) != when:
                heapq.heappop(self._heap)
                continue
            if when > now:
                break
            heapq.heappop(self._heap)
            del self._due[key]
            due.append(key)
        return due

    def reschedule(self, key: K, now: datetime) -> None:
        """Put a popped key back one interval later (used when its probe could not run)."""
        if key in self._known:
            self._push(key, now + timedelta(seconds=self.interval_s))
