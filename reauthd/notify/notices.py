"""Operator notices: messages about an account rather than a reauth task (issue 14).

An account held twice, a Codex plan about to lapse or changed, a failure a re-login will not fix
(deactivated, region blocked, payment). Each notice has a stable key; posting one records it in the store
(`kv` key `notice:<key>`) in the same transaction as its outbox rows, so it is told once, never again after
a restart. The outbox delivers `notice` rows like any other: quiet hours defer them, failures retry with
backoff, and after `retry_max_attempts` they are given up (nobody waits on them).

Who hears: the routes that match the credential's provider and CPA, plus the escalation route (the
operator), each URL once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import structlog

from reauthd.config import NotifyConfig
from reauthd.core.accounts import DuplicateGroup, PlanNotice
from reauthd.core.causes import OPERATOR_CAUSES, Advice, Cause
from reauthd.core.sanitize import mask_emails_in, sanitize_line
from reauthd.notify.routes import ESCALATION, channel_url, channels_of, routes_for_account
from reauthd.store import DeliveryKind, Store

log = structlog.get_logger(__name__)

KV_PREFIX = "notice:"
#: The newest notices kept for the operator view.
SHOWN = 200


class NoticeKind(StrEnum):
    DUPLICATE_HOLDER = "duplicate_holder"
    PLAN_LAPSE = "plan_lapse"
    PLAN_CHANGE = "plan_change"
    ACCOUNT_DEACTIVATED = "account_deactivated"
    REGION_BLOCKED = "region_blocked"
    PAYMENT = "payment"


@dataclass(frozen=True, slots=True)
class OperatorNotice:
    key: str  # stable, [0-9a-f_-]: one notice per key, ever
    kind: NoticeKind
    cpa: str
    provider: str
    title: str
    text: str


def duplicate_notice(group: DuplicateGroup) -> OperatorNotice:
    where = "in two or more CPAs" if group.cross_cpa else f"twice in CPA {group.holders[0].cpa}"
    holders = "; ".join(h.shown for h in group.holders)
    return OperatorNotice(
        key=group.key,
        kind=NoticeKind.DUPLICATE_HOLDER,
        cpa=group.holders[0].cpa,
        provider=group.provider,
        title=f"One account, {len(group.holders)} holders: {group.account} ({group.provider})",
        text=(
            f"{group.account} ({group.provider}) is held {where}: {holders}. Each holder refreshes the same "
            "login, and with rotating refresh tokens each refresh revokes the other's. Keep one: disable or "
            "delete the others, or give each its own login."
        ),
    )


def plan_notice(notice: PlanNotice) -> OperatorNotice:
    return OperatorNotice(
        key=notice.key,
        kind=NoticeKind(notice.kind),
        cpa=notice.cpa,
        provider=notice.provider,
        title=notice.title,
        text=notice.text,
    )


def cause_notice(
    key: str, cpa: str, provider: str, name: str, account: str, advice: Advice
) -> OperatorNotice | None:
    """The operator message for a failure a re-login will not fix; None for every other cause."""
    if advice.cause not in OPERATOR_CAUSES:
        return None
    label = {
        Cause.ACCOUNT_DEACTIVATED: "account deactivated",
        Cause.REGION_BLOCKED: "region or IP blocked",
        Cause.PAYMENT: "payment or plan",
    }[advice.cause]
    return OperatorNotice(
        key=key,
        kind=NoticeKind(advice.cause.value),
        cpa=cpa,
        provider=provider,
        title=f"Needs an operator ({label}): {account} ({provider} on {cpa})",
        text=(
            f"{advice.why} {advice.next_step} No re-login link was sent. "
            f"File: {mask_emails_in(name)} on CPA {cpa}."
            + (
                f" To retire it: reauthd retire --cpa {cpa} <file> --yes."
                if advice.cause is Cause.ACCOUNT_DEACTIVATED
                else ""
            )
        ),
    )


def operator_channels(provider: str, cpa: str, notify: NotifyConfig) -> list[str]:
    """The channels of the routes matching (provider, cpa) and of escalation, each URL once."""
    routes = routes_for_account(provider, cpa, notify)
    if notify.escalation is not None:
        routes.append(ESCALATION)
    channels: list[str] = []
    seen: set[str] = set()
    for route in routes:
        for name in channels_of(route, notify):
            url = channel_url(name, notify)
            key = url.get_secret_value() if url is not None else name
            if key not in seen:
                seen.add(key)
                channels.append(name)
    return channels


def dedupe_key(notice_key: str, channel: str) -> str:
    return f"notice:{notice_key}:{channel}"


def notice_key_of(dedupe: str | None) -> str | None:
    """The notice key inside a `notice` row's dedupe key (its channel may contain ':' and '#')."""
    if not dedupe or not dedupe.startswith("notice:"):
        return None
    return dedupe.split(":", 2)[1] or None


