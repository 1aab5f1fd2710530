"""Detection and tasks together against the simulator: a CPA restart lists every file auth `active` again
(contract §2.2), the revoked ones too, and none has `last_refresh` (§13). That must not close an open task
as done nor page again; a new login hands the task to verification."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from reauthd.core.model import TaskState, VerdictKind
from reauthd.cpa.client import CPAClient
from reauthd.detect.engine import DetectionEngine
from reauthd.sim import SimServer, scenarios
from reauthd.store import Store
from reauthd.tasks.service import TaskService
from tests.tasks.test_service import settings_for
from tests.verify.verify_world import relogin

KEY = "sim-key-restart-0123"


async def test_a_cpa_restart_does_not_close_the_task_but_a_new_login_does(tmp_path: Path) -> None:
    async with (
        SimServer(KEY, watcher_delay=0.05) as sim,
        CPAClient("main", sim.base_url, KEY, timeout=10) as client,
    ):
        victim = scenarios.add_credential(sim.state, "codex", email="bob@example.com")
        store = Store.open(tmp_path / "state.db")
        service = TaskService(store, settings_for(tmp_path))
        engine = DetectionEngine({"main": client}, clock=lambda: datetime.now(UTC))

        def reconcile() -> None:
            service.reconcile_from(
                lambda w: engine.latest_unhealthy_and(w.auth_indexes, w.unindexed_names), datetime.now(UTC)
            )

        try:
            sim.state.auto_refresh(victim.name)  # CPA refreshed it once: the listing has a last_refresh
            await engine.cycle()
            scenarios.revoke(sim.state, victim.name, live=True)
            for _ in range(3):
                await engine.cycle()
                reconcile()
            task = store.find_open_task("main", victim.auth_index, victim.name)
            assert task is not None, "the revocation raised no task"
            events = engine.confirmed.qsize()

            sim.state.restart()
            assert sim.state.auths[victim.name].last_refreshed_at is None
            for _ in range(3):
                await engine.cycle()
                reconcile()
                assert not service.adopt_panel_logins(engine.listed_credentials(), datetime.now(UTC))
            latest = engine.verdict_for("main", victim.auth_index)
            assert latest is not None and latest.verdict.kind is VerdictKind.HEALTHY  # "CPA lists it active"
            assert store.get_task(task.id).state is TaskState.OPEN
            # ... and nothing pages: no new confirmed event, no second task
            assert engine.confirmed.qsize() == events
            assert [t.id for t in store.list_tasks()] == [task.id]

            # Someone logs in again through a panel: the same file is rewritten and reloaded (§13: active,
            # empty message, last_refresh as before). That alone closes nothing (a login the provider
            # refuses looks the same): the task goes to verification, which tests the credential.
            relogin(sim.state, scenarios.identity_of(sim.state, victim.name), name=victim.name)
            await asyncio.sleep(0.3)  # the watcher registers the rewritten file
            for _ in range(2):
                await engine.cycle()
                reconcile()
            assert store.get_task(task.id).state is TaskState.OPEN
            assert service.adopt_panel_logins(engine.listed_credentials(), datetime.now(UTC)) == [task.id]
            assert store.get_task(task.id).state is TaskState.VERIFYING
        finally:
            await engine.aclose()
            store.close()
