"""When to probe: the slow idle schedule (spread evenly with jitter) and the global probe rate limit."""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import random
import time
from collections.abc import Callable
from datetime import datetime, timedelta


class RateLimiter:
    """A token bucket shared by every probe: `rate_per_s` on average, bursts up to `burst`.

    The bucket starts full so the first confirming probe after an `errors` event goes out at once.
    """

    def __init__(
        self, rate_per_s: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic
    ):
        self.rate = rate_per_s
        self.capacity = max(1.0, burst if burst is not None else rate_per_s)
        self._tokens = self.capacity
        self._clock = clock
        self._updated = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    async def acquire(self) -> None:
        async with self._lock:  # FIFO: waiters are served in order
            self._refill()
            while self._tokens < 1.0:
                await asyncio.sleep((1.0 - self._tokens) / self.rate)
                self._refill()
            self._tokens -= 1.0


def spread_offset(key: str, interval_s: float) -> float:
    """A stable position in [0, interval) for a credential, so first probes spread evenly over the
    interval instead of all firing at start-up (and stay spread across restarts)."""
    digest = hashlib.sha256(key.encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return fraction * interval_s


#: (cpa name, auth_index): how detection names a credential.
K = tuple[str, str]


class IdleSchedule:
    """Per-credential next probe time in a heap; each credential is probed about once per interval."""

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
            factor = 1.0 + self._rng.uniform(-self.jitter, self.jitter)
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