_DIGEST_PREFIX = "noticedigest:"
#: At most this many notices are listed in one digest message; the rest are counted.
DIGEST_ITEMS = 50
_LABELS = {
    NoticeKind.DUPLICATE_HOLDER: "accounts held more than once",
    NoticeKind.PLAN_LAPSE: "Codex plans ending soon",
    NoticeKind.PLAN_CHANGE: "Codex plans changed",
    NoticeKind.ACCOUNT_DEACTIVATED: "accounts deactivated (no re-login link sent)",
    NoticeKind.REGION_BLOCKED: "credentials blocked by region or IP (no re-login link sent)",
    NoticeKind.PAYMENT: "credentials that need payment (no re-login link sent)",
}


def post(store: Store, notify: NotifyConfig, notices: Iterable[OperatorNotice], now: datetime) -> list[str]:
    """Record and queue every notice not told before. Returns the keys queued now.

    Notices of one kind posted together for the same channels go out as one digest message (a billing
    cycle can end many Codex plans on the same day); each is still recorded on its own, so none is told
    again."""
    queued: list[str] = []
    groups: dict[tuple[NoticeKind, tuple[str, ...]], list[OperatorNotice]] = {}
    with store.transaction():
        for notice in notices:
            kv = KV_PREFIX + notice.key
            if store.get_kv(kv) is not None or notice.key in queued:
                continue
            channels = operator_channels(notice.provider, notice.cpa, notify)
            store.put_kv(
                kv,
                {
                    "kind": notice.kind.value,
                    "cpa": notice.cpa,
                    "provider": notice.provider,
                    "title": sanitize_line(notice.title),
                    "text": sanitize_line(notice.text),
                    "at": now.astimezone(UTC).isoformat(),
                    "channels": len(channels),
                },
                now,
            )
            groups.setdefault((notice.kind, tuple(channels)), []).append(notice)
            queued.append(notice.key)
            log.info("notice.posted", kind=notice.kind.value, cpa=notice.cpa, channels=len(channels))
        for (kind, group_channels), members in groups.items():
            key = members[0].key
            if len(members) > 1:
                key = _digest_key(kind, [m.key for m in members])
                shown = members[:DIGEST_ITEMS]
                store.put_kv(
                    _DIGEST_PREFIX + key,
                    {
                        "kind": kind.value,
                        "title": f"{len(members)} notices: {_LABELS[kind]}",
                        "text": "",
                        "items": [sanitize_line(m.text) for m in shown],
                        "more": len(members) - len(shown),
                        "at": now.astimezone(UTC).isoformat(),
                    },
                    now,
                )
            for channel in group_channels:
                store.enqueue_delivery(
                    kind=DeliveryKind.NOTICE,
                    route=channel,
                    task_ids=(),
                    due_at=now,
                    now=now,
                    dedupe_key=dedupe_key(key, channel),
                )
    return queued


def _digest_key(kind: NoticeKind, keys: list[str]) -> str:
    return hashlib.sha256("\x1f".join([kind.value, *sorted(keys)]).encode()).hexdigest()[:24]


def stored(store: Store, notice_key: str) -> dict[str, Any] | None:
    """The content of a notice or of a digest of notices, by the key in its delivery rows."""
    value = store.get_kv(KV_PREFIX + notice_key)
    if value is None:
        value = store.get_kv(_DIGEST_PREFIX + notice_key)
    return value if isinstance(value, dict) else None


def recent(kv_prefix: Callable[[str], dict[str, Any]], limit: int = SHOWN) -> list[dict[str, Any]]:
    """The newest notices told (operator view, newest first); `kv_prefix` is the store's."""
    values = [v for v in kv_prefix(KV_PREFIX).values() if isinstance(v, dict)]
    values.sort(key=lambda v: str(v.get("at", "")), reverse=True)
    return values[:limit]
