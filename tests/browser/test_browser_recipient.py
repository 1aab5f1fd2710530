"""The recipient page in a real Chromium against the simulator, one screenshot per step (test-artifacts/)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from reauthd.core.model import TaskState
from reauthd.login.timing import CALLBACK_WINDOW
from reauthd.web.sandbox import WebSandbox

CHROMIUM = Path("/usr/bin/chromium")
Shot = Callable[[Any, str], Coroutine[Any, Any, None]]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium"
    ),
]

S = TaskState
PHONE = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}

# The provider pages the sign-in link opened, in order (what the person's browser was sent to).
PROVIDER_PAGES: list[str] = []

RECORD_CLIPBOARD = """
window.__copied = [];
if (navigator.clipboard) {
  navigator.clipboard.writeText = function (text) { window.__copied.push(text); return Promise.resolve(); };
}
"""


async def heading(page: Any) -> str:
    return str(await page.locator("h1").first.inner_text())


async def wait_heading(page: Any, text: str | re.Pattern[str], timeout_ms: float = 20000) -> None:
    await page.locator("h1", has_text=text).first.wait_for(timeout=timeout_ms)


async def open_and_start(page: Any, box: WebSandbox, link: str, shot: Shot) -> None:
    await page.goto(link)
    await page.wait_for_url("**/t/*")
    await wait_heading(page, "again")
    await shot(page, "landing")
    await page.get_by_role("button", name="Start login").click()
    await page.wait_for_load_state()


async def sign_in_and_copy_address(page: Any, shot: Shot) -> str:
    """Click the sign-in link (new tab), sign in at the fake provider, read the failed localhost address."""
    async with page.context.expect_page() as new_tab:
        await page.get_by_role("link", name="sign-in").click()
    provider = await new_tab.value
    await provider.wait_for_load_state()
    PROVIDER_PAGES.append(provider.url)
    await shot(provider, "provider-sign-in")
    failed: list[str] = []
    provider.on("requestfailed", lambda request: failed.append(request.url))
    await provider.get_by_role("button", name="Sign in and allow").click(no_wait_after=True)
    for _ in range(100):
        if failed:
            break
        await asyncio.sleep(0.05)
    await provider.wait_for_load_state()
    await shot(provider, "localhost-does-not-load")
    assert failed, "the provider did not send the browser to the localhost callback"
    await provider.close()
    return failed[0]


async def paste_and_send(page: Any, address: str, shot: Shot) -> None:
    await page.locator('textarea[name="callback_url"]').fill(address)
    await shot(page, "pasted")
    await page.get_by_role("button", name="Send", exact=True).click()
    await page.wait_for_load_state()


async def callback_flow(box: WebSandbox, browser: Any, shot: Shot, provider: str, **context: Any) -> Any:
    task = box.add_task(provider, email="alice@example.com")
    ctx = await browser.new_context(**context)
    page = await ctx.new_page()
    await open_and_start(page, box, task.link, shot)
    await wait_heading(page, "Sign in to")
    await shot(page, "callback-step")
    address = await sign_in_and_copy_address(page, shot)
    await paste_and_send(page, address, shot)
    await shot(page, "after-send")
    await wait_heading(page, "All done")  # the page follows along by itself (JS polling, no reload by hand)
    await shot(page, "done")
    assert box.state_of(task.task_id) is S.DONE
    await assert_done_page_speaks_to_the_person(page, box, task.task_id)
    return page


async def assert_done_page_speaks_to_the_person(page: Any, box: WebSandbox, task_id: str) -> None:
    """One plain sentence; a step that did not happen shows as skipped; no file names."""
    main = await page.locator("main").inner_text()
    assert "The account works again. You can close this page." in main
    task = box.store.get_task(task_id)
    assert task.auth_name not in main and (task.new_auth_name or task.auth_name) not in main
    assert "Verified the new credential" not in main
    remove = page.locator("#progress li", has_text="Removing the old login")
    if task.new_auth_name == task.auth_name:  # CPA overwrote the old login in place: nothing to remove
        assert await remove.get_attribute("class") == "step skipped"
        assert "not needed" in await remove.inner_text()
    else:
        assert await remove.get_attribute("class") == "step done"


async def test_codex_callback_paste(box: WebSandbox, browser: Any, shot: Shot) -> None:
    await callback_flow(box, browser, shot, "codex")


async def test_claude_callback_paste(box: WebSandbox, browser: Any, shot: Shot) -> None:
    PROVIDER_PAGES.clear()
    page = await callback_flow(box, browser, shot, "claude")
    assert any(op["path"].endswith("/anthropic-auth-url") for op in box.sim.state.oplog)
    # CPA's real Claude authorize URL carries `code=true` (anthropic_auth.go GenerateAuthURL); the page
    # must store it and send the person there (it used to answer 500 for every Claude login)
    [authorize] = PROVIDER_PAGES
    assert "code=true" in authorize.split("?", 1)[1].split("&")
    await page.close()


async def test_phone_sized_viewport(box: WebSandbox, browser: Any, shot: Shot) -> None:
    page = await callback_flow(box, browser, shot, "codex", **PHONE)
    overflow = await page.evaluate("document.scrollingElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, "the page scrolls sideways on a phone"


async def test_xai_device_code(box: WebSandbox, browser: Any, shot: Shot) -> None:
    task = box.add_task("xai")
    ctx = await browser.new_context()
    # The page's own script is what is under test, not the machine's clipboard: reading the system clipboard
    # needs a permission that some Chromium builds prompt for, and a headless prompt waits forever.
    await ctx.add_init_script(RECORD_CLIPBOARD)
    page = await ctx.new_page()
    await open_and_start(page, box, task.link, shot)
    await wait_heading(page, "Enter the code")
    session = box.store.get_login_session(task.task_id)
    assert session is not None and session.user_code
    assert (await page.locator("#user-code").inner_text()).strip() == session.user_code
    first = await page.locator(".countdown").inner_text()
    await page.get_by_role("button", name="Copy code").click()
    await page.get_by_role("button", name="Copied").wait_for(timeout=5000)
    assert await page.evaluate("window.__copied") == [session.user_code]
    await asyncio.sleep(1.2)
    assert await page.locator(".countdown").inner_text() != first, "the countdown does not move"
    await shot(page, "device-code")
    async with ctx.expect_page() as new_tab:
        await page.get_by_role("link", name="verification page").click()
    device = await new_tab.value
    await device.wait_for_load_state()
    await shot(device, "provider-approve")
    await device.get_by_role("button", name="Approve").click()
    await device.close()
    await wait_heading(page, "All done", timeout_ms=30000)
    await shot(page, "done")


async def test_vertex_upload(box: WebSandbox, browser: Any, shot: Shot) -> None:
    task = box.add_task("vertex")
    page = await (await browser.new_context()).new_page()
    await open_and_start(page, box, task.link, shot)
    await wait_heading(page, "Upload a new service-account key")
    assert await page.locator('input[name="location"]').input_value() == "us-central1"
    await page.locator('input[name="file"]').set_input_files(
        {"name": "notes.json", "mimeType": "application/json", "buffer": b'{"hello": 1}'}
    )
    await page.get_by_role("button", name="Upload key").click()
    await page.wait_for_load_state()
    assert "not a service-account key" in await page.locator(".notice").inner_text()
    await shot(page, "wrong-file")
    auth = box.sim.state.auth_by_name(task.auth_name)
    assert auth is not None
    project = auth.metadata["project_id"]  # a new key for the same project
    key = json.dumps(
        {
            "type": "service_account",
            "project_id": project,
            "private_key_id": "k9",
            "private_key": "-----BEGIN PRIVATE KEY-----\\nMIIE\\n-----END PRIVATE KEY-----\\n",
            "client_email": f"reauth@{project}.iam.gserviceaccount.com",
        }
    ).encode()
    await page.locator('input[name="file"]').set_input_files(
        {"name": f"{project}.json", "mimeType": "application/json", "buffer": key}
    )
    await page.locator('input[name="location"]').fill("europe-west4")
    await shot(page, "key-chosen")
    await page.get_by_role("button", name="Upload key").click()
    await page.wait_for_load_state()
    await shot(page, "imported")
    await wait_heading(page, "All done")
    body = await page.locator("main").inner_text()
    for fact in (project, f"reauth@{project}.iam.gserviceaccount.com", "europe-west4"):
        assert fact in body
    assert f"vertex-{project}.json" not in body  # file names: operator view and audit only
    await assert_done_page_speaks_to_the_person(page, box, task.task_id)
    await shot(page, "done")


async def test_lapsed_window_and_restart(box: WebSandbox, browser: Any, shot: Shot) -> None:
    task = box.add_task("codex")
    page = await (await browser.new_context()).new_page()
    await open_and_start(page, box, task.link, shot)
    await wait_heading(page, "Sign in to")
    first = box.store.get_login_session(task.task_id)
    assert first is not None
    box.sim.state.advance(CALLBACK_WINDOW.total_seconds() + 1)  # CPA's 5-minute waiter gives up
    await wait_heading(page, "Start the sign-in again")  # the page notices by itself
    assert "5 minutes" in await page.locator("main").inner_text()
    await shot(page, "window-lapsed")
    await page.get_by_role("button", name="Start login again").click()
    await wait_heading(page, "Sign in to")
    second = box.store.get_login_session(task.task_id)
    assert second is not None and second.oauth_state != first.oauth_state
    await shot(page, "fresh-link")
    address = await sign_in_and_copy_address(page, shot)
    await paste_and_send(page, address, shot)
    await wait_heading(page, "All done")
    await shot(page, "done")


async def test_wrong_state_is_refused_and_task_stays_usable(
    box: WebSandbox, browser: Any, shot: Shot
) -> None:
    task = box.add_task("codex")
    page = await (await browser.new_context()).new_page()
    await open_and_start(page, box, task.link, shot)
    await wait_heading(page, "Sign in to")
    wrong = "http://localhost:1455/auth/callback?code=ac_123&state=" + "f" * 32
    await paste_and_send(page, wrong, shot)
    notice = await page.locator(".notice").inner_text()
    assert "different or older sign-in" in notice
    await shot(page, "wrong-state")
    assert not [op for op in box.sim.state.oplog if op["path"].endswith("/oauth-callback")]
    address = await sign_in_and_copy_address(page, shot)
    await paste_and_send(page, address, shot)
    await wait_heading(page, "All done")


async def test_tampered_link(box: WebSandbox, browser: Any, shot: Shot) -> None:
    task = box.add_task("codex")
    page = await (await browser.new_context()).new_page()
    answer = await page.goto(task.link[:-4] + "AAAA")
    assert answer is not None and answer.status == 404
    assert await heading(page) == "This link does not work"
    await shot(page, "tampered")
    assert box.state_of(task.task_id) is S.OPEN
    assert await page.context.cookies() == []


async def test_get_twice_then_post(box: WebSandbox, browser: Any, shot: Shot) -> None:
    task = box.add_task("codex")
    # A link preview or mail scanner fetches the link in another browser first.
    scanner = await (await browser.new_context()).new_page()
    await scanner.goto(task.link)
    await scanner.wait_for_url("**/t/*")
    await shot(scanner, "scanner-fetch")
    page = await (await browser.new_context()).new_page()
    await page.goto(task.link)
    await page.wait_for_url("**/t/*")
    await page.goto(task.link)
    await page.wait_for_url("**/t/*")
    assert task.link.rsplit("/", 1)[1] not in page.url  # the token left the address bar
    assert box.state_of(task.task_id) is S.OPEN
    assert box.store.get_login_session(task.task_id) is None
    await shot(page, "landing-after-two-gets")
    await page.get_by_role("button", name="Start login").click()
    await wait_heading(page, "Sign in to")
    assert box.state_of(task.task_id) is S.LOGIN_STARTED
    await shot(page, "started")


async def test_link_clicked_from_another_site(box: WebSandbox, browser: Any, shot: Shot) -> None:
    """A link in a web mail (another site): SameSite=Strict must not lose the session on the way in."""
    task = box.add_task("codex")
    page = await (await browser.new_context()).new_page()
    await page.goto(box.sim.base_url.replace("127.0.0.1", "localhost") + "/_sim/provider/none/none")
    await page.set_content(f'<a id="mail-link" href="{task.link}">Sign in again</a>')
    await page.click("#mail-link")
    await page.wait_for_url("**/t/*")
    await wait_heading(page, "again")
    assert await page.get_by_role("button", name="Start login").count() == 1
    await shot(page, "landed-from-mail")


async def test_without_javascript_a_refresh_works(box: WebSandbox, browser: Any, shot: Shot) -> None:
    task = box.add_task("codex")
    page = await (await browser.new_context(java_script_enabled=False)).new_page()
    await open_and_start(page, box, task.link, shot)
    await wait_heading(page, "Sign in to")
    assert not await page.get_by_role("button", name="Paste and send").is_visible()  # needs the script
    address = await sign_in_and_copy_address(page, shot)
    await paste_and_send(page, address, shot)
    for _ in range(60):  # the person reloads now and then
        if "All done" in await heading(page):
            break
        await asyncio.sleep(0.5)
        await page.reload()
    assert "All done" in await heading(page)
    await shot(page, "done-after-reload")


async def reach_the_paste_step(box: WebSandbox, ctx: Any, shot: Shot) -> tuple[Any, str, str]:
    """Open the link, press Start (which opens the sign-in tab), sign in there; returns (page, task id,
    the failed localhost address) with the recipient's tab in front again."""
    task = box.add_task("codex", email="alice@example.com")
    page = await ctx.new_page()
    await page.goto(task.link)  # 1: open the link
    await page.wait_for_url("**/t/*")
    await wait_heading(page, "again")
    async with ctx.expect_page() as new_tab:
        await page.get_by_role("button", name="Start login").click()  # 2: Start (opens the sign-in)
    provider = await new_tab.value
    await provider.get_by_role("button", name="Sign in and allow").wait_for(timeout=20000)
    await shot(provider, "sign-in-opened-by-start")
    failed: list[str] = []
    provider.on("requestfailed", lambda request: failed.append(request.url))
    await provider.get_by_role("button", name="Sign in and allow").click(no_wait_after=True)  # 3: sign in
    for _ in range(100):
        if failed:
            break
        await asyncio.sleep(0.05)
    assert failed, "the provider did not send the browser to the localhost callback"
    await provider.close()
    await page.bring_to_front()  # 5: switch back (4, copying the address, is done below per test)
    await wait_heading(page, "Sign in to")
    assert await page.get_by_role("button", name="Start again").count() == 0  # only once it helps
    return page, task.task_id, failed[0]


