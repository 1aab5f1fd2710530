"""Verify-then-retire against the simulated CPA over loopback: the main journeys of issue 6."""

from __future__ import annotations

import json
from typing import Any

from reauthd.core.model import TaskState
from reauthd.sim import scenarios
from reauthd.sim.credentials import Identity
from tests.verify.verify_world import World, identity_of, relogin, utcnow

S = TaskState

SETTINGS: dict[str, Any] = {
    "proxy_url": "http://proxy.internal:3128",
    "weight": 3,
    "headers": {"X-Team": "finance"},
    "excluded_models": ["gpt-5-mini"],
    "websockets": True,
    "request_retry": 2,
}


def _ops(world: World, *, since: int = 0) -> list[tuple[str, str, dict[str, Any], list[str]]]:
    """(method, management sub-path, body, query keys) of every management request, in order."""
    out = []
    for op in world.mgmt_ops()[since:]:
        body = op.get("body") if isinstance(op.get("body"), dict) else {}
        out.append((op["method"], op["path"].removeprefix("/v0/management"), body, op["query"]))
    return out


async def test_codex_legacy_name_new_file_settings_copied_then_old_disabled_and_deleted(world: World) -> None:
    state = world.state
    old = scenarios.add_credential(
        state,
        "codex",
        email="u@example.com",
        plan="plus",
        name="codex-u@example.com-plus.json",
        prefix="team-a",
        note="finance seat",
        priority=5,
        extra=SETTINGS,
    )
    scenarios.revoke(state, old.name, live=True)
    assert state.auths[old.name].status == "error"
    task = world.task_for(old)
    new_name = relogin(state, identity_of(old))
    assert new_name != old.name and new_name.startswith("codex-")

    runner = world.runner()
    result = await runner.advance(task.id, utcnow(), wait=True)

    assert result.state is S.DONE, result.history[-1].reason
    assert result.new_auth_name == new_name
    assert old.name not in state.auths and old.name not in state.disk
    new_file = state.disk[new_name].content
    for key, value in {**SETTINGS, "prefix": "team-a", "note": "finance seat", "priority": 5}.items():
        assert new_file[key] == value, key
    assert new_file["disabled"] is False
    assert state.auths[new_name].status == "active"

    # Order of real requests: probe of the NEW credential, copy to the new file, disable old, delete old.
    ops = _ops(world)
    probe_at = next(
        i
        for i, (m, p, b, _) in enumerate(ops)
        if p == "/api-call" and b.get("auth_index") == result.new_auth_index
    )
    copy_at = next(
        i for i, (m, p, b, _) in enumerate(ops) if p == "/auth-files/fields" and b.get("name") == new_name
    )
    disable_at = next(i for i, (m, p, b, _) in enumerate(ops) if p == "/auth-files/status")
    delete_at = next(i for i, (m, p, b, _) in enumerate(ops) if m == "DELETE")
    assert probe_at < copy_at < disable_at < delete_at
    assert ops[disable_at][2] == {"name": old.name, "disabled": True, "auth_index": old.auth_index}

    actions = [a for a, _, _ in world.audit(task.id)]
    assert actions == ["verify-probe", "patch-fields settings", "patch-status disabled", "delete"]
    reason = result.history[-1].reason
    assert "disabled and deleted" in reason
    assert [e.to_state for e in result.history][-3:] == [S.VERIFYING, S.RETIRING, S.DONE]

    # Nothing left to do: advancing a finished task changes nothing and sends nothing.
    before = len(world.mgmt_ops())
    again = await runner.advance(task.id, utcnow(), wait=True)
    assert again.state is S.DONE and len(world.mgmt_ops()) == before


async def test_same_name_relogin_overwrites_in_place_and_retires_nothing(world: World) -> None:
    state = world.state
    old = scenarios.add_credential(state, "claude", email="c@example.com", note="kept")
    scenarios.revoke(state, old.name, live=True)
    task = world.task_for(old)
    name = relogin(state, identity_of(old))
    assert name == old.name

    result = await world.runner().advance(task.id, utcnow(), wait=True)

    assert result.state is S.DONE, result.history[-1].reason
    assert result.new_auth_name == old.name and result.new_auth_index == old.auth_index
    assert "nothing to retire" in result.history[-1].reason
    assert state.auths[old.name].status == "active" and not state.auths[old.name].disabled
    methods = {(m, p) for m, p, _, _ in _ops(world)}
    assert ("PATCH", "/auth-files/status") not in methods
    assert ("DELETE", "/auth-files") not in methods
    assert ("PATCH", "/auth-files/fields") not in methods
    # §12: the probe went out only after the listing showed the reloaded auth (fresh last_refresh).
    assert state.disk[old.name].content["note"] == "kept"


