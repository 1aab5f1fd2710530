"""Real Apprise delivering to a loopback HTTP endpoint and to an in-process schema; channel health."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import apprise
from apprise.decorators import notify as apprise_plugin

from reauthd.notify.notifier import Notifier
from reauthd.notify.templates import Message
from tests.notify.notify_settings import make_settings
from tests.support.inbox import Inbox

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
MSG = Message(title="Log in again", text="plain *body*\n", markdown="**markdown** body\n")

MARKDOWN_SEEN: list[dict[str, Any]] = []


@apprise_plugin(on="reauthdtestmd", body_format=apprise.NotifyFormat.MARKDOWN)
def _markdown_channel(body: str, title: str, *args: Any, **kwargs: Any) -> bool:
    MARKDOWN_SEEN.append({"title": title, "body": body, "meta": kwargs.get("meta", {})})
    return "fail" not in str(kwargs.get("meta", {}).get("host", ""))


async def test_json_delivery_to_loopback(inbox: Inbox, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, urls=[inbox.url()])
    notifier = Notifier(settings.notify, timeout_s=5)
    outcome = await notifier.send("default#0", MSG, T0)
    assert outcome.ok, outcome.error
    (received,) = inbox.messages()
    assert received["title"] == "Log in again"
    assert (
        received["message"].strip() == "plain *body*"
    )  # json:// passes any format through: we send plain text
    assert notifier.health.ok and notifier.health.last_success_at == T0


async def test_markdown_channel_gets_markdown(tmp_path: Path) -> None:
    MARKDOWN_SEEN.clear()
    settings = make_settings(tmp_path, urls=["reauthdtestmd://ok"])
    outcome = await Notifier(settings.notify).send("default#0", MSG, T0)
    assert outcome.ok
    assert MARKDOWN_SEEN[-1]["body"].strip() == "**markdown** body"


async def test_failing_endpoint_is_reported_without_the_url(inbox: Inbox, tmp_path: Path) -> None:
    inbox.fail_with = 500
    url = inbox.url("secret-webhook-token-123")
    settings = make_settings(tmp_path, urls=[url])
    notifier = Notifier(settings.notify, timeout_s=5)
    outcome = await notifier.send("default#0", MSG, T0)
    assert not outcome.ok and outcome.error
    assert "secret-webhook-token-123" not in outcome.error and str(inbox.port) not in outcome.error
    health = notifier.health
    assert not health.ok and health.failing == ("default#0",)
    assert "no notification channel works" in health.detail


async def test_one_working_channel_keeps_health_ok(inbox: Inbox, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, urls=[inbox.url(), "reauthdtestmd://fail"])
    notifier = Notifier(settings.notify, timeout_s=5)
    assert (await notifier.send("default#0", MSG, T0)).ok
    assert not (await notifier.send("default#1", MSG, T0)).ok
    assert notifier.health.ok and notifier.health.failing == ("default#1",)


async def test_unusable_url_and_unknown_channel(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, urls=["notaschema://whatever/token-abc"])
    notifier = Notifier(settings.notify)
    outcome = await notifier.send("default#0", MSG, T0)
    assert not outcome.ok and "token-abc" not in (outcome.error or "")
    missing = await notifier.send("route:gone#0", MSG, T0)
    assert not missing.ok and "no longer configured" in (missing.error or "")


def test_no_channel_configured_is_unhealthy(tmp_path: Path) -> None:
    health = Notifier(make_settings(tmp_path).notify).health
    assert not health.ok and health.channels == 0 and "no notification channel" in health.detail


HTML_SEEN: list[dict[str, Any]] = []


@apprise_plugin(on="reauthdtesthtml", body_format=apprise.NotifyFormat.HTML)
def _html_channel(body: str, title: str, *args: Any, **kwargs: Any) -> bool:
    HTML_SEEN.append({"title": title, "body": body})
    return True


async def test_titles_are_escaped_for_each_channels_format(inbox: Inbox, tmp_path: Path) -> None:
    """Issue 11 item 11: a title carries names CPA lists (an e-mail, a provider); HTML in them stays text."""
    hostile = Message(
        title='Log in again: <img src=x onerror=alert(1)>@x.com (p*w_n on "main")',
        text="t\n",
        markdown="m\n",
    )
    HTML_SEEN.clear()
    MARKDOWN_SEEN.clear()
    settings = make_settings(tmp_path, urls=["reauthdtesthtml://ok", "reauthdtestmd://ok", inbox.url()])
    notifier = Notifier(settings.notify)
    for n in range(3):
        assert (await notifier.send(f"default#{n}", hostile, T0)).ok
    assert (
        HTML_SEEN[-1]["title"] == 'Log in again: &lt;img src=x onerror=alert(1)&gt;@x.com (p*w_n on "main")'
    )
    md = MARKDOWN_SEEN[-1]["title"]
    assert "<" not in md and ">" not in md and "\\*" in md and "\\_" in md
    (plain,) = inbox.messages()
    assert plain["title"] == hostile.title  # json:// is not rendered: the title is as written
