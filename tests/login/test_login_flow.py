"""LoginFlow against the simulator without a browser: restarts, CPA's answers, lost sessions, refusals."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from reauthd.core.model import TaskState
from reauthd.login.flow import LoginFlow, PollOutcome
from reauthd.login.timing import CALLBACK_WINDOW, COMPLETED_STATE_TTL
from reauthd.login.view import Phase, describe
from reauthd.login.wording import NextStep
from reauthd.web.sandbox import CPA_NAME, WebSandbox
from tests.support.completion import RecordingRunner

S = TaskState


@pytest.fixture
async def box(tmp_path: Path) -> AsyncIterator[WebSandbox]:
    async with WebSandbox(tmp_path, completion=RecordingRunner(), poll_interval_s=0.1) as sandbox:
        yield sandbox


async def until(box: WebSandbox, task_id: str, state: TaskState, timeout: float = 10) -> None:
    for _ in range(int(timeout / 0.05)):
        if box.state_of(task_id) is state:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"task is {box.state_of(task_id)}, expected {state}")


async def started(box: WebSandbox, provider: str = "codex") -> tuple[str, str]:
    task = box.add_task(provider)
    assert await box.flow.start(task.task_id, box.clock()) is None
    session = box.store.get_login_session(task.task_id)
    assert session is not None
    return task.task_id, session.oauth_state


def second_flow(box: WebSandbox, runner: RecordingRunner) -> LoginFlow:
    """What a restarted daemon builds: a new LoginFlow over the same store."""
    return LoginFlow(box.store, {CPA_NAME: box.cpa}, clock=box.clock, completion=runner, poll_interval_s=0.1)


async def test_a_restarted_daemon_resumes_polling(box: WebSandbox) -> None:
    task_id, state = await started(box)
    await box.flow.aclose()  # the daemon stops; the person finishes the login meanwhile
    await box.cpa.post_oauth_callback(box.sim.state.provider_login(state))
    runner = RecordingRunner()
    flow = second_flow(box, runner)
    try:
        assert await flow.resume() == 1
        await until(box, task_id, S.VERIFYING)
        await asyncio.sleep(0.1)
        assert runner.calls == [task_id]
        assert box.store.get_login_session(task_id) is None
    finally:
        await flow.aclose()


async def test_a_completion_missed_while_down_is_handed_to_verification(box: WebSandbox) -> None:
    task_id, state = await started(box)
    await box.flow.aclose()
    await box.cpa.post_oauth_callback(box.sim.state.provider_login(state))
    for _ in range(100):
        if (await box.cpa.get_auth_status(state)).status == "ok":
            break
        await asyncio.sleep(0.05)
    box.sim.state.advance(COMPLETED_STATE_TTL.total_seconds() + 5)  # CPA forgot the finished state
    assert (await box.cpa.get_auth_status(state)).error == "unknown or expired state"
    flow = second_flow(box, RecordingRunner())
    try:
        assert await flow.poll_once(task_id, box.clock()) == PollOutcome.COMPLETED
        assert "looking for the new login" in box.store.get_task(task_id).history[-1].reason
    finally:
        await flow.aclose()


async def test_a_session_lost_in_steady_state_ends_the_login(box: WebSandbox) -> None:
    task_id, _ = await started(box)
    await asyncio.sleep(0.3)  # the poller saw "wait"
    box.sim.state.sessions.sessions.clear()  # CPA restarted: its OAuth sessions live in memory only
    await until(box, task_id, S.OPENED)
    assert "5 minutes" in box.store.get_task(task_id).history[-1].reason
    assert box.store.get_login_session(task_id) is None


async def test_device_denied_reads_as_plain_words(box: WebSandbox) -> None:
    task_id, _ = await started(box, "xai")
    session = box.store.get_login_session(task_id)
    assert session is not None and session.user_code
    box.sim.state.sessions.sessions[session.oauth_state].denied = True
    await until(box, task_id, S.OPENED)
    reason = box.store.get_task(task_id).history[-1].reason
    assert reason.startswith("The sign-in did not complete: Authentication failed.")
    assert session.oauth_state not in reason


async def test_start_twice_keeps_the_live_link(box: WebSandbox) -> None:
    task_id, state = await started(box)
    assert await box.flow.start(task_id, box.clock()) is None
    session = box.store.get_login_session(task_id)
    assert session is not None and session.oauth_state == state
    assert len([op for op in box.sim.state.oplog if op["path"].endswith("-auth-url")]) == 1


async def test_start_in_a_stale_tab_replaces_a_login_about_to_lapse(box: WebSandbox) -> None:
    task_id, state = await started(box)
    box.clock.advance(150)  # 2:30 of the 5 callback minutes left: the person can still finish
    assert await box.flow.start(task_id, box.clock()) is None
    kept = box.store.get_login_session(task_id)
    assert kept is not None and kept.oauth_state == state
    box.clock.advance(140)  # 10 s left: a link handed out now would die before anyone used it
    now = box.clock()
    assert await box.flow.start(task_id, now) is None
    fresh = box.store.get_login_session(task_id)
    assert fresh is not None and fresh.oauth_state != state
    assert fresh.expires_at == now + CALLBACK_WINDOW
    assert box.state_of(task_id) is S.LOGIN_STARTED
    cancels = [op for op in box.sim.state.oplog if op["path"].endswith("/oauth-session")]
    assert [op["method"] for op in cancels] == ["DELETE"]  # the old session is cancelled at CPA
    assert box.sim.state.sessions.get(state, box.sim.state.now()) is None
    assert len([op for op in box.sim.state.oplog if op["path"].endswith("-auth-url")]) == 2


@pytest.mark.parametrize(("upstream_says", "window_s"), [(None, 900), (600, 600), (1800, 900)])
async def test_kimi_countdown_follows_what_cpa_really_waits(
    box: WebSandbox, upstream_says: int | None, window_s: int
) -> None:
    """Kimi's answer has `expires_in` only when its upstream gave one, and CPA polls 15 minutes at most."""
    box.sim.state.sessions.kimi_expires_in = upstream_says
    task = box.add_task("kimi")
    now = box.clock()
    assert await box.flow.start(task.task_id, now) is None
    session = box.store.get_login_session(task.task_id)
    assert session is not None and session.flow == "device" and session.user_code
    assert session.expires_at == now + timedelta(seconds=window_s)
    view = describe(box.store.get_task(task.task_id), session, now)
    assert view.phase is Phase.DEVICE and view.seconds_left == window_s and not view.lapsed


