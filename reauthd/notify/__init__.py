"""Notifications through Apprise: message templates, routes, the persistent outbox and channel health."""

from reauthd.notify.notifier import Notifier, NotifyHealth, SendOutcome
from reauthd.notify.outbox import FlushReport, Outbox
from reauthd.notify.templates import Message, TaskLink, link_url, render

__all__ = [
    "FlushReport",
    "Message",
    "Notifier",
    "NotifyHealth",
    "Outbox",
    "SendOutcome",
    "TaskLink",
    "link_url",
    "render",
]
