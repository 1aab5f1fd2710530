"""The recipient page's instructions agree with what CPA really does for each kind of login (contract §4)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from reauthd.core.model import ReauthTask, TaskEvent, TaskState
from reauthd.login.view import describe
from reauthd.store.records import LoginSession
from reauthd.web.pages import SiteLinks, page, task_body
from reauthd.web.render import Markup

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
LINKS = SiteLinks(prefix="", secure=False, origin="http://127.0.0.1:8390")
WEBUI_NOTE = "same computer as this browser"


def _task(provider: str) -> ReauthTask:
    return ReauthTask(
        id="t1",
        cpa="main",
        auth_name=f"{provider}-a.json",
        auth_index="0123456789abcdef",
        provider=provider,
        account_masked="a***@example.com",
        state=TaskState.LOGIN_STARTED,
        reason="token invalidated",
        created_at=T0,
        updated_at=T0,
        deadline=T0 + timedelta(days=7),
        history=[TaskEvent(T0, None, TaskState.OPEN, "token invalidated")],
    )


def _page(provider: str, flow: str, *, user_code: str | None = None, webui: bool = False) -> str:
    task = _task(provider)
    session = LoginSession(
        "t1", provider, "s" * 32, flow, T0 + timedelta(minutes=5), user_code=user_code, created_at=T0
    )
    view = describe(task, session, T0 + timedelta(seconds=10))
    return str(task_body(LINKS, task, view, "csrf-token", None, webui=webui))


@pytest.mark.parametrize("provider", ["codex", "claude", "antigravity"])
def test_webui_note_for_the_providers_cpa_forwards(provider: str) -> None:
    assert WEBUI_NOTE in _page(provider, "callback", webui=True)
    assert WEBUI_NOTE not in _page(provider, "callback", webui=False)


def test_no_webui_note_for_a_plugin_login_cpa_does_not_forward() -> None:
    """CPA takes `is_webui` for anthropic, codex and antigravity only (contract §4.1): a plugin's callback
    login on a web-UI CPA still ends on a localhost address the person has to paste."""
    page = _page("gemini-cli", "callback", webui=True)
    assert WEBUI_NOTE not in page
    assert "send it here" in page


def test_device_page_with_a_code() -> None:
    page = _page("xai", "device", user_code="ABCD-EFGH")
    assert 'id="user-code"' in page and "ABCD-EFGH" in page
    assert "enter the code below" in page


def test_device_page_without_a_code_shows_no_empty_code_box() -> None:
    """CPA omits `user_code` when the provider gives none (contract §4.1)."""
    page = _page("my-plugin", "device", user_code=None)
    assert 'id="user-code"' not in page and "Copy code" not in page
    assert "enter the code" not in page
    assert "Open the verification page and approve the sign-in there." in page


def test_callback_page_has_paste_and_send_and_no_start_again_while_the_sign_in_is_live() -> None:
    page = _page("codex", "callback")
    assert 'data-paste="callback_url"' in page and ">Paste and send</button>" in page
    assert 'name="callback_url"' in page and ">Send</button>" in page  # the plain field stays
    assert "/restart" not in page and "Start again" not in page
    # Why the address is needed, and where it goes: only to the proxy server named.
    assert "reauthd sends it only to the proxy server <strong>main</strong>, nowhere else." in page


def test_callback_page_offers_start_again_once_the_sign_in_lapsed() -> None:
    task = _task("codex")
    session = LoginSession("t1", "codex", "s" * 32, "callback", T0 + timedelta(minutes=5), created_at=T0)
    view = describe(task, session, T0 + timedelta(minutes=6))
    page = str(task_body(LINKS, task, view, "csrf-token", None))
    assert "/t/t1/restart" in page and "Start again" in page and "Paste and send" not in page


def test_start_opens_the_sign_in_only_for_a_pasted_address_login() -> None:
    def landing(provider: str) -> str:
        task = replace(_task(provider), state=TaskState.OPEN)
        return str(task_body(LINKS, task, describe(task, None, T0), "csrf-token", None))

    assert 'data-open-signin="/t/t1/signin"' in landing("codex")
    assert "data-open-signin" not in landing("xai")  # the code must be seen before the verification page
    assert "data-open-signin" not in landing("vertex")


def test_every_page_names_who_runs_it() -> None:
    links = SiteLinks("", False, "http://127.0.0.1:8390", "Platform <team>", "ops@example.com")
    body = page(links, "Title", Markup("<p>x</p>")).body.decode()
    assert (
        '<p class="run-by">This page is run by <strong>Platform &lt;team&gt;</strong>. '
        "Questions: ops@example.com.</p>" in body
    )
    assert 'class="run-by"' not in page(LINKS, "Title", Markup("")).body.decode()
