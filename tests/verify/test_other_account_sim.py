"""Issue 11: a login with a different account is not a replacement. The task goes to the operator with a
sentence naming the file CPA wrote (so it can be removed), the old file is kept, and nothing is retired."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from reauthd.core.model import TaskState
from reauthd.sim import scenarios
from reauthd.sim.credentials import Identity
from tests.verify.verify_world import World, relogin, utcnow

S = TaskState


@pytest.mark.parametrize("provider", ["claude", "codex", "xai"])
async def test_a_login_with_another_account_goes_to_the_operator_naming_its_file(
    world: World, provider: str
) -> None:
    state = world.state
    old = scenarios.add_credential(state, provider, email="alice@example.com", plan="plus")
    scenarios.revoke(state, old.name, live=True)
    task = world.task_for(old)
    other = relogin(state, Identity(provider, "mallory@example.com", account_id="acct-m", plan="plus"))
    await asyncio.sleep(1.3)  # CPA's watcher registers the new file

    runner = world.runner(other_account_settle=timedelta(0), find_inline_budget_s=1.0)
    result = await runner.advance(task.id, utcnow(), wait=True)

    assert result.state is S.AWAITING_OPERATOR, [e.reason for e in result.history]
    reason = result.history[-1].reason
    assert "used a different account" in reason and "does not replace" in reason and "saved it as" in reason
    assert ("other-account login", other, "not a replacement: remove it if unwanted") in world.audit(task.id)
    assert old.name in state.auths and other in state.auths  # nothing retired, nothing adopted
    assert result.new_auth_name is None
    assert not [op for op in world.mgmt_ops() if op.get("method") in ("DELETE", "PATCH")]


async def test_another_account_refreshing_meanwhile_does_not_hide_the_right_login(world: World) -> None:
    """The right account's file wins: another account's file written in the same window is not reported."""
    state = world.state
    old = scenarios.add_credential(state, "claude", email="alice@example.com")
    scenarios.revoke(state, old.name, live=True)
    task = world.task_for(old)
    relogin(state, Identity("claude", "bob@example.com"))
    relogin(state, Identity("claude", "alice@example.com"))
    await asyncio.sleep(1.3)

    result = await world.runner(other_account_settle=timedelta(0)).advance(task.id, utcnow(), wait=True)

    assert result.state is S.DONE, result.history[-1].reason
