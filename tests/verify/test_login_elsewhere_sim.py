"""An account re-logged through another tool (a panel) under a new file name: a legacy Codex name gets the
account hash on its next login (contract §4.4), so the old revoked file stays in `error` next to the new
one. The open task takes that file, tests it, and only then retires the old one."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from reauthd.core.model import Credential, TaskState
from reauthd.sim import scenarios
from reauthd.tasks.service import TaskService
from tests.tasks.test_service import settings_for
from tests.verify.verify_world import World, identity_of, relogin, utcnow

S = TaskState
LEGACY = "codex-bob@example.com-plus.json"


async def listed(world: World) -> list[Credential]:
    """CPA's listing as detection hands it to the daemon's reconcile."""
    return [entry.to_credential("main") for entry in await world.client.list_auth_files()]


async def test_a_panel_login_under_a_new_name_is_verified_then_the_old_file_retired(world: World) -> None:
    state = world.state
    old = scenarios.add_credential(state, "codex", email="bob@example.com", plan="plus", name=LEGACY)
    scenarios.revoke(state, old.name, live=True)
    now = utcnow()
    task = world.store.create_task(
        cpa="main",
        auth_name=old.name,
        auth_index=old.auth_index,
        provider="codex",
        account_masked="b***@example.com",
        reason="Codex says the sign-in was invalidated",
        now=now - timedelta(hours=1),
        deadline=now + timedelta(days=6),
    )
    world.store.apply_transition(task.id, S.NOTIFIED, "notified", now - timedelta(minutes=59))
    service = TaskService(world.store, settings_for(world.tmp))

    # Nothing new in CPA yet: the task keeps waiting for its person.
    assert service.adopt_panel_logins(await listed(world), utcnow()) == []

    new_name = relogin(state, identity_of(old))  # what a panel's login makes CPA save
    assert new_name != LEGACY and new_name.startswith("codex-")
    await asyncio.sleep(1.3)  # CPA's watcher registers the new file
    listing = await listed(world)
    assert service.adopt_panel_logins(listing, utcnow()) == [task.id]
    handed = world.store.get_task(task.id)
    assert handed.state is S.VERIFYING and handed.new_auth_name == new_name
    assert "through another tool" in handed.history[-1].reason
    assert service.adopt_panel_logins(listing, utcnow()) == []  # once

    result = await world.runner().advance(task.id, utcnow(), wait=True)

    assert result.state is S.DONE, result.history[-1].reason
    assert old.name not in state.auths and new_name in state.auths
    actions = [action for action, _, _ in world.audit(task.id)]
    assert actions[0] == "verify-probe" and actions[-1] == "delete", actions  # make before break


async def test_a_login_of_ours_in_progress_is_left_alone(world: World) -> None:
    state = world.state
    old = scenarios.add_credential(state, "codex", email="bob@example.com", plan="plus", name=LEGACY)
    scenarios.revoke(state, old.name, live=True)
    task = world.task_for(old, to=S.LOGIN_STARTED)
    relogin(state, identity_of(old))
    await asyncio.sleep(1.3)
    service = TaskService(world.store, settings_for(world.tmp))
    assert service.adopt_panel_logins(await listed(world), utcnow()) == []
    assert world.store.get_task(task.id).state is S.LOGIN_STARTED
