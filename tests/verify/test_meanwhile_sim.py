"""The world changes under the runner: public-API verification, no way to verify, ambiguity, collisions,
an old file changed by someone else meanwhile, and CPA going away in the middle of retiring."""

from __future__ import annotations

import json
from datetime import timedelta

from reauthd.core.model import TaskState
from reauthd.sim import scenarios
from reauthd.sim.credentials import Identity
from tests.verify.verify_world import World, identity_of, relogin, utcnow, vertex_relogin

S = TaskState


async def test_vertex_is_verified_through_the_public_api_with_a_temporary_prefix(world: World) -> None:
    task_id, old_name, new_name = await vertex_relogin(world)
    runner = world.runner(public=True, verify_models={"vertex": "gemini-2.5-flash"})
    try:
        result = await runner.advance(task_id, utcnow(), wait=True)
    finally:
        await runner.aclose()

    assert result.state is S.DONE, result.history[-1].reason
    assert old_name not in world.state.auths
    new_file = world.state.disk[new_name].content
    assert new_file.get("prefix", "") == ""  # restored: the file had none
    fields = [op["body"] for op in world.mgmt_ops() if op["path"].endswith("/auth-files/fields")]
    assert fields[0]["prefix"].startswith("reauthd-verify-")
    assert fields[1] == {"name": new_name, "prefix": ""}
    actions = [a for a, _, _ in world.audit(task_id)]
    assert actions[:3] == [
        "patch-fields prefix (temporary)",
        "verify-public-api",
        "patch-fields prefix (restore)",
    ]
    assert actions[-2:] == ["patch-status disabled", "delete"]
    outcome = world.audit(task_id)[1][2]
    assert "HTTP 200" in outcome
    # The proxy API key is a secret: never in the store.
    dump = json.dumps([a.outcome for a in world.store.audit_for(task_id)]) + json.dumps(result.details)
    assert "sim-proxy-key" not in dump


async def test_the_old_prefix_is_copied_after_the_public_check_put_back_no_prefix(world: World) -> None:
    # The check restores the new file's missing prefix as "" (PATCH /auth-files/fields never deletes a
    # key, contract §3); that "" must not stop the old file's prefix from going over afterwards.
    task_id, _, new_name = await vertex_relogin(world, old_prefix="team-v")
    runner = world.runner(public=True, verify_models={"vertex": "gemini-2.5-flash"})
    try:
        result = await runner.advance(task_id, utcnow(), wait=True)
    finally:
        await runner.aclose()

    assert result.state is S.DONE, result.history[-1].reason
    assert world.state.disk[new_name].content["prefix"] == "team-v"
    fields = [op["body"] for op in world.mgmt_ops() if op["path"].endswith("/auth-files/fields")]
    assert fields[1] == {"name": new_name, "prefix": ""}  # the restore
    assert fields[2]["prefix"] == "team-v"  # then the settings copy
    assert "copied the settings prefix" in result.history[-1].reason


async def test_no_verification_path_waits_for_the_operator_and_retires_nothing(world: World) -> None:
    task_id, old_name, _ = await vertex_relogin(world)
    result = await world.runner().advance(task_id, utcnow(), wait=True)  # no proxy key, no verify model

    assert result.state is S.AWAITING_OPERATOR
    assert "no way to test vertex" in result.history[-1].reason
    assert old_name in world.state.auths
    assert not [op for op in world.mgmt_ops() if op["method"] in ("PATCH", "DELETE")]


async def test_a_dead_vertex_replacement_is_refused_and_the_prefix_is_restored(world: World) -> None:
    task_id, old_name, new_name = await vertex_relogin(world)
    world.state.upstream.access["key-new-1"].dead_kind = "vertex_key_deleted"  # the key was deleted
    runner = world.runner(public=True, verify_models={"vertex": "gemini-2.5-flash"})
    try:
        result = await runner.advance(task_id, utcnow(), wait=True)
    finally:
        await runner.aclose()

    assert result.state is S.OPENED, result.history[-1].reason
    assert world.state.disk[new_name].content.get("prefix") == ""
    assert old_name in world.state.auths and not world.state.auths[old_name].disabled


async def test_two_candidates_for_the_new_file_go_to_the_operator(world: World) -> None:
    state = world.state
    old = scenarios.add_credential(
        state, "codex", email="t@example.com", plan="plus", name="codex-t@example.com.json"
    )
    scenarios.revoke(state, old.name, live=True)
    task = world.task_for(old)
    ident = identity_of(old)
    first = relogin(state, ident)
    ident.plan = "pro"  # the same account logged in twice, once before a plan change
    second = relogin(state, ident)
    assert first != second

    result = await world.runner().advance(task.id, utcnow(), wait=True)

    assert result.state is S.AWAITING_OPERATOR
    reason = result.history[-1].reason
    assert "2 files could be the new credential" in reason and "does not guess" in reason
    assert not [op for op in world.mgmt_ops() if op["method"] in ("PATCH", "DELETE")]
    assert not [op for op in world.mgmt_ops() if op["path"].endswith("/api-call")]


