"""Message texts: what they say, and the canary: nothing secret ever reaches a message."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from reauthd.core.model import ReauthTask, TaskEvent, TaskState
from reauthd.notify.templates import TaskLink, link_url, render
from reauthd.store import DeliveryKind

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
TOKEN = "Zk3xQ9v_8bLr2mN0pQrStUvWxYz0123456789abcdE"
LINK = link_url("https://reauthd.example.org/", TOKEN)

CANARIES = {
    "authorize": "https://auth.openai.com/oauth/authorize?client_id=app&state=CANARYSTATE1234",
    "callback": "http://localhost:1455/auth/callback?code=CANARYCODE5678&state=CANARYSTATE1234",
    "access": "eyJhbGciOiJIUzI1NiJ9.CANARYACCESSPAYLOAD.sig",
    "refresh": "rt_CANARYREFRESH0123456789abcdef",
    "mgmt": "CANARYMGMTKEY-0123456789abcdef0123456789",
    "email": "canary.person@example.com",
}


def hostile_task(state: TaskState = TaskState.NOTIFIED) -> ReauthTask:
    reason = (
        f"401 from {CANARIES['authorize']} Bearer {CANARIES['access']} refresh_token={CANARIES['refresh']} "
        f"management key {CANARIES['mgmt']} callback {CANARIES['callback']} for {CANARIES['email']}"
    )
    return ReauthTask(
        id="t1",
        cpa="main",
        auth_name="codex-canary.person@example.com.json",
        auth_index="abcd",
        provider="codex",
        account_masked=CANARIES["email"],  # a careless caller passed the raw e-mail
        state=state,
        reason=reason,
        created_at=T0,
        updated_at=T0,
        deadline=T0 + timedelta(days=7),
        history=[TaskEvent(T0, TaskState.VERIFYING, state, f"verification said {CANARIES['access']}")],
    )


@pytest.mark.parametrize("kind", list(DeliveryKind))
@pytest.mark.parametrize("count", [1, 3])
def test_canary_no_secret_reaches_any_message(kind: DeliveryKind, count: int) -> None:
    items = [TaskLink(hostile_task(), LINK) for _ in range(count)]
    message = render(kind, items)
    for body in (message.title, message.text, message.markdown):
        for name, secret in CANARIES.items():
            assert secret not in body, name
        for fragment in ("CANARY", "canary.person", "localhost:1455", "oauth/authorize", "code=", "state="):
            assert fragment not in body


@pytest.mark.parametrize("kind", [DeliveryKind.NEW, DeliveryKind.REMINDER, DeliveryKind.ESCALATION])
def test_action_messages_carry_one_link_per_task_and_the_facts(kind: DeliveryKind) -> None:
    tasks = [
        TaskLink(
            ReauthTask(
                id=f"t{i}",
                cpa="main",
                auth_name=f"codex-{i}.json",
                auth_index=f"i{i}",
                provider="codex",
                account_masked=f"u{i}***@example.com",
                state=TaskState.OPEN,
                reason="token revoked by the provider",
                created_at=T0,
                updated_at=T0,
                deadline=T0 + timedelta(days=7),
            ),
            link_url("https://reauthd.example.org", f"{TOKEN[:-2]}{i:02d}"),
        )
        for i in range(50)
    ]
    message = render(kind, tasks)
    assert "50 accounts" in message.title
    for item in tasks:
        assert message.text.count(item.link or "") == 1
        assert item.link in message.markdown
    assert "u7***@example.com" in message.text
    assert "token revoked by the provider" in message.text
    assert "2026-12-04 12:00 UTC" in message.text
    assert "CPA main" in message.text


def test_single_task_title_names_the_account() -> None:
    task = hostile_task(TaskState.OPEN)
    task.account_masked = "a***@example.com"
    message = render(DeliveryKind.NEW, [TaskLink(task, LINK)])
    assert message.title == "Log in again: a***@example.com (codex on main)"
    assert LINK in message.text and "https://reauthd.example.org/r/" + TOKEN == LINK


@pytest.mark.parametrize("kind", [DeliveryKind.RESOLVED, DeliveryKind.FAILED, DeliveryKind.EXPIRED])
def test_final_messages_have_no_link_and_say_the_outcome(kind: DeliveryKind) -> None:
    task = hostile_task(TaskState.DONE)
    task.history = [TaskEvent(T0, TaskState.NOTIFIED, TaskState.DONE, "the credential works again")]
    message = render(kind, [TaskLink(task, LINK)])
    assert LINK not in message.text and LINK not in message.markdown
    assert "the credential works again" in message.text


def test_link_tokens_must_be_opaque() -> None:
    with pytest.raises(ValueError, match="opaque"):
        link_url("https://x.org", "../../admin?x=1")


def test_empty_message_is_a_bug() -> None:
    with pytest.raises(ValueError, match="at least one"):
        render(DeliveryKind.NEW, [])


def test_markdown_cannot_smuggle_html_or_links() -> None:
    task = hostile_task(TaskState.OPEN)
    task.account_masked = "m***@example.com"
    task.reason = "<img src=x onerror=alert(1)> [click](javascript:alert(1)) **bold**"
    message = render(DeliveryKind.NEW, [TaskLink(task, LINK)])
    assert "<img" not in message.markdown and "](javascript" not in message.markdown
    assert "\\*\\*bold\\*\\*" in message.markdown
    assert message.markdown.count("](") == 1  # only our own link


def test_a_home_task_gets_no_link_but_the_way_through_homes_panel() -> None:
    """Tasks on a CLIProxyAPIHome (`kind = "home"`): reauthd's page cannot run their login yet, so the message
    carries no link (even one handed in by mistake) and says to log in through Home's panel; a digest that
    also holds a plain-CPA task keeps that task's link and the usual instruction."""
    from dataclasses import replace

    plain = replace(hostile_task(), reason="token revoked")
    on_home = replace(plain, id="t2", cpa="home")
    alone = render(DeliveryKind.REMINDER, [TaskLink(on_home, LINK, home=True)])
    for body in (alone.text, alone.markdown):
        assert "/r/" not in body and "Open the link" not in body and "opens the link" not in body
        assert "log in again through the Home's own management panel" in body
        assert "reauthd tasks cancel" in body
    both = render(DeliveryKind.NEW, [TaskLink(plain, LINK), TaskLink(on_home, None, home=True)])
    assert both.text.count("/r/") == 1 and "Open the link" in both.text
    assert "How: log in again through the Home's own management panel" in both.text
    closing = render(DeliveryKind.RESOLVED, [TaskLink(on_home, None, home=True)])
    assert "Home's own" not in closing.text  # nothing to do any more
