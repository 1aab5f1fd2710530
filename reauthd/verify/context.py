"""Shared by the phases of one verify-and-retire run: configuration, the run's context and its plumbing."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import TYPE_CHECKING, Any

import structlog

from reauthd.core.identity import OldCredential
from reauthd.core.model import Credential, ReauthTask, TaskState
from reauthd.core.retire import VERIFY_PREFIX_STEM, RetirePolicy
from reauthd.core.tasks import IllegalTransition
from reauthd.cpa.client import CPAClient
from reauthd.detect.probes import NEVER_VIA_API_CALL
from reauthd.verify.flow import Flow, NewCredential, Phase

if TYPE_CHECKING:
    from reauthd.verify.runner import CompletionRunner

log = structlog.get_logger(__name__)

S = TaskState
ACTIVE_STATES = frozenset({S.VERIFYING, S.RETIRING})
#: After this many refused verifications in a row the task fails instead of offering yet another login.
MAX_REFUSED_LOGINS = 3


@dataclass(frozen=True, slots=True)
class CompletionConfig:
    policy: RetirePolicy = "delete"
    # CPA's watcher registers a new file about a second after the login (contract §12); a listing that
    # still does not show it after this long means something else is wrong: ask the operator.
    find_timeout: timedelta = timedelta(minutes=3)
    # One advance() keeps polling the listing this long before handing back to the next tick.
    find_inline_budget_s: float = 10.0
    find_poll_interval_s: float = 1.0
    # A file of another account written since the login, with no file of the right account this long after
    # the login finished, is the login's result: say so instead of waiting out find_timeout (issue 11).
    other_account_settle: timedelta = timedelta(seconds=10)
    # Files written before the login started (minus this allowance for the clocks of CPA and reauthd
    # disagreeing) are not the new credential.
    clock_skew: timedelta = timedelta(seconds=30)
    verify_max_attempts: int = 4
    verify_inline_attempts: int = 2  # attempts within one advance() before waiting for the next tick
    verify_inline_delay_s: float = 2.0
    verify_retry_after: timedelta = timedelta(seconds=30)
    # The public API routes a fresh prefix only once CPA re-registered the auth: retry this often.
    not_routed_retries: int = 5
    not_routed_delay_s: float = 1.0
    # provider -> model for the public-API verification (`[[cpa]] verify_models`).
    verify_models: Mapping[str, str] = field(default_factory=dict)
    # Retire steps that fail (CPA down) are retried with backoff; after this many failures a person looks.
    max_retire_errors: int = 30
    retire_backoff_s: float = 2.0
    retire_backoff_max_s: float = 300.0


class Next(Enum):
    CONTINUE = "continue"  # the phase moved on: run the next one now
    WAIT = "wait"  # nothing more to do before the next tick
    STOP = "stop"  # the task left verifying/retiring


Sleep = Callable[[float], Awaitable[None]]


def attempt_key(task: ReauthTask) -> str:
    """The login attempt this run belongs to: when the task last entered `verifying`."""
    for event in reversed(task.history):
        if event.to_state is S.VERIFYING:
            return event.at.isoformat()
    return task.created_at.isoformat()


def login_started(task: ReauthTask) -> datetime:
    """When the person's latest login began: files older than that cannot be its result."""
    for event in reversed(task.history):
        if event.to_state is S.LOGIN_STARTED:
            return event.at
    return task.opened_at or task.created_at


def fingerprint(entry: Credential) -> str:
    parts = (entry.status, entry.disabled, entry.modtime, entry.last_refresh)
    return "|".join("" if p is None else str(p) for p in parts)


def modtime_of(entry: Credential | None) -> str | None:
    return entry.modtime.isoformat() if entry is not None and entry.modtime is not None else None


def temporary_prefix(task_id: str, attempt: str) -> str:
    # Unique per task and login attempt, one path segment, recognisable (never copied as a setting).
    digest = hashlib.sha256(f"{task_id}|{attempt}".encode()).hexdigest()[:12]
    return f"{VERIFY_PREFIX_STEM}{digest}"


class RunBase:
    """One advance() of one task: the task, its flow record, its CPA client and the plumbing every phase uses."""

    def __init__(
        self,
        runner: CompletionRunner,
        task: ReauthTask,
        flow: Flow,
        client: CPAClient,
        clock: Callable[[], datetime],
        *,
        wait: bool = True,
    ) -> None:
        self.runner = runner
        self.store = runner.store
        self.config = runner.config
        self.task = task
        self.flow = flow
        self.client = client
        self.clock = clock
        self.inline_started = clock()
        self.wait = wait  # may this call poll CPA for a while, or look once and return (the daemon's tick)

    # ---------------------------------------------------------------------------------- plumbing

    def save(self, **fields: Any) -> None:
        """Persist the flow record (and any task fields) now: the step boundary a crash resumes from."""
        self.task = self.store.update_task_fields(
            self.task.id, self.clock(), details=self.runner.details_with(self.task.id, self.flow), **fields
        )

    def audit(self, action: str, target: NewCredential | OldCredential | Credential, outcome: str) -> None:
        self.store.record_audit(
            task_id=self.task.id,
            cpa=self.task.cpa,
            action=action,
            target_name=target.name,
            target_auth_index=target.auth_index,
            outcome=outcome,
            at=self.clock(),
        )

    def transition(
        self, to: TaskState, reason: str, *, details: dict[str, Any] | None = None, **fields: Any
    ) -> bool:
        """Move the task unless someone else moved it meanwhile (False then). `details` defaults to the
        flow's own."""
        self.flow.phase = Phase.FINISHED if to not in ACTIVE_STATES else self.flow.phase
        try:
            self.task = self.store.apply_transition(
                self.task.id,
                to,
                reason,
                self.clock(),
                expect=ACTIVE_STATES,
                details=self.runner.details_with(self.task.id, self.flow) if details is None else details,
                **fields,
            )
        except IllegalTransition:
            # Someone else (an operator, a cancel) moved the task meanwhile: theirs wins.
            log.info("verify.transition_lost", task_id=self.task.id, to=to.value)
            return False
        return True

    def to_operator(self, reason: str) -> Next:
        self.transition(S.AWAITING_OPERATOR, reason)
        log.info("verify.awaiting_operator", task_id=self.task.id, reason=reason)
        return Next.STOP

    @property
    def inline_attempts(self) -> int:
        """Test requests one call may make (with short sleeps) before handing back to the next tick."""
        return self.config.verify_inline_attempts if self.wait else 1

    @property
    def old(self) -> OldCredential:
        return OldCredential(self.task.auth_name, self.task.auth_index, self.task.provider)

    def probe_available(self, provider: str) -> bool:
        return self.runner.probes.has_probe(provider) and provider.lower() not in NEVER_VIA_API_CALL

    def verify_model(self, provider: str) -> str | None:
        per_cpa = self.runner.verify_models.get(self.task.cpa, {})
        model: str | None = per_cpa.get(provider) or self.config.verify_models.get(provider)
        return model

    async def list_all(self) -> list[Credential]:
        return [f.to_credential(self.task.cpa) for f in await self.client.list_auth_files()]

    async def entry(self, name: str) -> Credential | None:
        for f in await self.client.list_auth_files(name=name):
            if f.name == name:
                return f.to_credential(self.task.cpa)
        return None