async def test_name_collision_keeps_the_existing_files_own_settings(world: World) -> None:
    state = world.state
    legacy = scenarios.add_credential(
        state, "codex", email="n@example.com", plan="plus", name="codex-n@example.com-plus.json",
        prefix="legacy", note="old note", extra={"proxy_url": "http://p:1"},
    )  # fmt: skip
    ident = identity_of(legacy)
    # The hashed file for the same account already exists (an earlier login) with settings of its own.
    existing = scenarios.add_credential(
        state, "codex", email=ident.email, plan="plus", account_id=ident.account_id, prefix="mine"
    )
    scenarios.revoke(state, legacy.name, live=True)
    task = world.task_for(legacy)
    landed = relogin(state, ident)
    assert landed == existing.name  # the login overwrote the existing hashed file in place

    result = await world.runner().advance(task.id, utcnow(), wait=True)

    assert result.state is S.DONE, result.history[-1].reason
    content = state.disk[existing.name].content
    assert content["prefix"] == "mine"  # its own setting wins
    assert content["note"] == "old note" and content["proxy_url"] == "http://p:1"  # missing ones copied
    assert legacy.name not in state.auths


async def _verified_then_stalled(world: World, provider: str = "codex") -> tuple[str, str, str]:
    """Verification succeeds, then copying settings fails once: the run stops between persisted steps."""
    state = world.state
    email = f"m{len(state.auths)}@example.com"
    old = scenarios.add_credential(
        state, provider, email=email, name=f"{provider}-{email}-legacy.json", note="n"
    )
    scenarios.revoke(state, old.name, live=True)
    task = world.task_for(old)
    new_name = relogin(state, identity_of(old))
    scenarios.inject_fault(state, "status", path="/auth-files/fields", method="PATCH", status=500, count=1)
    result = await world.runner().advance(task.id, utcnow(), wait=True)
    assert result.state is S.RETIRING
    assert result.details["completion"]["verification"]["result"] == "ok"
    return task.id, old.name, new_name


async def test_old_file_deleted_by_someone_meanwhile_is_left_alone(world: World) -> None:
    task_id, old_name, new_name = await _verified_then_stalled(world)
    await world.client.delete_auth_file(old_name)  # another tool or a person
    result = await world.runner().advance(task_id, utcnow(), wait=True)

    assert result.state is S.DONE
    assert "removed from CPA by someone else" in result.history[-1].reason
    assert [op for op in world.mgmt_ops() if op["path"].endswith("/auth-files/status")] == []
    assert world.state.auths[new_name].status == "active"


async def test_old_file_replaced_by_someone_meanwhile_is_left_alone(world: World) -> None:
    task_id, old_name, _ = await _verified_then_stalled(world)
    # Someone uploads a different kind of credential under the old name: another auth_index (§2.1).
    other = {"type": "claude", "access_token": "x", "refresh_token": "y", "email": "o@example.com"}
    await world.client.upload_auth_file(old_name, json.dumps(other).encode())
    result = await world.runner().advance(task_id, utcnow(), wait=True)

    assert result.state is S.DONE
    assert "changed by someone else" in result.history[-1].reason
    assert not world.state.auths[old_name].disabled


async def test_old_file_healthy_again_meanwhile_is_left_alone(world: World) -> None:
    task_id, old_name, _ = await _verified_then_stalled(world)
    state = world.state
    token = state.disk[old_name].content["access_token"]
    state.upstream.access[token].dead_kind = None  # the provider un-revoked it
    await world.client.reset_quota(state.auths[old_name].auth_index)  # and CPA shows it active again
    assert state.auths[old_name].status == "active"

    result = await world.runner().advance(task_id, utcnow(), wait=True)

    assert result.state is S.DONE
    assert "works again" in result.history[-1].reason
    assert not state.auths[old_name].disabled
    assert "re-check probe" in [a for a, _, _ in world.audit(task_id)]


async def test_cpa_down_in_the_middle_of_retiring_then_resume(world: World) -> None:
    state = world.state
    old = scenarios.add_credential(state, "codex", email="d@example.com", name="codex-d@example.com.json")
    scenarios.revoke(state, old.name, live=True)
    task = world.task_for(old)
    relogin(state, identity_of(old))
    # The connection drops before CPA answers the DELETE, more often than the client retries by itself.
    scenarios.inject_fault(state, "drop", path="/auth-files", method="DELETE", count=2)

    runner = world.runner()
    first = await runner.advance(task.id, utcnow(), wait=True)
    assert first.state is S.RETIRING
    flow = first.details["completion"]
    assert flow["steps"] == {"copy_settings": "done", "disable_old": "done", "delete_old": "sent"}
    assert state.auths[old.name].disabled  # disabled: out of routing while CPA is unreachable
    assert any("no answer" in outcome for _, _, outcome in world.audit(task.id))

    second = await runner.advance(task.id, utcnow(), wait=True)
    second = second if second.state is S.DONE else await runner.advance(task.id, utcnow(), wait=True)
    assert second.state is S.DONE, second.history[-1].reason
    assert old.name not in state.auths
    assert "disabled and deleted" in second.history[-1].reason


