"""The daemon's ticks, CPA's watcher lag (contract §12), the bounded wait, a refused management key, and
secrets that must never leave their box."""

from __future__ import annotations

import asyncio
import json
import logging
import posixpath
import re
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from reauthd.core.identity import SAME_NAME_SETTLE
from reauthd.core.model import TaskState
from reauthd.cpa.client import CPAClient
from reauthd.cpa.wire import RetryPolicy
from reauthd.sim import SimServer, scenarios
from reauthd.sim.credentials import service_account
from reauthd.store.sqlite import Store
from reauthd.verify.public_api import PublicAPI, PublicAPIUnreachable
from reauthd.verify.runner import CompletionConfig, CompletionRunner
from tests.verify.verify_world import World, identity_of, relogin, utcnow, vertex_relogin

S = TaskState


async def test_no_probe_and_no_patch_before_cpa_reloaded_a_same_name_file(world: World) -> None:
    state = world.state
    old = scenarios.add_credential(state, "claude", email="w@example.com")
    scenarios.revoke(state, old.name, live=True)
    task = world.task_for(old)
    relogin(state, identity_of(old))  # written on disk; the watcher loads it about a second later
    runner = world.runner()

    first = await runner.advance_all(utcnow())  # the daemon's tick: look once, do not wait

    assert [(t.id, t.state) for t in first] == [(task.id, S.VERIFYING)]
    # the raw record CPA registers at once has no status yet (§13), then the watcher reloads the file
    assert re.search(r"watcher|visible in CPA yet", first[0].details["completion"]["last_error"])
    assert not [op for op in world.mgmt_ops() if op["path"].endswith(("/api-call", "/fields", "/status"))]

    await asyncio.sleep(1.3)
    # reloaded (active, empty message); last_refresh tells nothing (§13), so it must look the same for
    # SAME_NAME_SETTLE before it is probed
    second = await runner.advance_all(utcnow())
    assert [t.state for t in second] == [S.VERIFYING]
    assert not [op for op in world.mgmt_ops() if op["path"].endswith(("/api-call", "/fields", "/status"))]
    await asyncio.sleep(SAME_NAME_SETTLE.total_seconds() + 0.2)
    third = await runner.advance_all(utcnow())
    assert [t.state for t in third] == [S.DONE]
    assert world.store.list_tasks([S.VERIFYING, S.RETIRING]) == []


async def test_no_new_file_within_the_bounded_wait_goes_to_the_operator(world: World) -> None:
    state = world.state
    old = scenarios.add_credential(state, "codex", email="x@example.com", name="codex-x@example.com.json")
    scenarios.revoke(state, old.name, live=True)
    task = world.task_for(old)
    runner = world.runner(find_timeout=timedelta(seconds=1), find_inline_budget_s=3.0)

    result = await runner.advance(task.id, utcnow(), wait=True)

    assert result.state is S.AWAITING_OPERATOR
    assert "did not show the new credential within" in result.history[-1].reason
    assert "nothing was changed" in result.history[-1].reason
    assert not [op for op in world.mgmt_ops() if op["method"] in ("PATCH", "DELETE", "POST")]


async def test_a_refused_management_key_is_recorded_and_the_task_resumes_later(world: World) -> None:
    state = world.state
    old = scenarios.add_credential(state, "codex", email="y@example.com", name="codex-y@example.com.json")
    scenarios.revoke(state, old.name, live=True)
    task = world.task_for(old)
    relogin(state, identity_of(old))
    await asyncio.sleep(1.2)
    wrong = CPAClient("main", world.sim.base_url, "not-the-key", retry=RetryPolicy(attempts=1))
    try:
        stuck = await CompletionRunner(world.store, {"main": wrong}).advance(task.id, utcnow(), wait=True)
    finally:
        await wrong.aclose()
    assert stuck.state is S.VERIFYING
    assert "rejected the management key" in stuck.details["completion"]["last_error"]
    assert "not-the-key" not in json.dumps(stuck.details)

    done = await world.runner().advance(task.id, utcnow(), wait=True)
    assert done.state is S.DONE, done.history[-1].reason


CANARY = "canary-proxy-key-7f3a9c"


