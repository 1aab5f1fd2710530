"""Rows of reauthd's store other than tasks: outbox deliveries, audit entries, login sessions, key gates."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class DeliveryKind(StrEnum):
    NEW = "new"  # digest of newly raised tasks
    REMINDER = "reminder"
    ESCALATION = "escalation"
    RESOLVED = "resolved"
    FAILED = "failed"
    EXPIRED = "expired"
    REFUSED = "refused"  # the new login did not pass verification; the person may log in again
    OPERATOR = "operator"  # the task waits for an operator's decision (ambiguity, no verification path)
    NOTICE = "notice"  # an operator notice about an account, not a task (issue 14: held twice, plan, cause)


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # waiting for due_at / next_attempt_at
    SENDING = "sending"  # claimed; a crash here means "unknown": it is sent again (at-least-once)
    SENT = "sent"
    GAVE_UP = "gave_up"  # retry_max_attempts exhausted
    SKIPPED = "skipped"  # nothing left to say (every task moved on) or the route no longer exists


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message to one Apprise URL (`route` = "<route>#<url index>"), about one or more tasks."""

    id: int
    kind: DeliveryKind
    route: str
    task_ids: tuple[str, ...]
    created_at: datetime
    due_at: datetime
    next_attempt_at: datetime
    attempts: int
    status: DeliveryStatus
    last_error: str | None
    sent_at: datetime | None
    dedupe_key: str | None = None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One change reauthd made in CPA, with CPA's (sanitised) answer."""

    id: int
    task_id: str | None
    cpa: str
    action: str  # e.g. "patch-status disabled", "delete", "patch-fields", "oauth-callback"
    target_name: str
    target_auth_index: str
    outcome: str
    at: datetime


@dataclass(frozen=True, slots=True)
class LoginSession:
    """What resumes a login after a restart: CPA's OAuth `state` to poll `get-auth-status` with.

    Never holds the callback URL or the OAuth code. `oauth_state` is kept out of repr so it never lands in a
    log line or a traceback by accident.
    """

    task_id: str
    provider: str
    oauth_state: str = field(repr=False)
    flow: str  # "callback", "device" or "vertex"
    expires_at: datetime
    user_code: str | None = None
    verification_url: str | None = field(default=None, repr=False)
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class KeyGateSnapshot:
    """Per CPA: the fingerprint of a management key and what reauthd learned about it (never the key)."""

    cpa: str
    fingerprint: str
    snapshot: dict[str, Any]
    updated_at: datetime
