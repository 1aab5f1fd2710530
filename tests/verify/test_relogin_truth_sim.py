"""What CPA really shows after a re-login (contract §13), end to end against the simulator: detection, tasks
and verification together. `last_refresh` is runtime state: copied by an in-place re-login, absent after a
restart; a file written proves nothing until a request with it succeeded."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reauthd.core.model import ReauthTask, TaskState
from reauthd.detect.engine import DetectionEngine
from reauthd.sim import scenarios
from reauthd.sim.auths import SimAuth
from reauthd.tasks.service import TaskService
from tests.tasks.test_service import SENT, settings_for
from tests.verify.verify_world import World, identity_of, relogin, utcnow

S = TaskState


class Desk:
    """The daemon's detection → reconcile → login-elsewhere steps, one call per poll."""

    def __init__(self, world: World, tmp_path: Path) -> None:
        self.world = world
        self.service = TaskService(world.store, settings_for(tmp_path))
        self.engine = DetectionEngine({"main": world.client}, clock=lambda: datetime.now(UTC))

    async def poll(self, times: int = 1) -> None:
        for _ in range(times):
            await self.engine.cycle()
            now = datetime.now(UTC)
            self.service.reconcile_from(
                lambda w: self.engine.latest_unhealthy_and(w.auth_indexes, w.unindexed_names), now
            )
            self.service.adopt_panel_logins(self.engine.listed_credentials(), now)

    async def raised_for(self, auth: SimAuth) -> ReauthTask:
        scenarios.revoke(self.world.state, auth.name, live=True)
        await self.poll(3)
        task = self.world.store.find_open_task("main", auth.auth_index, auth.name)
        assert task is not None, "the revocation raised no task"
        return task

    async def messages(self) -> list[str]:
        await self.service.flush_notifications(datetime.now(UTC) + timedelta(hours=1))
        return [str(m["title"]) for m in SENT]


@pytest.fixture
async def desk(world: World, tmp_path: Path) -> AsyncIterator[Desk]:
    SENT.clear()
    d = Desk(world, tmp_path)
    try:
        yield d
    finally:
        await d.engine.aclose()


def person_logs_in(world: World, task: ReauthTask) -> None:
    """The page's steps up to verification (what task_for does for a fresh task)."""
    now = utcnow()
    for i, state in enumerate((S.OPENED, S.LOGIN_STARTED, S.CALLBACK_RECEIVED, S.VERIFYING)):
        current = world.store.get_task(task.id, with_history=False).state
        if current is not state:
            world.store.apply_transition(
                task.id, state, f"step {state.value}", now + timedelta(milliseconds=i)
            )


@pytest.mark.parametrize("provider", ["claude", "codex"])
async def test_refresh_then_in_place_relogin_is_verified_within_a_minute(world: World, provider: str) -> None:
    """Issue 10 (2): CPA refreshed the old token 65 s before the login; the re-login's reload copies that
    older `last_refresh` (service_auth.go). Reauthd used to wait for a newer one until find_timeout."""
    state = world.state
    old = scenarios.add_credential(state, provider, email="r@example.com", plan="plus", account_id="acc-r")
    state.auto_refresh(old.name)
    refreshed = utcnow() - timedelta(seconds=65)
    state.auths[old.name].last_refreshed_at = refreshed  # that refresh happened 65 s before the login
    state.auths[old.name].touch()
    scenarios.revoke(state, old.name, live=True)
    task = world.task_for(old)
    assert relogin(state, identity_of(old)) == old.name
    started = time.monotonic()

    result = await world.runner(find_inline_budget_s=60.0).advance(task.id, utcnow(), wait=True)

    assert result.state is S.DONE, result.history[-1].reason
    assert time.monotonic() - started < 60
    assert state.auths[old.name].last_refreshed_at == refreshed  # the premise: the reload copied it
    assert state.auths[old.name].status == "active"
    assert "verify-probe" in [a for a, _, _ in world.audit(task.id)]
    assert not [op for op in world.mgmt_ops() if op["method"] == "DELETE"]  # same file: nothing to retire