async def test_the_proxy_api_key_never_reaches_logs_errors_or_the_store(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    async with SimServer("sim-key", watcher_delay=0.2, proxy_api_keys=(CANARY,)) as sim:
        state = sim.state
        old = scenarios.add_credential(state, "vertex", project_id="proj-c", email="sa@proj-c.iam")
        scenarios.revoke(state, old.name, live=True)
        client = CPAClient("main", sim.base_url, "sim-key", retry=RetryPolicy(attempts=1))
        api = PublicAPI(sim.base_url, SecretStr(CANARY), timeout=5)
        db = tmp_path / "state.db"
        with Store.open(db) as store:
            now = utcnow()
            task = store.create_task(
                cpa="main", auth_name=old.name, auth_index=old.auth_index, provider="vertex",
                account_masked="s***@proj-c.iam", reason="dead key", now=now, deadline=now + timedelta(days=1),
            )  # fmt: skip
            for to in (S.OPENED, S.LOGIN_STARTED, S.VERIFYING):
                store.apply_transition(task.id, to, to.value, utcnow())
            sa = service_account("proj-d", "sa@proj-d.iam", "key-d-1")
            imported = await client.vertex_import(json.dumps(sa).encode(), "us-central1")
            store.update_task_fields(task.id, utcnow(), new_auth_name=posixpath.basename(imported.auth_file))
            runner = CompletionRunner(
                store,
                {"main": client},
                config=CompletionConfig(find_poll_interval_s=0.1, not_routed_delay_s=0.1),
                public_apis={"main": api},
                verify_models={"main": {"vertex": "gemini-2.5-flash"}},
            )
            result = await runner.advance(task.id, utcnow(), wait=True)
            assert result.state is S.DONE, result.history[-1].reason
            everything = json.dumps([a.outcome for a in store.audit_for()]) + json.dumps(result.details)
            everything += " ".join(e.reason for e in result.history)
        await client.aclose()
        await api.aclose()
        assert CANARY.encode() not in db.read_bytes()
        assert CANARY not in everything
        assert CANARY not in json.dumps(state.oplog)

    # An unreachable public API: the error names the place, never the key.
    dead = PublicAPI(sim.base_url, SecretStr(CANARY), timeout=1)
    try:
        with pytest.raises(PublicAPIUnreachable) as info:
            await dead.chat_once("p/m")
    finally:
        await dead.aclose()
    assert CANARY not in str(info.value) and CANARY not in repr(info.value) and CANARY not in repr(dead)
    out = capsys.readouterr()
    assert CANARY not in out.out + out.err
    assert CANARY not in caplog.text


async def test_daemon_ticks_carry_a_vertex_public_api_check_to_the_end(world: World) -> None:
    task_id, old_name, _ = await vertex_relogin(world)
    runner = world.runner(public=True, verify_models={"vertex": "gemini-2.5-flash"})
    try:
        for _ in range(30):  # the daemon wakes every 2 s; here a little faster
            (current,) = [t for t in await runner.advance_all(utcnow()) if t.id == task_id] or [None]
            if current is None or current.state not in (S.VERIFYING, S.RETIRING):
                break
            await asyncio.sleep(0.25)
    finally:
        await runner.aclose()
    final = world.store.get_task(task_id)
    assert final.state is S.DONE, final.history[-1].reason
    assert old_name not in world.state.auths


async def test_cpa_with_the_example_api_keys_goes_to_the_operator_not_refused(world: World) -> None:
    """CPA answers every /v1 request with 403 unsafe_example_api_key while its api-keys hold the template
    keys (server_middleware.go): CPA's misconfiguration, said as such; the login is not called refused."""
    task_id, old_name, _ = await vertex_relogin(world)
    world.state.settings.proxy_api_keys = (*world.state.settings.proxy_api_keys, "your-api-key-2")
    runner = world.runner(public=True, verify_models={"vertex": "gemini-2.5-flash"})
    try:
        result = await runner.advance(task_id, utcnow(), wait=True)
    finally:
        await runner.aclose()
    assert result.state is S.AWAITING_OPERATOR, result.history[-1].reason
    assert "example keys" in result.history[-1].reason
    assert not (result.verification or "").startswith("refused")
    assert old_name in world.state.auths