async def test_an_expired_device_code_is_told_as_such_not_as_a_5_minute_lapse(box: WebSandbox) -> None:
    task_id, _ = await started(box, "kimi")
    box.sim.state.advance(905)  # CPA stops polling Kimi after 15 minutes: "... device code expired"
    await until(box, task_id, S.OPENED)
    reason = box.store.get_task(task_id).history[-1].reason
    assert reason == "The code expired before it was approved. Start again for a new one."


async def test_paste_twice_sends_once(box: WebSandbox) -> None:
    task_id, state = await started(box)
    url = box.sim.state.provider_login(state)
    assert await box.flow.submit_callback(task_id, url, box.clock()) is None
    again = await box.flow.submit_callback(task_id, url, box.clock())
    assert again is not None and again.next_step is NextStep.COMPLETED
    assert len([op for op in box.sim.state.oplog if op["path"].endswith("/oauth-callback")]) == 1


async def test_cpa_down_during_paste_keeps_the_task_usable(box: WebSandbox) -> None:
    task_id, state = await started(box)
    box.sim.state.inject_fault("drop", path="/oauth-callback", count=None)
    notice = await box.flow.submit_callback(task_id, box.sim.state.provider_login(state), box.clock())
    assert notice is not None and notice.next_step is NextStep.TRY_LATER
    assert box.state_of(task_id) is S.LOGIN_STARTED
    box.sim.state.clear_faults()
    assert await box.flow.submit_callback(task_id, box.sim.state.provider_login(state), box.clock()) is None


async def test_cpa_refuses_to_mint(box: WebSandbox) -> None:
    task = box.add_task("codex")
    box.sim.state.inject_fault("status", path="/codex-auth-url", status=500,
                               body='{"error":"failed to generate PKCE codes"}')  # fmt: skip
    notice = await box.flow.start(task.task_id, box.clock())
    assert notice is not None and notice.next_step is NextStep.START_AGAIN
    assert box.state_of(task.task_id) is S.OPENED
    assert await box.flow.restart(task.task_id, box.clock()) is None
    assert box.state_of(task.task_id) is S.LOGIN_STARTED


async def test_unsupported_and_missing_plugin_providers(box: WebSandbox) -> None:
    now = box.clock()
    task = box.store.create_task(
        cpa=CPA_NAME, auth_name="qwen-a.json", auth_index="0" * 16, provider="qwen",
        account_masked="a***@example.com", reason="revoked", now=now, deadline=now,
    )  # fmt: skip
    notice = await box.flow.start(task.id, now)
    assert notice is not None and notice.next_step is NextStep.TRY_LATER and "by hand" in notice.sentence
    plugin = box.store.create_task(
        cpa=CPA_NAME, auth_name="gemini-cli-a.json", auth_index="1" * 16, provider="gemini-cli",
        account_masked="a***@example.com", reason="revoked", now=now, deadline=now,
    )  # fmt: skip
    notice = await box.flow.start(plugin.id, now)
    assert notice is not None and notice.next_step is NextStep.TRY_LATER and "plugin" in notice.sentence


async def test_a_gemini_file_signs_in_through_the_gemini_cli_plugin(box: WebSandbox) -> None:
    """Contract §4.1: /gemini-cli-auth-url is no built-in any more; a `gemini` file is a plugin's (CPA hands
    it to plugins as gemini-cli), so reauthd asks the plugin's route and says so when the plugin is absent."""
    now = box.clock()
    task = box.store.create_task(
        cpa=CPA_NAME, auth_name="gemini-a@example.com.json", auth_index="2" * 16, provider="gemini",
        account_masked="a***@example.com", reason="revoked", now=now, deadline=now + timedelta(days=1),
    )  # fmt: skip
    notice = await box.flow.start(task.id, now)
    assert notice is not None and notice.next_step is NextStep.TRY_LATER
    assert notice.sentence == (
        "This proxy server has no sign-in for this provider (its plugin may be missing). "
        "The operator needs to look at it."
    )
    asked = [op["path"] for op in box.sim.state.oplog if op["path"].endswith("-auth-url")]
    assert asked == ["/v0/management/gemini-cli-auth-url"]
    assert box.state_of(task.id) is S.OPENED
    box.sim.state.settings.plugin_providers = ("gemini-cli",)  # CPA with the Gemini CLI plugin loaded
    assert await box.flow.start(task.id, now) is None
    session = box.store.get_login_session(task.id)
    assert session is not None and session.provider == "gemini-cli" and session.flow == "callback"
    assert describe(box.store.get_task(task.id), session, now).headline == "Sign in to Gemini CLI"
