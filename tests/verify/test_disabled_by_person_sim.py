"""A same-name re-login re-enables a file a person had disabled (CPA forces `disabled: false`, contract §4.4):
reauthd records the person's choice before the login can change it, and tells the operator at the end."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from reauthd.core.model import ReauthTask, TaskState
from reauthd.login.flow import LoginFlow
from reauthd.sim import scenarios
from reauthd.sim.auths import SimAuth
from reauthd.verify.flow import DETAILS_KEY
from tests.verify.verify_world import World, identity_of, relogin, utcnow

S = TaskState


def _task(world: World, old: SimAuth) -> ReauthTask:
    now = utcnow()
    return world.store.create_task(
        cpa="main", auth_name=old.name, auth_index=old.auth_index, provider=old.provider,
        account_masked="d***@example.com", reason="revoked", now=now, deadline=now + timedelta(days=1),
    )  # fmt: skip


async def _reloaded(world: World, name: str) -> None:
    # CPA's watcher registers the re-login about a second after the save: only then does the listing
    # show the file enabled again. Verification usually starts after that (get-auth-status is polled
    # every 2.5 s), which is why the person's choice has to be recorded when the login is minted.
    for _ in range(100):
        if not world.state.auths[name].disabled:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} was not reloaded")


async def _login_then_verify_late(world: World, task: ReauthTask, old: SimAuth) -> ReauthTask:
    """Start the login through the real login flow, let CPA save and reload the same-name file, then
    hand the task to verification, as the login flow does once get-auth-status says ok."""
    runner = world.runner()
    login = LoginFlow(
        world.store, {"main": world.client}, clock=utcnow, completion=runner, poll_interval_s=30
    )
    try:
        assert await login.start(task.id, utcnow()) is None
        recorded = world.store.get_task(task.id)
        relogin(world.state, identity_of(old))
        await _reloaded(world, old.name)
        world.store.apply_transition(task.id, S.VERIFYING, "The proxy server saved the new login.", utcnow())
    finally:
        await login.aclose()
    result = await runner.advance(task.id, utcnow(), wait=True)
    assert result.state is S.DONE, result.history[-1].reason
    return recorded


async def test_a_person_disabled_file_is_recorded_at_login_start_and_the_operator_told(world: World) -> None:
    old = scenarios.add_credential(world.state, "claude", email="d@example.com")
    scenarios.revoke(world.state, old.name, live=True)
    task = _task(world, old)
    # The person takes the broken file out of routing in the management panel meanwhile.
    await world.client.set_disabled(old.name, True, auth_index=old.auth_index)

    recorded = await _login_then_verify_late(world, task, old)

    assert recorded.disabled_by_person  # looked at before the link reached the person
    result = world.store.get_task(task.id)
    assert result.disabled_by_person
    assert "had been disabled by a person" in result.history[-1].reason
    assert "re-enables" in result.history[-1].reason
    assert world.state.auths[old.name].disabled is False  # CPA's doing (§4.4); reauthd did not re-disable it


async def test_an_enabled_file_is_not_reported(world: World) -> None:
    old = scenarios.add_credential(world.state, "claude", email="e@example.com")
    scenarios.revoke(world.state, old.name, live=True)
    task = _task(world, old)

    await _login_then_verify_late(world, task, old)

    result = world.store.get_task(task.id)
    assert not result.disabled_by_person
    assert "disabled by a person" not in result.history[-1].reason


async def test_a_file_reauthd_itself_left_disabled_is_not_a_persons_doing(world: World) -> None:
    old = scenarios.add_credential(world.state, "claude", email="r@example.com")
    # An earlier reauthd run retired this very file with policy "disable" (disabled, not deleted).
    earlier = _task(world, old)
    retired = {"attempt": "a", "we_disabled": True, "steps": {"copy_settings": "done", "disable_old": "done"}}
    world.store.apply_transition(
        earlier.id, S.DONE, "retired", utcnow(), details={DETAILS_KEY: retired}, disabled_by_person=False
    )
    await world.client.set_disabled(old.name, True, auth_index=old.auth_index)
    task = _task(world, old)

    await _login_then_verify_late(world, task, old)

    result = world.store.get_task(task.id)
    assert not result.disabled_by_person
    assert "disabled by a person" not in result.history[-1].reason
