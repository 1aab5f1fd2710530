"""The operator view in a real Chromium, at a phone's and a desk's width: readable, and every action works
from its buttons (each a POST with the session's CSRF token, each audited). Plus the demo's operator view:
the link `reauthd demo` prints signs in and shows the demo's tasks."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from reauthd.core.model import TaskState
from reauthd.web.sandbox import WebSandbox
from tests.browser.conftest import Shot

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium"
    ),
]

S = TaskState
TOKEN = "operator-token-for-browser-tests-0123456789"
PHONE = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}
DESK = {"viewport": {"width": 1280, "height": 900}}
RECORD_CLIPBOARD = """
window.__copied = [];
if (navigator.clipboard) {
  navigator.clipboard.writeText = function (text) { window.__copied.push(text); return Promise.resolve(); };
}
"""

# Text that wraps inside a table header or a badge: one client rect per line of the element's text.
WRAPPED = """
(selector) => Array.from(document.querySelectorAll(selector)).filter((el) => {
  const range = document.createRange();
  range.selectNodeContents(el);
  const lines = new Set(Array.from(range.getClientRects()).map((r) => Math.round(r.top)));
  return lines.size > 1;
}).map((el) => el.textContent)
"""
OVERFLOW = "document.scrollingElement.scrollWidth - window.innerWidth"


@pytest.fixture
async def ops(tmp_path: Path) -> AsyncIterator[WebSandbox]:
    async with WebSandbox(
        tmp_path, operator_token=TOKEN, notify_urls=["json://127.0.0.1:9/ops"], poll_interval_s=0.5
    ) as sandbox:
        yield sandbox


async def sign_in(browser: Any, box: WebSandbox, **context: Any) -> Any:
    ctx = await browser.new_context(**context)
    await ctx.add_init_script(RECORD_CLIPBOARD)
    page = await ctx.new_page()
    # The link `reauthd demo` prints: the fragment fills the form and signs in (and leaves the address bar).
    await page.goto(box.url(f"/operator/login#token={TOKEN}"))
    await page.locator("h1", has_text="Reauth tasks").wait_for(timeout=15000)
    assert "#token" not in page.url
    return page


def audit(box: WebSandbox, task_id: str) -> list[str]:
    return [a.action for a in box.store.audit_for(task_id)]


@pytest.mark.parametrize("viewport", ["phone", "desk"])
async def test_operator_view_reads_at_phone_and_desk_width(
    ops: WebSandbox, browser: Any, shot: Shot, viewport: str
) -> None:
    tasks = [
        ops.add_task(p, reason="The provider revoked this login (token invalidated).")
        for p in ("codex", "claude")
    ]
    ops.tasks.cancel(tasks[1].task_id, ops.clock())
    page = await sign_in(browser, ops, **(PHONE if viewport == "phone" else DESK))
    await shot(page, "tasks")
    assert await page.evaluate(OVERFLOW) <= 0, "the task list scrolls sideways"
    assert await page.locator(".task-card").count() == 2
    assert await page.evaluate(WRAPPED, ".badge, .actions button") == []
    # Each card's action buttons sit side by side or wrap as whole buttons, and are big enough to tap.
    for box in [await b.bounding_box() for b in await page.locator(".task-card button").all()]:
        assert box is not None and box["height"] >= 40
    await page.locator(".task-card a").first.click()
    await page.locator("h1", has_text="Task ").wait_for()
    await shot(page, "task-detail")
    assert await page.evaluate(OVERFLOW) <= 0, (
        "the task page scrolls sideways (tables must scroll in their box)"
    )
    assert await page.evaluate(WRAPPED, "th") == [], "a table header breaks inside a word"


async def test_each_operator_action_from_its_button(ops: WebSandbox, browser: Any, shot: Shot) -> None:
    task = ops.add_task("codex")
    page = await sign_in(browser, ops, **PHONE)
    card = page.locator(f'.task-card[data-task="{task.task_id}"]')

    await card.get_by_role("button", name="Copy recipient link").click()
    await page.locator("h1", has_text="A fresh link").wait_for()
    link = (await page.locator("#recipient-link").inner_text()).strip()
    assert link.startswith(ops.url("/r/"))
    await page.get_by_role("button", name="Copy link").click()
    assert await page.evaluate("window.__copied") == [link]
    await shot(page, "link")
    await page.get_by_role("link", name="All tasks").click()

    await card.get_by_role("button", name="Resend message").click()
    await page.locator("h1", has_text="Message queued").wait_for()
    await shot(page, "resend")
    await page.get_by_role("link", name="All tasks").click()

    await card.get_by_role("button", name="Cancel").click()
    await page.locator("h1", has_text="Task cancelled").wait_for()
    assert ops.state_of(task.task_id) is S.CANCELLED
    await page.get_by_role("link", name="All tasks").click()

    await card.get_by_role("button", name="Start again (new link)").click()
    await page.locator("h1", has_text="Started again").wait_for()
    await shot(page, "started-again")
    (new,) = [t for t in ops.store.list_tasks() if t.id != task.task_id]
    assert new.state is S.OPEN and new.auth_name == task.auth_name
    assert audit(ops, task.task_id) == [
        "operator: new recipient link",
        "operator: resend message",
        "operator: cancel",
        "operator: start again",
    ]
    # The link the operator copied opens the old task's closed page; the new one opens the new task.
    fresh = (await page.locator("#recipient-link").inner_text()).strip()
    person = await (await browser.new_context()).new_page()
    await person.goto(fresh)
    await person.wait_for_url("**/t/*")
    assert new.id in person.url
    await person.context.close()

    await page.get_by_role("link", name="All tasks").click()
    other = ops.sim.state.add_credential("xai", email="dave@example.com", name="xai-dave.json")
    await page.locator('input[name="auth_name"]').fill(other.name)
    await page.locator('input[name="reason"]').fill("password changed")
    await page.get_by_role("button", name="Raise task").click()
    await page.locator("h1", has_text="Task raised").wait_for()
    await shot(page, "raised")
    raised = [t for t in ops.store.list_tasks() if t.auth_name == other.name]
    assert len(raised) == 1 and raised[0].reason == "password changed"
    assert audit(ops, raised[0].id) == ["operator: raise task"]


async def test_the_demos_operator_view(tmp_path: Path, browser: Any, shot: Shot) -> None:
    """What `make demo` prints: the operator link signs in and the demo's revoked accounts are there."""
    from reauthd.daemon import Daemon
    from reauthd.demo import SIM_KEY, _register_terminal_channel, demo_settings, prepare_state_dir
    from reauthd.sim.cli import seed_demo_world
    from reauthd.sim.server import SimServer
    from tests.support.servers import free_port

    sim = SimServer(SIM_KEY)
    await sim.start()
    try:
        seed_demo_world(sim.state)
        _register_terminal_channel()
        settings = demo_settings(prepare_state_dir(tmp_path / "demo-state"), sim.base_url, free_port())
        token = settings.web.operator_token
        assert token is not None and len(token.get_secret_value()) >= 32
        daemon = Daemon(settings)
        runner = asyncio.create_task(daemon.run())
        try:
            public = settings.web.public_url
            page = await (await browser.new_context(**DESK)).new_page()
            for _ in range(100):  # the daemon's web server comes up after its first look at CPA
                with contextlib.suppress(Exception):
                    await page.goto(f"{public}/operator/login#token={token.get_secret_value()}")
                    break
                await asyncio.sleep(0.2)
            await page.locator("h1", has_text="Reauth tasks").wait_for(timeout=20000)
            for _ in range(60):  # the live-traffic revocation is confirmed within seconds
                if await page.locator(".task-card").count():
                    break
                await asyncio.sleep(0.5)
                await page.reload()
            await shot(page, "demo-operator-view")
            text = await page.locator("main").inner_text()
            assert re.search(r"a\*\*\*@example\.com", text) and "Copy recipient link" in text
            assert "This page is run by" in await page.locator("footer").inner_text()
        finally:
            daemon.request_stop()
            await asyncio.wait_for(runner, 30)
    finally:
        await sim.stop()


async def test_operator_view_off_says_how_to_turn_it_on(box: WebSandbox, browser: Any) -> None:
    page = await (await browser.new_context()).new_page()
    answer = await page.goto(box.url("/operator"))
    assert answer is not None and answer.status == 404
    assert "The operator view is off: set web.operator_token" in await page.locator("main").inner_text()
