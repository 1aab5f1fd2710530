"""Notification texts: a title and a body (plain text, and markdown for channels that render it).

Only these facts reach a message: the masked account, the provider, the CPA name, the plain reason, the
deadline and reauthd's own opaque link. Never an authorize URL, an OAuth state or code, a token, a callback
URL or a management key — every task-derived string passes through `sanitize_line` again here, so a leak
upstream (a verdict reason quoting an upstream body) still cannot reach a chat channel.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from reauthd.core.causes import task_advice
from reauthd.core.model import ReauthTask
from reauthd.core.sanitize import mask_account, sanitize_line
from reauthd.store.records import DeliveryKind

# Only what changes meaning mid-line; escaping every punctuation mark leaves stray backslashes on channels
# whose markdown flavour does not know that escape. Angle brackets are replaced, not escaped: Markdown passes
# raw HTML through to HTML channels.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]()#])")
_ANGLES = str.maketrans({"<": "‹", ">": "›"})
_TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_-]{20,200}$")


@dataclass(frozen=True, slots=True)
class TaskLink:
    """A task as it appears in a message, with its opaque link (None for messages that need no action)."""

    task: ReauthTask
    link: str | None = None
    #: The task's CPA is a CLIProxyAPIHome (`kind = "home"`): no link, the person logs in through Home.
    home: bool = False


@dataclass(frozen=True, slots=True)
class Message:
    title: str
    text: str
    markdown: str


def link_url(public_url: str, token: str) -> str:
    """reauthd's own link for a task: `web.public_url` + `/r/<token>`; the token is the only variable part."""
    if not _TOKEN_SHAPE.match(token):
        raise ValueError("a link token must be an opaque url-safe string")
    return f"{public_url.rstrip('/')}/r/{token}"


