"""End to end through the real login flow: a person re-logs a legacy Codex file at the simulated provider,
pastes the callback address, and the runner (handed the task by the login flow, then the daemon's ticks)
verifies the new file and retires the old one. Also the configuration wiring of the runner."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import httpx

from reauthd.config import Settings
from reauthd.core.model import TaskState
from reauthd.login.flow import LoginFlow
from reauthd.sim import scenarios
from reauthd.store.sqlite import Store
from reauthd.verify.runner import CompletionRunner
from tests.verify.verify_world import World, utcnow

S = TaskState


async def test_person_relogs_a_legacy_codex_file_and_the_old_one_is_retired(world: World) -> None:
    state = world.state
    old = scenarios.add_credential(
        state,
        "codex",
        email="e2e@example.com",
        plan="plus",
        name="codex-e2e@example.com-plus.json",
        note="seat 7",
    )
    scenarios.revoke(state, old.name, live=True)
    account_id = str(old.metadata["account_id"])
    now = utcnow()
    task = world.store.create_task(
        cpa="main", auth_name=old.name, auth_index=old.auth_index, provider="codex",
        account_masked="e***@example.com", reason="revoked", now=now, deadline=now + timedelta(days=1),
    )  # fmt: skip
    runner = world.runner()
    login = LoginFlow(
        world.store, {"main": world.client}, clock=utcnow, completion=runner, poll_interval_s=0.2
    )
    try:
        assert await login.start(task.id, utcnow()) is None
        session = world.store.get_login_session(task.id)
        assert session is not None
        # The person signs in at the (simulated) provider page, which redirects to localhost.
        page_url = _authorize_url(world, session.oauth_state)
        async with httpx.AsyncClient(follow_redirects=False, timeout=10) as browser:
            answer = await browser.post(
                page_url,
                data={
                    "state": session.oauth_state,
                    "redirect_uri": "http://localhost:1455/auth/callback",
                    "email": "e2e@example.com",
                    "plan": "plus",
                    "account_id": account_id,
                    "action": "allow",
                },
            )
        assert answer.status_code == 302
        pasted = answer.headers["location"]
        assert await login.submit_callback(task.id, pasted, utcnow()) is None

        for _ in range(60):  # the daemon's tick, a little faster than every 2 s
            current = world.store.get_task(task.id)
            if current.state in (S.DONE, S.FAILED, S.AWAITING_OPERATOR, S.OPENED):
                break
            await runner.advance_all(utcnow())
            await asyncio.sleep(0.2)
    finally:
        await login.aclose()

    final = world.store.get_task(task.id)
    assert final.state is S.DONE, final.history[-1].reason
    assert final.new_auth_name is not None and final.new_auth_name != old.name
    assert old.name not in state.auths
    assert state.disk[final.new_auth_name].content["note"] == "seat 7"
    actions = [a for a, _, _ in world.audit(task.id)]
    assert actions[-4:] == ["verify-probe", "patch-fields settings", "patch-status disabled", "delete"]


def _authorize_url(world: World, oauth_state: str) -> str:
    # The simulated provider's sign-in page for this login (what the authorize URL points the browser at).
    return f"{world.sim.base_url}/_sim/provider/codex/authorize?state={oauth_state}"


def test_from_settings_wires_policy_probes_models_and_proxy_keys(tmp_path: Path) -> None:
    settings = Settings(
        cpa=[
            {
                "name": "main",
                "base_url": "http://127.0.0.1:8317",
                "management_key": "k",
                "proxy_api_key": "proxy-secret-xyz",
                "verify_models": {"vertex": "gemini-2.5-flash"},
            },
            {"name": "other", "base_url": "http://127.0.0.1:8318", "management_key": "k"},
        ],
        retire={"policy": "disable"},
        detect={"probes": {"antigravity": {"url": "https://cloudcode-pa.googleapis.com/v1internal:x"}}},
    )
    with Store.open(tmp_path / "s.db") as store:
        runner = CompletionRunner.from_settings(settings, store, {})
        assert runner.config.policy == "disable"
        assert set(runner.public_apis) == {"main"}
        assert runner.verify_models == {"main": {"vertex": "gemini-2.5-flash"}, "other": {}}
        assert runner.probes.has_probe("antigravity") and runner.probes.has_probe("codex")
        assert "proxy-secret-xyz" not in repr(runner.public_apis["main"])
        asyncio.run(runner.aclose())