async def test_a_refused_login_keeps_the_task_open_and_says_nothing_resolved(
    world: World, desk: Desk
) -> None:
    """Issue 10 (3): the provider refuses the new token. The task stays open (the link still works, the
    person may start again), the old file is not touched, and no "Resolved" follows, however many polls."""
    state = world.state
    old = scenarios.add_credential(state, "claude", email="x@example.com")
    await desk.poll()
    task = await desk.raised_for(old)
    assert len(await desk.messages()) == 1
    person_logs_in(world, task)
    relogin(state, identity_of(old))
    new_token = state.disk[old.name].content["access_token"]
    state.upstream.access[new_token].probe_override = (401, '{"error":{"message":"nope"}}')

    refused = await world.runner().advance(task.id, utcnow(), wait=True)
    assert refused.state is S.OPENED and "did not work" in refused.history[-1].reason
    written = json.dumps(state.disk[old.name].content, sort_keys=True)

    await desk.poll(3)  # the reloaded file lists `active`, written after the task: not "works again"

    assert world.store.get_task(task.id).state is S.OPENED
    assert not [t for t in await desk.messages() if t.startswith("Resolved")]
    assert json.dumps(state.disk[old.name].content, sort_keys=True) == written
    assert not [op for op in world.mgmt_ops() if op["method"] in ("PATCH", "DELETE")]
    again = world.store.apply_transition(task.id, S.LOGIN_STARTED, "start again", utcnow())
    assert again.state is S.LOGIN_STARTED


async def test_relogin_then_revoked_again_is_a_new_task_and_message(world: World, desk: Desk) -> None:
    """Issue 10 (3): the in-place re-login keeps `last_refresh` (copied), so an event id built on it named
    the second failure like the first one and nobody was told."""
    state = world.state
    old = scenarios.add_credential(state, "claude", email="y@example.com")
    state.auto_refresh(old.name)
    await desk.poll()
    first = await desk.raised_for(old)
    person_logs_in(world, first)
    relogin(state, identity_of(old))
    done = await world.runner().advance(first.id, utcnow(), wait=True)
    assert done.state is S.DONE, done.history[-1].reason
    await desk.poll()
    told = len(await desk.messages())

    second = await desk.raised_for(state.auths[old.name])

    assert second.id != first.id
    titles = await desk.messages()
    assert len(titles) == told + 1 and not titles[-1].startswith("Resolved")


async def test_a_panel_login_in_place_is_tested_then_done(world: World, desk: Desk) -> None:
    """Someone logs in again through another tool, same file: the reload (active, empty message, written
    after the task) hands the task to verification; only the probe that the provider accepts closes it."""
    state = world.state
    old = scenarios.add_credential(state, "codex", email="p@example.com", plan="plus", account_id="acc-p")
    state.auto_refresh(old.name)
    await desk.poll()
    task = await desk.raised_for(old)
    relogin(state, identity_of(old))
    await asyncio.sleep(1.2)  # CPA's watcher reloads the file
    await desk.poll()
    assert world.store.get_task(task.id).state is S.VERIFYING
    done = await world.runner().advance(task.id, utcnow(), wait=True)
    assert done.state is S.DONE, done.history[-1].reason
    assert "verify-probe" in [a for a, _, _ in world.audit(task.id)]


async def test_an_edit_of_the_failed_file_is_tested_quietly_and_the_task_waits_on(
    world: World, desk: Desk
) -> None:
    """An operator's edit of the failed file (here a note through the management API; a disable and enable
    does the same) makes CPA rewrite and reload it: listed `active`, empty message, written after the task,
    exactly like a login in place. It is tested; the provider refuses the old token, and since nobody used
    reauthd's page, nobody hears "your new login did not work": the task waits where it waited, no refusal
    is counted, and the same write is never tested again."""
    state = world.state
    old = scenarios.add_credential(state, "codex", email="e@example.com", plan="plus", account_id="acc-e")
    await desk.poll()
    task = await desk.raised_for(old)
    told = len(await desk.messages())
    waited_in = world.store.get_task(task.id).state
    assert waited_in is S.NOTIFIED
    await world.client.patch_fields(old.name, {"note": "looked at by ops"})
    await asyncio.sleep(1.2)  # CPA's watcher reloads the file
    await desk.poll()
    assert world.store.get_task(task.id).state is S.VERIFYING

    tested = await world.runner().advance(task.id, utcnow(), wait=True)

    assert tested.state is waited_in, tested.history[-1].reason
    assert "outside reauthd" in tested.history[-1].reason
    assert "refused_logins" not in tested.details
    assert len(await desk.messages()) == told  # no "did not work", no "Resolved"
    await desk.poll(2)
    assert world.store.get_task(task.id).state is waited_in  # the same write is not handed over again
    assert not [op for op in world.mgmt_ops() if op["method"] == "DELETE"]
