"""Crash safety: a run stopped between two persisted steps resumes on restart and completes, doing each
change in CPA exactly once (issue 6: SIGKILL between verify and retire, and between disable and delete)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from reauthd.core.model import ReauthTask, TaskState
from reauthd.sim import scenarios
from reauthd.sim.auths import SimAuth
from reauthd.store.sqlite import Store
from reauthd.verify.runner import CompletionConfig, CompletionRunner
from tests.verify.verify_world import World, identity_of, relogin, utcnow

S = TaskState
CHILD = Path(__file__).with_name("crash_child.py")


class Crash(BaseException):
    """The process "dies" here: nothing after this point of the step runs."""


class CrashingStore(Store):
    crash_when: Callable[[dict[str, Any]], bool] | None = None

    def update_task_fields(self, task_id: str, now: datetime, **fields: Any) -> ReauthTask:
        task = super().update_task_fields(task_id, now, **fields)
        flow = task.details.get("completion")
        if self.crash_when is not None and isinstance(flow, dict) and self.crash_when(flow):
            self.crash_when = None
            raise Crash
        return task


POINTS: dict[str, Callable[[dict[str, Any]], bool]] = {
    "verified": lambda flow: flow.get("verification", {}).get("result") == "ok",
    "disable_sent": lambda flow: flow.get("steps", {}).get("disable_old") == "sent",
    "disabled": lambda flow: flow.get("steps", {}).get("disable_old") == "done",
    "delete_sent": lambda flow: flow.get("steps", {}).get("delete_old") == "sent",
}


def _stage(world: World) -> tuple[SimAuth, str]:
    state = world.state
    old = scenarios.add_credential(
        state, "codex", email="k@example.com", name="codex-k@example.com-plus.json"
    )
    scenarios.revoke(state, old.name, live=True)
    return old, relogin(state, identity_of(old))


def _count(world: World, method: str, suffix: str, **match: Any) -> int:
    return sum(
        1
        for op in world.mgmt_ops()
        if op["method"] == method
        and op["path"].endswith(suffix)
        and op["status"] == 200
        and all((op.get("body") or {}).get(k) == v for k, v in match.items())
    )


@pytest.mark.parametrize("point", list(POINTS))
async def test_stopped_between_persisted_steps_resumes_and_completes(world: World, point: str) -> None:
    old, new_name = _stage(world)
    path = world.tmp / "crash.db"
    with CrashingStore.open(path) as store:
        task = world.store.get_task(world.task_for(old).id)
        # Move the task into the crashing store (same schema): create it there the same way.
        world_task = _copy_task(store, task)
        store.crash_when = POINTS[point]
        runner = CompletionRunner(store, {"main": world.client}, config=_fast())
        with pytest.raises(Crash):
            await runner.advance(world_task.id, utcnow(), wait=True)
        assert store.get_task(world_task.id).state in (S.VERIFYING, S.RETIRING)

    # Restart: a new process opens the same state and a new runner continues from it.
    with Store.open(path) as store:
        runner = CompletionRunner(store, {"main": world.client}, config=_fast())
        result = await runner.advance(world_task.id, utcnow(), wait=True)
        assert result.state is S.DONE, result.history[-1].reason
        new_index = world.state.auths[new_name].auth_index
        assert old.name not in world.state.auths
        # Each change in CPA happened once; the verification was not repeated after it was recorded.
        assert _count(world, "POST", "/api-call", auth_index=new_index) == 1
        assert _count(world, "PATCH", "/auth-files/status", name=old.name) == 1
        assert _count(world, "DELETE", "/auth-files") == 1


def _copy_task(store: Store, task: ReauthTask) -> ReauthTask:
    """The same task (id, credential, lifecycle up to `verifying`) in another state file."""
    copy = store.create_task(
        cpa=task.cpa,
        auth_name=task.auth_name,
        auth_index=task.auth_index,
        provider=task.provider,
        account_masked=task.account_masked,
        reason=task.reason,
        now=task.created_at,
        deadline=task.deadline,
        task_id=task.id,
    )
    for event in task.history[1:]:
        copy = store.apply_transition(copy.id, event.to_state, event.reason, event.at)
    return copy


def _fast() -> CompletionConfig:
    return CompletionConfig(find_inline_budget_s=8, find_poll_interval_s=0.2, verify_inline_delay_s=0.05)


@pytest.mark.slow
@pytest.mark.parametrize("point", ["verified", "disabled"])
async def test_sigkill_between_steps_then_restart_completes(world: World, point: str) -> None:
    old, new_name = _stage(world)
    path = world.tmp / "killed.db"
    with Store.open(path) as store:
        task = _copy_task(store, world.store.get_task(world.task_for(old).id))

    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(CHILD), world.sim.base_url, str(path), task.id, point,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == -9, err.decode(errors="replace")[-2000:]

    with Store.open(path) as store:  # the dead process's lock is gone with it
        mid = store.get_task(task.id)
        assert mid.state in (S.VERIFYING, S.RETIRING)
        if point == "disabled":
            assert world.state.auths[old.name].disabled
        runner = CompletionRunner(store, {"main": world.client}, config=_fast())
        result = await runner.advance(task.id, utcnow(), wait=True)
        assert result.state is S.DONE, result.history[-1].reason
    assert old.name not in world.state.auths
    new_index = world.state.auths[new_name].auth_index
    assert _count(world, "POST", "/api-call", auth_index=new_index) == 1
    assert _count(world, "PATCH", "/auth-files/status", name=old.name) == 1
    assert _count(world, "DELETE", "/auth-files") == 1
