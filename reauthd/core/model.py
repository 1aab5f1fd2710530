"""The domain vocabulary shared by every room of reauthd: credentials, evidence, verdicts, tasks.

Pure data, no I/O. Adapters (cpa/, detect/, store/) convert to and from these types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


@dataclass(frozen=True, slots=True)
class CredentialRef:
    """Which credential: the CPA it lives on, its file name and its stable `auth_index`."""

    cpa: str
    name: str
    auth_index: str


@dataclass(frozen=True, slots=True)
class Credential:
    """One entry of CPA's `GET /auth-files`, reduced to the fields reauthd relies on (contract §2.1)."""

    cpa: str
    name: str
    auth_index: str
    provider: str
    status: str  # CPA only ever sets "active", "error" or "disabled" (contract §2.2)
    status_message: str = ""
    disabled: bool = False
    unavailable: bool = False
    runtime_only: bool = False
    email: str | None = None
    label: str = ""
    source: str = "file"
    next_retry_after: datetime | None = None
    last_refresh: datetime | None = None
    modtime: datetime | None = None
    account_id: str | None = None  # Codex: id_token.chatgpt_account_id
    plan_type: str | None = None  # Codex: id_token.plan_type
    # Codex: id_token.chatgpt_subscription_active_until (the plan's end; issue 14's lapse notice)
    subscription_until: datetime | None = None
    # User settings carried in the listing (prefix/proxy_url are not listed: download the file for those).
    priority: int | None = None
    note: str | None = None

    @property
    def ref(self) -> CredentialRef:
        return CredentialRef(self.cpa, self.name, self.auth_index)


class EvidenceSource(StrEnum):
    LISTING = "listing"  # GET /auth-files status fields
    ERROR_STREAM = "error_stream"  # RESP SUBSCRIBE errors event
    PROBE = "probe"  # POST /api-call with the credential's own token
    CPAMP = "cpamp"  # CPAMP account-action candidate or inspection run
    MANUAL = "manual"  # an operator raised it (`reauthd reauth`)


@dataclass(frozen=True, slots=True)
class Evidence:
    """One observation about one credential. `text` is already sanitised (no tokens, no emails)."""

    source: EvidenceSource
    observed_at: datetime
    http_status: int | None = None
    text: str = ""
    code: str | None = None  # machine code when one is known (error.code, LastError.code, CPAMP reason)
    token_expired: bool | None = None  # probe only: the access token was already past `expired`


class VerdictKind(StrEnum):
    HEALTHY = "healthy"
    NEEDS_REAUTH = "needs_reauth"
    ACCOUNT_GONE = "account_gone"
    QUOTA = "quota"
    TRANSIENT = "transient"
    SUSPECT = "suspect"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: VerdictKind
    reason: str  # plain language, safe to show a person
    evidence: tuple[Evidence, ...] = ()
    confirmed: bool = False  # only meaningful for NEEDS_REAUTH: a person may be paged


class TaskState(StrEnum):
    OPEN = "open"  # raised, nothing sent yet
    NOTIFIED = "notified"  # a notification went out
    OPENED = "opened"  # the person pressed "Start login" (reminders stop)
    LOGIN_STARTED = "login_started"  # CPA minted an authorize URL / device code
    CALLBACK_RECEIVED = "callback_received"  # CPA accepted the callback; waiting for get-auth-status ok
    VERIFYING = "verifying"  # the new credential is being found and probed
    RETIRING = "retiring"  # the old credential is being disabled/deleted
    AWAITING_OPERATOR = "awaiting_operator"  # ambiguity or no verification path: a person must decide
    DONE = "done"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({TaskState.DONE, TaskState.FAILED, TaskState.EXPIRED, TaskState.CANCELLED})


@dataclass(frozen=True, slots=True)
class TaskEvent:
    at: datetime
    from_state: TaskState | None
    to_state: TaskState
    reason: str


@dataclass(slots=True)
class ReauthTask:
    id: str
    cpa: str
    auth_name: str
    auth_index: str
    provider: str
    account_masked: str
    state: TaskState
    reason: str
    created_at: datetime
    updated_at: datetime
    deadline: datetime
    history: list[TaskEvent] = field(default_factory=list)
    # --- added for the task lifecycle (issue 7); all optional so older callers keep working ---
    source: str = "detect"  # "detect" (a confirmed verdict) or "manual" (`reauthd reauth`)
    notified_at: datetime | None = None  # first notification about this task delivered
    opened_at: datetime | None = None  # the person pressed "Start login": reminders stop
    reminders_sent: int = 0  # reminders queued so far (bounded by notify.max_reminders)
    reminded_at: datetime | None = None  # when the last reminder was queued
    escalated_at: datetime | None = None
    closed_at: datetime | None = None  # when it reached a terminal state
    # Terminal tasks that did not end in `done` keep a credential quiet until it is seen healthy again,
    # so `tasks cancel` is not undone by the next reconcile tick.
    quiet_until_healthy: bool = False
    # Flow data written by the login/verify/retire paths.
    new_auth_name: str | None = None
    new_auth_index: str | None = None
    verification: str | None = None  # plain-language result of the verification probe
    disabled_by_person: bool = False  # the old file was disabled by a person, not by reauthd
    details: dict[str, Any] = field(default_factory=dict)  # small JSON-ready extras; never secrets