def _md(text: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", text.translate(_ANGLES))


def markdown_escape(text: str) -> str:
    """Text (a title built from CPA-controlled names) made inert for a markdown channel."""
    return _md(text)


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _account(task: ReauthTask) -> str:
    shown = task.account_masked or ""
    # Defence in depth: a caller that passed a raw e-mail still produces a masked one here.
    if "@" in shown and "***@" not in shown:
        shown = mask_account(shown)
    return sanitize_line(shown) or "(unknown account)"


def _closing_reason(task: ReauthTask) -> str:
    if task.history:
        return sanitize_line(task.history[-1].reason)
    return sanitize_line(task.reason)


@dataclass(frozen=True, slots=True)
class _Line:
    account: str
    provider: str
    cpa: str
    reason: str
    deadline: str
    link: str | None
    cause: str = ""
    next_step: str = ""
    home: bool = False


def _line(item: TaskLink, *, closing: bool) -> _Line:
    task = item.task
    advice = task_advice(task)
    return _Line(
        cause=sanitize_line(advice.why),
        next_step=sanitize_line(advice.next_step),
        account=_account(task),
        provider=sanitize_line(task.provider) or "unknown provider",
        cpa=sanitize_line(task.cpa),
        reason=_closing_reason(task) if closing else sanitize_line(task.reason),
        deadline=_when(task.deadline),
        link=item.link if advice.relogin and not item.home else None,  # no link when a login would not help
        home=item.home and advice.relogin,
    )


_HEADLINES: dict[DeliveryKind, tuple[str, str, str]] = {
    # kind: (title for one task, title for several, opening sentence)
    DeliveryKind.NEW: (
        "Log in again: {account} ({provider} on {cpa})",
        "Log in again: {n} accounts need a new login",
        "These accounts stopped working and need a person to log in again with the provider.",
    ),
    DeliveryKind.REMINDER: (
        "Reminder: log in again to {account} ({provider} on {cpa})",
        "Reminder: {n} accounts still need a new login",
        "Still waiting for a new login. Nothing happens until someone opens the link.",
    ),
    DeliveryKind.ESCALATION: (
        "Unanswered: {account} ({provider} on {cpa}) still needs a new login",
        "Unanswered: {n} accounts still need a new login",
        "Reminders about these accounts went unanswered, so you are being told as well.",
    ),
    DeliveryKind.RESOLVED: (
        "Resolved: {account} ({provider} on {cpa}) works again",
        "Resolved: {n} accounts work again",
        "No action needed any more.",
    ),
    DeliveryKind.FAILED: (
        "Re-login failed: {account} ({provider} on {cpa})",
        "Re-login failed for {n} accounts",
        "reauthd could not finish the re-login. The old credential was left as it was; an operator should look.",
    ),
    DeliveryKind.REFUSED: (
        "The new login did not work: {account} ({provider} on {cpa})",
        "The new login did not work for {n} accounts",
        "The new login could not be verified, so the old credential was left exactly as it was.",
    ),
    DeliveryKind.OPERATOR: (
        "Needs an operator: {account} ({provider} on {cpa})",
        "Needs an operator: {n} accounts",
        "reauthd stopped before changing anything and waits for an operator's decision "
        "(see the operator view or `reauthd tasks show`). Nothing was retired.",
    ),
    DeliveryKind.NOTICE: (
        "Notice: {account} ({provider} on {cpa})",
        "Notice about {n} accounts",
        "reauthd noticed something an operator should look at; nothing was changed.",
    ),
    DeliveryKind.EXPIRED: (
        "Expired: nobody logged in again to {account} ({provider} on {cpa})",
        "Expired: {n} accounts were not logged in again",
        "The deadline passed without a new login. These accounts still do not work.",
    ),
}

# The opening sentence when a message is about one account (the table above speaks of several).
_OPENING_FOR_ONE: dict[DeliveryKind, str] = {
    DeliveryKind.NEW: "This account stopped working and needs a person to log in again with the provider.",
    DeliveryKind.ESCALATION: "Reminders about this account went unanswered, so you are being told as well.",
    DeliveryKind.FAILED: "reauthd could not finish the re-login. The old credential was left as it was; "
    "an operator should look.",
    DeliveryKind.EXPIRED: "The deadline passed without a new login. This account still does not work.",
}

_ACTION = (
    "Open the link, press the button and log in with the provider. Each link belongs to one account and "
    "stops working when its task ends."
)


# Accounts on a CLIProxyAPIHome: reauthd's page cannot run their login yet (README, "CPA clusters (Home)").
_HOME_LOGIN = "log in again through the Home's own management panel (reauthd has no page for this yet)"
_HOME_ACTION = (
    "Accounts on a CLIProxyAPIHome cluster have no re-login link: log in again through the Home's own "
    "management panel. reauthd does not pick that login up by itself yet, so an operator closes the task "
    "afterwards (reauthd tasks cancel); until then reminders continue."
)


def render(kind: DeliveryKind, items: Sequence[TaskLink]) -> Message:
    """The message for `kind` about `items` (one task or a digest of many)."""
    if not items:
        raise ValueError("a message needs at least one task")
    closing = kind in (
        DeliveryKind.RESOLVED,
        DeliveryKind.FAILED,
        DeliveryKind.EXPIRED,
        DeliveryKind.OPERATOR,
        DeliveryKind.NOTICE,
    )
    lines = [_line(item, closing=closing) for item in items]
    one, many, opening = _HEADLINES[kind]
    if len(lines) == 1:
        opening = _OPENING_FOR_ONE.get(kind, opening)
    if kind is DeliveryKind.REMINDER and all(line.home for line in lines):
        opening = "Still waiting for a new login."  # there is no link to open
    first = lines[0]
    title = (
        one.format(account=first.account, provider=first.provider, cpa=first.cpa)
        if len(lines) == 1
        else many.format(n=len(lines))
    )
    text_parts = [opening, ""]
    md_parts = [_md(opening), ""]
    for number, line in enumerate(lines, start=1):
        prefix = f"{number}. " if len(lines) > 1 else "- "
        text_parts.append(f"{prefix}{line.account} — {line.provider} on CPA {line.cpa}")
        md_parts.append(f"{prefix}**{_md(line.account)}** — {_md(line.provider)} on CPA {_md(line.cpa)}")
        label = "Outcome" if closing else "Why"
        text_parts.append(f"   {label}: {line.reason}")
        md_parts.append(f"   {label}: {_md(line.reason)}")
        if not closing and line.cause:
            text_parts.append(f"   Cause: {line.cause}")
            md_parts.append(f"   Cause: {_md(line.cause)}")
            text_parts.append(f"   Next step: {line.next_step}")
            md_parts.append(f"   Next step: {_md(line.next_step)}")
        if not closing:
            text_parts.append(f"   Log in before: {line.deadline}")
            md_parts.append(f"   Log in before: {_md(line.deadline)}")
        if line.link and not closing:
            text_parts.append(f"   Link: {line.link}")
            md_parts.append(f"   [Open the re-login page]({line.link})")
        if line.home and not closing:
            text_parts.append(f"   How: {_HOME_LOGIN}")
            md_parts.append(f"   How: {_md(_HOME_LOGIN)}")
        text_parts.append("")
        md_parts.append("")
    if not closing and not all(line.home for line in lines):
        text_parts.append(_ACTION)
        md_parts.append(_md(_ACTION))
    if not closing and any(line.home for line in lines):
        text_parts.append(_HOME_ACTION)
        md_parts.append(_md(_HOME_ACTION))
    return Message(
        title=title, text="\n".join(text_parts).rstrip() + "\n", markdown="\n".join(md_parts).rstrip() + "\n"
    )


def render_notice(title: str, text: str, items: Sequence[str] = (), more: int = 0) -> Message:
    """An operator notice (issue 14): about an account, not a task; no link. A digest lists its notices
    (`items`) and counts the rest (`more`). Every line is sanitised again."""
    title = sanitize_line(title)
    lines = [sanitize_line(text)] if text else []
    lines += [f"- {sanitize_line(item)}" for item in items]
    if more:
        lines.append(f"- and {more} more (see `reauthd scan` or the operator view)")
    closing = "Each notice is sent once. See `reauthd scan` or the operator view for the current state."
    return Message(
        title=title,
        text="\n".join([*lines, "", closing]) + "\n",
        markdown="\n".join([*(_md(line) for line in lines), "", _md(closing)]) + "\n",
    )
