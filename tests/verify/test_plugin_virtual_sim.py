"""A plugin's "virtual" credential (one of several expanded from a source file) cannot be disabled or deleted
through its own name: CPA answers 409 (auth_files_crud.go, auth_files_fields.go). Retrying cannot help, so
the task goes to an operator at once, with the new credential verified and the old file untouched."""

from __future__ import annotations

import pytest

from reauthd.core.model import TaskState
from reauthd.cpa.errors import CPARequestError
from reauthd.sim import scenarios
from reauthd.sim.management import PLUGIN_VIRTUAL
from tests.verify.verify_world import World, identity_of, relogin, utcnow

S = TaskState


async def test_a_plugin_virtual_old_credential_goes_to_an_operator_at_once(world: World) -> None:
    state = world.state
    old = scenarios.add_credential(
        state, "codex", email="vic@example.com", plan="plus", name="codex-vic@example.com-plus.json"
    )
    old.virtual_source = "plugin-source.json"
    scenarios.revoke(state, old.name, live=True)
    task = world.task_for(old)
    new_name = relogin(state, identity_of(old))

    result = await world.runner().advance(task.id, utcnow(), wait=True)

    assert result.state is S.AWAITING_OPERATOR, result.history[-1].reason
    reason = result.history[-1].reason
    assert "plugin's virtual credential" in reason and "source auth file" in reason
    assert old.name in state.auths and not state.auths[old.name].disabled  # left exactly as it was
    refused = [a for a in world.audit(task.id) if a[2].startswith("refused: HTTP 409")]
    assert len(refused) == 1 and PLUGIN_VIRTUAL in refused[0][2]  # asked once, not retried
    assert ("verify-probe", new_name) in [(a[0], a[1]) for a in world.audit(task.id)]


async def test_the_simulator_refuses_changes_to_a_virtual_child_but_not_through_its_source(
    world: World,
) -> None:
    child = scenarios.add_credential(world.state, "codex", email="kid@example.com")
    child.virtual_source = "source.json"
    client = world.client
    for call in (
        client.set_disabled(child.name, True),
        client.delete_auth_file(child.name),
        client.patch_fields(child.name, {"note": "x"}),
    ):
        with pytest.raises(CPARequestError) as refused:
            await call
        assert refused.value.status == 409 and refused.value.error_text == PLUGIN_VIRTUAL
    assert child.name in world.state.auths