async def test_kimi_replacement_without_old_identity_is_still_found(world: World) -> None:
    # Kimi files carry no identity: "appeared after the login started" is the rule.
    state = world.state
    old = scenarios.add_credential(state, "kimi")
    scenarios.revoke(state, old.name, live=True)
    task = world.task_for(old)
    await world.client.delete_auth_file(old.name)  # gone before the runner even looks
    relogin(state, Identity("kimi", ""))
    result = await world.runner().advance(task.id, utcnow(), wait=True)
    assert result.state is S.DONE, result.history[-1].reason
    assert "removed from CPA by someone else" in result.history[-1].reason


async def test_codex_old_file_deleted_before_the_runner_looks_is_matched_by_its_name(world: World) -> None:
    state = world.state
    old = scenarios.add_credential(
        state, "codex", email="g@example.com", plan="plus", name="codex-g@example.com-plus.json"
    )
    scenarios.revoke(state, old.name, live=True)
    task = world.task_for(old)
    await world.client.delete_auth_file(old.name)
    new_name = relogin(state, identity_of(old))
    result = await world.runner().advance(task.id, utcnow(), wait=True)
    assert result.state is S.DONE, result.history[-1].reason
    assert result.new_auth_name == new_name
    assert "removed from CPA by someone else" in result.history[-1].reason


async def test_a_failed_retire_step_backs_off_before_trying_again(world: World) -> None:
    state = world.state
    old = scenarios.add_credential(state, "codex", email="b@example.com", name="codex-b@example.com.json")
    scenarios.revoke(state, old.name, live=True)
    task = world.task_for(old)
    relogin(state, identity_of(old))
    scenarios.inject_fault(state, "status", path="/auth-files/status", method="PATCH", status=500, count=1)
    runner = world.runner(retire_backoff_s=60.0)
    now = utcnow()
    first = await runner.advance(task.id, now, wait=True)
    assert first.state is S.RETIRING
    sent = len(world.mgmt_ops())

    too_soon = await runner.advance(task.id, now)  # within the backoff: no request at all
    assert too_soon.state is S.RETIRING and len(world.mgmt_ops()) == sent

    later = await runner.advance(task.id, now + timedelta(seconds=90))
    assert later.state is S.DONE, later.history[-1].reason
    assert old.name not in state.auths


async def test_retiring_that_keeps_failing_goes_to_the_operator_who_can_send_it_back(world: World) -> None:
    state = world.state
    old = scenarios.add_credential(state, "codex", email="r@example.com", name="codex-r@example.com.json")
    scenarios.revoke(state, old.name, live=True)
    task = world.task_for(old)
    relogin(state, identity_of(old))
    scenarios.inject_fault(state, "status", path="/auth-files/status", method="PATCH", status=500, count=None)
    runner = world.runner(max_retire_errors=3)
    result = await runner.advance(task.id, utcnow(), wait=True)
    for _ in range(3):
        if result.state is S.AWAITING_OPERATOR:
            break
        result = await runner.advance(task.id, utcnow())
    assert result.state is S.AWAITING_OPERATOR
    assert "kept failing" in result.history[-1].reason
    assert not state.auths[old.name].disabled

    state.faults.clear()
    world.store.apply_transition(task.id, S.RETIRING, "operator: CPA is fixed, carry on", utcnow())
    done = await runner.advance(task.id, utcnow())
    assert done.state is S.DONE, done.history[-1].reason
    assert old.name not in state.auths
    # The new credential's verification was recorded once and was not repeated.
    probes = [op for op in world.mgmt_ops() if op["path"].endswith("/api-call")]
    assert len(probes) == 1


async def test_the_operator_resolves_an_ambiguity_by_naming_the_new_file(world: World) -> None:
    state = world.state
    old = scenarios.add_credential(
        state, "codex", email="q@example.com", plan="plus", name="codex-q@example.com.json"
    )
    scenarios.revoke(state, old.name, live=True)
    task = world.task_for(old)
    ident = identity_of(old)
    first = relogin(state, ident)
    ident.plan = "pro"
    relogin(state, ident)
    runner = world.runner()
    stuck = await runner.advance(task.id, utcnow(), wait=True)
    assert stuck.state is S.AWAITING_OPERATOR

    world.store.apply_transition(
        task.id, S.VERIFYING, "operator: the plus file is the one", utcnow(), new_auth_name=first
    )
    done = await runner.advance(task.id, utcnow(), wait=True)
    assert done.state is S.DONE, done.history[-1].reason
    assert done.new_auth_name == first
    assert old.name not in state.auths
