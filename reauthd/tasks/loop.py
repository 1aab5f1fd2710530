"""The reconcile tick: APScheduler only wakes it; each tick reconciles tasks with the latest verdicts and
flushes due notifications from the store (level-triggered, so a missed or doubled tick changes nothing)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from reauthd.notify.outbox import FlushReport
from reauthd.tasks.service import ReconcileResult, TaskService

log = structlog.get_logger(__name__)

JOB_ID = "reauthd.tasks.tick"


@dataclass(frozen=True, slots=True)
class TickReport:
    at: datetime
    reconcile: ReconcileResult
    notifications: FlushReport


class ReconcileLoop:
    """Runs `TaskService.reconcile` + `flush_notifications` on a schedule.

    `latest` returns the latest verdicts (detection's `DetectionEngine.latest()`); `None` means "no verdicts
    this tick" (e.g. CPA unreachable): tasks are then only expired and notifications still flushed.
    """

    def __init__(
        self,
        service: TaskService,
        latest: Callable[[], Iterable[Any] | None],
        *,
        interval_s: float = 15.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.service = service
        self.latest = latest
        self.interval_s = interval_s
        self.clock = clock or (lambda: datetime.now(UTC))
        self.last: TickReport | None = None
        self._lock = asyncio.Lock()
        self._scheduler: Any = None

    async def tick(self) -> TickReport | None:
        """One reconcile + flush. Never raises: a failed tick is logged and the next one tries again."""
        async with self._lock:
            now = self.clock()
            try:
                verdicts = self.latest() or ()
                result = self.service.reconcile(verdicts, now)
                flushed = await self.service.flush_notifications(now)
            except Exception:
                log.exception("tasks.tick_failed")
                return None
            self.last = TickReport(now, result, flushed)
            return self.last

    def schedule(self, scheduler: Any) -> None:
        """Add the tick to an APScheduler 3.x `AsyncIOScheduler` (in-memory job store).

        `coalesce` + `misfire_grace_time`: after a suspended host wakes up, the missed runs collapse into
        one tick instead of a burst; `max_instances=1`: a slow tick is never overlapped by the next one.
        """
        scheduler.add_job(
            self.tick,
            "interval",
            seconds=self.interval_s,
            id=JOB_ID,
            replace_existing=True,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=max(1, int(self.interval_s * 4)),
            next_run_time=datetime.now(UTC),  # APScheduler's own clock: the first tick right away
        )
        self._scheduler = scheduler

    def wake(self) -> None:
        """Run the next tick now (e.g. right after detection confirmed a revocation)."""
        if self._scheduler is not None:
            job = self._scheduler.get_job(JOB_ID)
            if job is not None:
                job.modify(next_run_time=datetime.now(UTC))