async def test_six_actions_with_clipboard_permission(box: WebSandbox, browser: Any, shot: Shot) -> None:
    ctx = await browser.new_context()
    await ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=box.base_url)
    page, task_id, address = await reach_the_paste_step(box, ctx, shot)
    await page.evaluate("(text) => navigator.clipboard.writeText(text)", address)  # 4: copy the address
    await shot(page, "paste-step")
    await page.get_by_role("button", name="Paste and send").click()  # 6: one tap
    await wait_heading(page, "All done")
    await shot(page, "done")
    assert box.state_of(task_id) is S.DONE
    await assert_done_page_speaks_to_the_person(page, box, task_id)


async def test_paste_refused_by_the_browser_keeps_the_field(
    box: WebSandbox, browser: Any, shot: Shot
) -> None:
    # No clipboard permission granted: reading the clipboard is refused, the field and Send still work.
    ctx = await browser.new_context(**PHONE)
    page, task_id, address = await reach_the_paste_step(box, ctx, shot)
    await page.get_by_role("button", name="Paste and send").click()
    problem = page.locator(".paste-problem")
    await problem.wait_for(state="visible", timeout=15000)
    assert "paste the address into the field below" in await problem.inner_text()
    send = page.get_by_role("button", name="Send", exact=True)
    assert "primary" in (await send.get_attribute("class") or "")
    await shot(page, "clipboard-refused")
    assert box.state_of(task_id) is S.LOGIN_STARTED
    await paste_and_send(page, address, shot)
    await wait_heading(page, "All done")
    await assert_done_page_speaks_to_the_person(page, box, task_id)


async def test_no_clipboard_api_no_paste_button(box: WebSandbox, browser: Any, shot: Shot) -> None:
    ctx = await browser.new_context()
    await ctx.add_init_script(
        "Object.defineProperty(Navigator.prototype, 'clipboard', { get: () => undefined, configurable: true });"
    )
    page, _, _ = await reach_the_paste_step(box, ctx, shot)
    assert not await page.get_by_role("button", name="Paste and send").is_visible()
    assert await page.get_by_role("button", name="Send", exact=True).is_visible()