async def test_same_name_relogin_of_a_file_a_person_had_disabled_tells_the_operator(world: World) -> None:
    state = world.state
    old = scenarios.add_credential(state, "claude", email="d@example.com", disabled=True)
    # The login flow's look when it minted the login: CPA registers the saved record at once with
    # disabled false (saveTokenRecord → runtimeAuthSyncHook, §13), so after the save no listing shows
    # the person's choice any more.
    task = world.task_for(old)
    runner = world.runner()
    await runner.remember_old_file(task.id, utcnow())
    relogin(state, identity_of(old))

    result = await runner.advance(task.id, utcnow(), wait=True)

    assert result.state is S.DONE
    assert result.disabled_by_person
    assert "re-enables" in result.history[-1].reason
    assert state.auths[old.name].disabled is False  # CPA's doing (§4.4); reauthd did not re-disable it


async def test_kimi_login_writes_a_new_file_which_replaces_the_old_one(world: World) -> None:
    state = world.state
    old = scenarios.add_credential(state, "kimi")
    scenarios.revoke(state, old.name, live=True)
    task = world.task_for(old)
    new_name = relogin(state, Identity("kimi", ""))
    assert new_name != old.name

    result = await world.runner().advance(task.id, utcnow(), wait=True)

    assert result.state is S.DONE, result.history[-1].reason
    assert result.new_auth_name == new_name
    assert old.name not in state.auths


async def test_xai_without_email_relogs_to_the_same_sub_named_file(world: World) -> None:
    # CPA names an e-mail-less xAI file after the token's `sub` (xai-<sub>.json, contract §4.4). The
    # listing does not show `sub` (§2.1), so nothing else could match it: the same account's re-login
    # lands on the same name, which is the same-name path.
    state = world.state
    old = scenarios.add_credential(state, "xai", email="", account_id="sub-7f3a")
    assert old.name == "xai-sub-7f3a.json"
    scenarios.revoke(state, old.name, live=True)
    task = world.task_for(old)
    assert relogin(state, identity_of(old)) == old.name

    result = await world.runner().advance(task.id, utcnow(), wait=True)

    assert result.state is S.DONE, result.history[-1].reason
    assert result.new_auth_name == old.name and result.new_auth_index == old.auth_index
    assert "nothing to retire" in result.history[-1].reason
    assert state.auths[old.name].status == "active"
    assert state.disk[old.name].content["sub"] == "sub-7f3a" and "email" not in state.disk[old.name].content


async def test_verification_failure_leaves_the_old_credential_exactly_as_it_was(world: World) -> None:
    state = world.state
    old = scenarios.add_credential(
        state, "codex", email="f@example.com", name="codex-f@example.com-plus.json"
    )
    scenarios.revoke(state, old.name, live=True)
    task = world.task_for(old)
    before_file = json.dumps(state.disk[old.name].content, sort_keys=True)
    new_name = relogin(state, identity_of(old))
    # The provider refuses the new token (e.g. the account was locked right after the login).
    new_auth_token = state.disk[new_name].content["access_token"]
    state.upstream.access[new_auth_token].probe_override = (401, '{"error":{"message":"nope"}}')

    result = await world.runner().advance(task.id, utcnow(), wait=True)

    assert result.state is S.OPENED  # the page offers to log in again
    assert "did not work" in result.history[-1].reason
    assert "left exactly as it was" in result.history[-1].reason
    assert result.verification is not None and result.verification.startswith("refused")
    assert result.new_auth_name is None
    assert json.dumps(state.disk[old.name].content, sort_keys=True) == before_file
    assert state.auths[old.name].status == "error" and not state.auths[old.name].disabled
    mutations = [(m, p) for m, p, _, _ in _ops(world) if m in ("PATCH", "DELETE")]
    assert mutations == []
    assert [a for a, _, _ in world.audit(task.id)] == ["verify-probe"]


async def test_an_old_file_a_person_had_disabled_is_retired_and_the_operator_is_told(world: World) -> None:
    state = world.state
    old = scenarios.add_credential(
        state,
        "codex",
        email="h@example.com",
        plan="plus",
        name="codex-h@example.com-plus.json",
        disabled=True,
    )
    task = world.task_for(old)
    relogin(state, identity_of(old))

    result = await world.runner().advance(task.id, utcnow(), wait=True)

    assert result.state is S.DONE, result.history[-1].reason
    assert result.disabled_by_person
    assert "disabled by someone else" in result.history[-1].reason
    # Already disabled: reauthd did not disable it again, it only deleted it (policy delete).
    assert not [op for op in world.mgmt_ops() if op["path"].endswith("/auth-files/status")]
    assert old.name not in state.auths
