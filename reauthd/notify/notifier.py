"""Delivery of one message to one Apprise channel, and the health of all channels ("does anyone hear us?")."""

from __future__ import annotations

import html
import warnings
from dataclasses import dataclass
from datetime import datetime

import apprise
import structlog

from reauthd.config import NotifyConfig
from reauthd.notify.routes import all_channels, channel_url
from reauthd.notify.templates import Message, markdown_escape

log = structlog.get_logger(__name__)


def _load_apprise_plugins() -> None:
    # Apprise loads its plugins lazily on first use, and its e-mail plugin imports the stdlib `imghdr`, which
    # warns DeprecationWarning on Python 3.11/3.12. Load them once, now, with only that import's warnings
    # silenced, so the warning cannot surface later in the middle of a delivery (or fail a -W error run).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        apprise.Apprise.instantiate("json://localhost")


_load_apprise_plugins()

# Formats whose channels render markdown themselves or get it converted to HTML by Apprise; every other
# channel gets the plain-text body (Apprise has no markdown-to-text converter: it would show raw `**`).
_RICH = {apprise.NotifyFormat.MARKDOWN, apprise.NotifyFormat.HTML}


def _renders_markdown(notify_format: object) -> bool:
    # Apprise 2.x: a single format is what the service renders; a tuple means "passes any format through"
    # (webhooks such as json://), where plain text is the safe choice.
    return not isinstance(notify_format, tuple) and notify_format in _RICH


def channel_title(title: str, notify_format: object) -> str:
    """The title escaped for the channel's own format (issue 11): it carries names CPA lists (an e-mail, a
    provider), and Apprise hands a separate title to an HTML channel as it is."""
    if isinstance(notify_format, tuple):
        return title
    if notify_format == apprise.NotifyFormat.HTML:
        return html.escape(title, quote=False)
    if notify_format == apprise.NotifyFormat.MARKDOWN:
        return markdown_escape(title)
    return title


@dataclass(frozen=True, slots=True)
class SendOutcome:
    ok: bool
    error: str | None = None  # one sanitised sentence; never the URL (it carries the channel's token)


@dataclass(frozen=True, slots=True)
class NotifyHealth:
    """What the ops view shows: `ok` is False when no channel is configured or none works."""

    ok: bool
    channels: int
    failing: tuple[str, ...]
    detail: str
    last_success_at: datetime | None = None
    gave_up: int = 0  # messages given up since this process started (final notices only, see outbox)


class Notifier:
    """Sends through real Apprise, one channel (one URL) at a time, and tracks which channels work."""

    def __init__(self, notify: NotifyConfig, *, timeout_s: float = 30.0) -> None:
        self._notify = notify
        self._timeout_s = timeout_s
        self._last_ok: dict[str, bool] = {}
        self._last_success_at: datetime | None = None
        self._warned_none_working = False
        self._gave_up = 0
        if not all_channels(notify):
            log.error(
                "notify.no_channel_configured",
                detail="notify.urls and notify.routes are empty: tasks are raised but nobody is told",
            )

    def seed(self, outcomes: dict[str, bool]) -> None:
        """Start from the outcomes the outbox recorded before a restart (unknown channels count as working)."""
        for channel, ok in outcomes.items():
            self._last_ok.setdefault(channel, ok)
        health = self.health
        if not health.ok and health.channels:
            log.error("notify.no_working_channel", detail=health.detail)
            self._warned_none_working = True

    @property
    def channels(self) -> list[str]:
        return all_channels(self._notify)

    async def send(self, channel: str, message: Message, now: datetime) -> SendOutcome:
        """Deliver `message` to one channel. Never raises for a delivery problem; returns the outcome."""
        url = channel_url(channel, self._notify)
        if url is None:
            return SendOutcome(False, f"channel {channel} is no longer configured")
        plugin = apprise.Apprise.instantiate(url.get_secret_value())
        if plugin is None:
            outcome = SendOutcome(False, f"channel {channel} has an Apprise URL that Apprise does not accept")
            self._record(channel, outcome, now)
            return outcome
        rich = _renders_markdown(getattr(plugin, "notify_format", apprise.NotifyFormat.TEXT))
        body, body_format = (
            (message.markdown, apprise.NotifyFormat.MARKDOWN)
            if rich
            else (message.text, apprise.NotifyFormat.TEXT)
        )
        sender = apprise.Apprise()
        sender.add(plugin)
        title = channel_title(message.title, getattr(plugin, "notify_format", apprise.NotifyFormat.TEXT))
        try:
            result = await sender.async_notify(
                body=body, title=title, body_format=body_format, timeout=self._timeout_s
            )
        except (
            Exception
        ) as exc:  # a plugin bug must not kill the flush loop; no str(exc): it may hold the URL
            outcome = SendOutcome(False, f"channel {channel} raised {type(exc).__name__}")
        else:
            status = getattr(getattr(result, "status", None), "name", None) or (
                "SUCCESS" if result else "FAILURE"
            )
            outcome = (
                SendOutcome(True) if result else SendOutcome(False, f"channel {channel} answered {status}")
            )
        self._record(channel, outcome, now)
        return outcome

    def _record(self, channel: str, outcome: SendOutcome, now: datetime) -> None:
        self._last_ok[channel] = outcome.ok
        if outcome.ok:
            self._last_success_at = now
            self._warned_none_working = False
            return
        log.warning("notify.delivery_failed", channel=channel, error=outcome.error)
        health = self.health
        if not health.ok and not self._warned_none_working:
            self._warned_none_working = True
            log.error("notify.no_working_channel", detail=health.detail)

    def record_gave_up(self, channel: str, now: datetime) -> None:
        """The outbox gave up a message to `channel` after `retry_max_attempts` failed attempts."""
        self._gave_up += 1

    @property
    def health(self) -> NotifyHealth:
        channels = self.channels
        failing = tuple(c for c in channels if self._last_ok.get(c) is False)
        lost = f"; {self._gave_up} message(s) given up since start" if self._gave_up else ""
        if not channels:
            return NotifyHealth(False, 0, (), "no notification channel is configured (notify.urls is empty)")
        if len(failing) == len(channels):
            return NotifyHealth(
                False,
                len(channels),
                failing,
                f"no notification channel works: all {len(channels)} failed their last delivery{lost}",
                self._last_success_at,
                self._gave_up,
            )
        detail = "all channels work" if not failing else f"{len(failing)} of {len(channels)} channels failing"
        return NotifyHealth(True, len(channels), failing, detail + lost, self._last_success_at, self._gave_up)
