"""The reconcile tick under a real APScheduler AsyncIOScheduler."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from apprise.decorators import notify as apprise_plugin
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from reauthd.config import Settings
from reauthd.core.model import Credential, TaskState, Verdict, VerdictKind
from reauthd.store import Store
from reauthd.tasks import TaskService
from reauthd.tasks.loop import JOB_ID, ReconcileLoop

SEEN: list[str] = []


@apprise_plugin(on="reauthdloop")
def _channel(body: str, title: str, *args: Any, **kwargs: Any) -> bool:
    SEEN.append(title)
    return True


def settings_for(tmp_path: Path) -> Settings:
    return Settings(
        state={"path": tmp_path / "state.db"},
        cpa=[{"name": "main", "base_url": "http://127.0.0.1:9", "management_key": "k" * 16}],
        notify={"urls": ["reauthdloop://x"], "group_window_s": 0},
    )


CRED = Credential(
    cpa="main", name="a.json", auth_index="i", provider="codex", status="error", email="a@b.org"
)
NEEDS = Verdict(VerdictKind.NEEDS_REAUTH, "revoked", confirmed=True)


async def test_scheduled_ticks_raise_and_notify_once(tmp_path: Path) -> None:
    SEEN.clear()
    settings = settings_for(tmp_path)
    store = Store.open(settings.state.path)
    loop = ReconcileLoop(TaskService(store, settings), lambda: [(CRED, NEEDS)], interval_s=0.1)
    scheduler = AsyncIOScheduler(timezone=UTC)
    loop.schedule(scheduler)
    job = scheduler.get_job(JOB_ID)
    assert job.coalesce is True and job.max_instances == 1 and job.misfire_grace_time >= 1
    scheduler.start()
    try:
        for _ in range(100):
            await asyncio.sleep(0.05)
            if loop.last is not None and SEEN:
                break
        await asyncio.sleep(0.3)  # several more ticks
    finally:
        scheduler.shutdown(wait=False)
    (task,) = store.list_tasks()
    assert task.state is TaskState.NOTIFIED
    assert SEEN == ["Log in again: a***@b.org (codex on main)"]
    store.close()


async def test_a_failing_tick_is_logged_not_raised(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    store = Store.open(settings.state.path)

    def broken() -> list[Any]:
        raise RuntimeError("detection blew up")

    loop = ReconcileLoop(
        TaskService(store, settings), broken, clock=lambda: datetime(2026, 11, 27, tzinfo=UTC)
    )
    assert await loop.tick() is None
    ok = ReconcileLoop(
        TaskService(store, settings), lambda: None, clock=lambda: datetime(2026, 11, 27, tzinfo=UTC)
    )
    report = await ok.tick()
    assert report is not None and not report.reconcile.changed
    store.close()


async def test_wake_runs_the_next_tick_now(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    store = Store.open(settings.state.path)
    calls: list[int] = []

    def latest() -> list[Any]:
        calls.append(1)
        return []

    loop = ReconcileLoop(TaskService(store, settings), latest, interval_s=3600)
    scheduler = AsyncIOScheduler(timezone=UTC)
    loop.schedule(scheduler)
    scheduler.start()
    try:
        for _ in range(40):
            await asyncio.sleep(0.05)
            if calls:
                break
        first = len(calls)
        loop.wake()
        for _ in range(40):
            await asyncio.sleep(0.05)
            if len(calls) > first:
                break
    finally:
        scheduler.shutdown(wait=False)
    assert first == 1 and len(calls) == 2
    store.close()
