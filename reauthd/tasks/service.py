"""The task service: applies reconcile decisions to the store and is the one API the daemon, the web page and
the CLI use to raise, open, cancel, list and show reauth tasks and to flush notifications."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import structlog

from reauthd.config import Settings
from reauthd.core.causes import cause_of, hint_of, task_advice
from reauthd.core.model import Credential, CredentialRef, ReauthTask, TaskState, Verdict, VerdictKind
from reauthd.core.sanitize import mask_account, sanitize_line
from reauthd.core.tasks import (
    ADOPTABLE,
    AWAITING_PERSON,
    CloseTask,
    IllegalTransition,
    RaiseTask,
    Rearm,
    Stuck,
    Subject,
    panel_logins,
    plan,
)
from reauthd.notify.notifier import Notifier, NotifyHealth
from reauthd.notify.outbox import FlushReport, Outbox
from reauthd.notify.routes import channels_of, routes_for
from reauthd.notify.templates import link_url
from reauthd.store import DeliveryKind, DuplicateOpenTask, Store

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]
VerdictItem = tuple[Subject | Credential, Verdict]


class LatestVerdict(Protocol):
    """Structural type of detection's `CredentialVerdict` (reauthd.detect.engine), so tasks need no import."""

    @property
    def ref(self) -> CredentialRef: ...
    @property
    def credential(self) -> Credential | None: ...
    @property
    def verdict(self) -> Verdict: ...


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class WatchedCredentials:
    """Credentials with an open task or a latest closed task: the only ones a *healthy* verdict can act
    on (close as done, re-arm). `auth_indexes` and `names` are (cpa, auth_index) / (cpa, file name) of
    those tasks; `unindexed_names` only of the tasks without an `auth_index` (matched by name)."""

    auth_indexes: frozenset[tuple[str, str]]
    names: frozenset[tuple[str, str]]
    unindexed_names: frozenset[tuple[str, str]]

    @classmethod
    def of(cls, tasks: Iterable[ReauthTask]) -> WatchedCredentials:
        indexes, names, unindexed = set(), set(), set()
        for task in tasks:
            names.add((task.cpa, task.auth_name))
            if task.auth_index:
                indexes.add((task.cpa, task.auth_index))
            else:
                unindexed.add((task.cpa, task.auth_name))
        return cls(frozenset(indexes), frozenset(names), frozenset(unindexed))

    def covers(self, cpa: str, name: str, auth_index: str) -> bool:
        """True for every credential `same_credential` could match to one of the tasks (and maybe more)."""
        return (cpa, auth_index) in self.auth_indexes or (cpa, name) in self.names


LatestSource = Callable[[WatchedCredentials], Iterable["LatestVerdict | VerdictItem"]]


@dataclass(slots=True)
class ReconcileResult:
    raised: list[str] = field(default_factory=list)
    closed: list[tuple[str, TaskState]] = field(default_factory=list)
    rearmed: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.raised or self.closed or self.rearmed or self.stuck)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def task_to_dict(task: ReauthTask, *, history: bool = False) -> dict[str, Any]:
    """The JSON shape of a task (`tasks list --json`, `tasks show --json`, the operator view).

    Field names are a public interface: add fields, never rename.
    """
    data: dict[str, Any] = {
        "id": task.id,
        "cpa": task.cpa,
        "auth_name": task.auth_name,
        "auth_index": task.auth_index,
        "provider": task.provider,
        "account": task.account_masked,
        "state": task.state.value,
        "reason": task.reason,
        "source": task.source,
        "created_at": _iso(task.created_at),
        "updated_at": _iso(task.updated_at),
        "deadline": _iso(task.deadline),
        "notified_at": _iso(task.notified_at),
        "opened_at": _iso(task.opened_at),
        "reminders_sent": task.reminders_sent,
        "escalated_at": _iso(task.escalated_at),
        "closed_at": _iso(task.closed_at),
        "new_auth_name": task.new_auth_name,
        "new_auth_index": task.new_auth_index,
        "verification": task.verification,
        "disabled_by_person": task.disabled_by_person,
        # The observations behind the detection (source, time, status, sanitised text), newest last.
        "evidence": list(task.details.get("evidence", [])),
    }
    # Why, and what to do (issue 14): a bounded cause, its plain sentence and the next step.
    advice = task_advice(task)
    data["cause"] = advice.cause.value
    data["advice"] = advice.as_dict()
    if history:
        data["history"] = [
            {
                "at": _iso(e.at),
                "from": e.from_state.value if e.from_state else None,
                "to": e.to_state.value,
                "reason": e.reason,
            }
            for e in task.history
        ]
    return data


class TaskService:
    """Raise, open, cancel and close reauth tasks; reconcile them with verdicts; flush notifications.

    Every state change goes through the store (persisted with its event before anything is sent), so a
    restart continues from the database. All methods take `now` so tests drive time.
    """

    def __init__(
        self,
        store: Store,
        settings: Settings,
        notifier: Notifier | None = None,
        clock: Clock = _utcnow,
        *,
        outbox: Outbox | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.expire_after = timedelta(seconds=settings.tasks.expire_after_s)
        self._notifier = notifier
        self._outbox = outbox

    @property
    def notifier(self) -> Notifier:
        # Built on first use: the CLI lists and cancels tasks without touching notification channels.
        if self._notifier is None:
            self._notifier = Notifier(self.settings.notify)
        return self._notifier

    @property
    def outbox(self) -> Outbox:
        if self._outbox is None:
            self._outbox = Outbox(self.store, self.settings, self.notifier)
        return self._outbox

    # ------------------------------------------------------------------------------------ raising

    def on_confirmed_revocation(
        self, credential: Credential | Subject, verdict: Verdict, now: datetime
    ) -> ReauthTask | None:
        """Detection confirmed a needs_reauth: raise a task unless the credential already has one.

        Returns the credential's open task (new or existing), or None when nothing was raised (not a confirmed
        needs_reauth, or the credential's last task asked to stay quiet until it is healthy again).
        """
        subject = Subject.of(credential) if isinstance(credential, Credential) else credential
        if verdict.kind is not VerdictKind.NEEDS_REAUTH or not verdict.confirmed:
            return None
        with self.store.transaction():
            self._apply(
                plan(self._relevant_tasks(), [(subject, verdict)], now, expire_after=self.expire_after), now
            )
            return self.store.find_open_task(subject.cpa, subject.auth_index, subject.name)

    async def on_confirmed(self, event: Any) -> None:
        """Adapter for detection's `on_confirmed` callback (a `reauthd.core.confirm.ConfirmedRevocation`).

        `account_gone` raises no task: a login will not bring a deactivated account back (it is logged).
        """
        verdict: Verdict = event.verdict
        if event.kind is not VerdictKind.NEEDS_REAUTH:
            log.warning("task.not_raised", cpa=event.ref.cpa, auth_name=event.ref.name, kind=str(event.kind))
            return
        subject = Subject(
            cpa=event.ref.cpa,
            name=event.ref.name,
            auth_index=event.ref.auth_index,
            provider=event.provider,
            account=event.account or mask_account(None),
        )
        if not verdict.confirmed:
            verdict = Verdict(verdict.kind, verdict.reason, verdict.evidence, confirmed=True)
        self.on_confirmed_revocation(subject, verdict, self.clock())

    def reconcile(
        self,
        latest: Iterable[LatestVerdict | VerdictItem] | Mapping[Any, LatestVerdict | VerdictItem],
        now: datetime,
    ) -> ReconcileResult:
        """One level-triggered step: raise, close (done/expired) and re-arm tasks from the latest verdicts.

        Accepts detection's `CredentialVerdict`s or `(Credential | Subject, Verdict)` pairs. Running it twice
        with the same input changes nothing the second time.
        """
        values = latest.values() if isinstance(latest, Mapping) else latest
        return self.reconcile_from(lambda watched: values, now)

    def reconcile_from(self, source: LatestSource, now: datetime) -> ReconcileResult:
        """`reconcile` for a large fleet: `source(watched)` returns the latest verdicts, of which only the
        ones that can act are planned — a confirmed needs_reauth (may raise) and a healthy verdict for a
        credential in `watched` (may close or re-arm). A source may leave the rest out (detection's
        `latest_unhealthy_and` does), so 50,000 healthy credentials cost nothing here."""
        with self.store.transaction():
            tasks = self._relevant_tasks()
            watched = WatchedCredentials.of(tasks)
            items = [item for raw in source(watched) if (item := _acting_item(raw, watched)) is not None]
            actions = plan(tasks, items, now, expire_after=self.expire_after)
            return self._apply(actions, now)

    def adopt_panel_logins(self, listing: Iterable[Credential], now: datetime) -> list[str]:
        """Hand tasks whose account logged in again elsewhere, under a new file name, to verification
        (`core.tasks.panel_logins`): the new file is tested, then the old one retired as after a login
        through reauthd's page. Returns the ids of the tasks handed over."""
        with self.store.transaction():
            tasks = self.store.list_tasks(list(ADOPTABLE), with_history=True)  # adopt_since reads it
            if not tasks:
                return []
            handed: list[str] = []
            for adopt in panel_logins(tasks, listing):
                try:
                    self.store.apply_transition(
                        adopt.task_id,
                        TaskState.VERIFYING,
                        adopt.reason,
                        now,
                        expect=ADOPTABLE,
                        new_auth_name=adopt.credential.name,
                        new_auth_index=adopt.credential.auth_index,
                    )
                except IllegalTransition:
                    continue  # the person started a login meanwhile: that path owns the outcome
                handed.append(adopt.task_id)
                log.info("task.login_elsewhere", task=adopt.task_id, new_auth_name=adopt.credential.name)
        return handed

    def raise_manual(
        self,
        cpa: str,
        auth_name: str,
        reason: str,
        now: datetime,
        *,
        auth_index: str = "",
        provider: str = "",
        account: str | None = None,
        account_masked: str | None = None,
    ) -> tuple[ReauthTask, bool]:
        """An operator asks for a re-login (`reauthd reauth`). Returns (task, created); an already open task
        for the credential is returned as is (created=False). Bypasses the stay-quiet rule on purpose."""
        existing = self.store.find_open_task(cpa, auth_index, auth_name)
        if existing is not None:
            return existing, False
        try:
            task = self.store.create_task(
                cpa=cpa,
                auth_name=auth_name,
                auth_index=auth_index,
                provider=provider or "unknown",
                account_masked=account_masked or mask_account(account),
                reason=reason or "an operator asked for a new login",
                now=now,
                deadline=now + self.expire_after,
                source="manual",
            )
        except DuplicateOpenTask:
            found = self.store.find_open_task(cpa, auth_index, auth_name)
            assert found is not None
            return found, False
        log.info("task.raised", task=task.id, cpa=cpa, auth_name=auth_name, source="manual")
        return task, True

    # ------------------------------------------------------------------------------------ person/operator

    def mark_opened(self, task_id: str, now: datetime) -> ReauthTask:
        """The person pressed "Start login" on the page (a POST; GET/HEAD change nothing): reminders stop.
        A task already past `notified` is returned unchanged."""
        with self.store.transaction():
            task = self.store.get_task(task_id)
            if task.state not in AWAITING_PERSON:
                return task
            return self.store.apply_transition(task_id, TaskState.OPENED, "the person opened the link", now)

    def cancel(self, task_id: str, now: datetime, reason: str = "cancelled by an operator") -> ReauthTask:
        """Cancel a task: its links stop working and its login session is forgotten. Raises
        IllegalTransition for a task that already ended or is retiring the old credential."""
        with self.store.transaction():
            task = self.store.apply_transition(task_id, TaskState.CANCELLED, reason, now)
            self.store.expire_link_tokens(task_id, now)
            self.store.delete_login_session(task_id)
        log.info("task.cancelled", task=task_id)
        return task

    def resend(self, task_id: str, now: datetime) -> int:
        """An operator asks for the task's message again: one reminder per channel of the task's routes, due
        now, delivered by the outbox on its next flush with a fresh link (the daemon's tick). Returns the
        number of messages queued (0: no channel would hear about this task)."""
        task = self.store.get_task(task_id, with_history=False)
        channels = [
            name
            for route in routes_for(task, self.settings.notify)
            for name in channels_of(route, self.settings.notify)
        ]
        tag = secrets.token_hex(4)  # every press is its own message
        queued = 0
        with self.store.transaction():
            for channel in channels:
                row = self.store.enqueue_delivery(
                    kind=DeliveryKind.REMINDER,
                    route=channel,
                    task_ids=[task.id],
                    due_at=now,
                    now=now,
                    dedupe_key=f"{DeliveryKind.REMINDER.value}:{channel}:resend-{tag}:{task.id}",
                )
                queued += row is not None
        log.info("task.resend", task=task_id, messages=queued)
        return queued

    def link_for(self, task_id: str, now: datetime) -> str:
        """A fresh opaque link for a task (`web.public_url` + `/r/<token>`), valid until its deadline."""
        task = self.store.get_task(task_id, with_history=False)
        token = self.store.issue_link_token(task_id, task.deadline, now)
        return link_url(self.settings.web.public_url, token)

    # ------------------------------------------------------------------------------------ views

    def list_tasks(self, states: Iterable[TaskState] | None = None) -> list[dict[str, Any]]:
        """Every task (or those in `states`), oldest first, as JSON-ready dicts."""
        return [task_to_dict(t) for t in self.store.list_tasks(states)]

    def show(self, task_id: str) -> dict[str, Any]:
        """One task with its history, its deliveries and the audit trail of its changes in CPA."""
        data = task_to_dict(self.store.get_task(task_id), history=True)
        data["deliveries"] = [
            {
                "kind": d.kind.value,
                "channel": d.route,
                "status": d.status.value,
                "attempts": d.attempts,
                "due_at": _iso(d.due_at),
                "sent_at": _iso(d.sent_at),
                "last_error": d.last_error,
            }
            for d in self.store.list_deliveries(task_id=task_id)
        ]
        data["audit"] = [
            {
                "at": _iso(a.at),
                "cpa": a.cpa,
                "action": a.action,
                "target_name": a.target_name,
                "target_auth_index": a.target_auth_index,
                "outcome": a.outcome,
            }
            for a in self.store.audit_for(task_id)
        ]
        return data

    # ------------------------------------------------------------------------------------ notifications

    async def flush_notifications(self, now: datetime) -> FlushReport:
        """Plan due messages (digests, reminders, escalation, final notices) and deliver what is due."""
        return await self.outbox.flush(now)

    @property
    def notify_health(self) -> NotifyHealth:
        """Channel health for the ops view; builds the outbox first so it reflects outcomes from before a restart."""
        return self.outbox.notifier.health

    # ------------------------------------------------------------------------------------ internals

    def _relevant_tasks(self) -> list[ReauthTask]:
        # Open tasks, plus the last closed task of each credential (for the stay-quiet / re-arm rules).
        tasks = self.store.list_tasks()
        latest_closed: dict[tuple[str, str], ReauthTask] = {}
        result = []
        for task in tasks:
            if not task.state.terminal:
                result.append(task)
                continue
            key = (task.cpa, task.auth_index or f"name:{task.auth_name}")
            current = latest_closed.get(key)
            if current is None or (task.closed_at or task.updated_at) >= (
                current.closed_at or current.updated_at
            ):
                latest_closed[key] = task
        return result + list(latest_closed.values())

    def _apply(self, actions: list[CloseTask | RaiseTask | Rearm | Stuck], now: datetime) -> ReconcileResult:
        result = ReconcileResult()
        for action in actions:
            if isinstance(action, RaiseTask):
                subject = action.subject
                try:
                    task = self.store.create_task(
                        cpa=subject.cpa,
                        auth_name=subject.name,
                        auth_index=subject.auth_index,
                        provider=subject.provider or "unknown",
                        account_masked=subject.account or mask_account(None),
                        reason=sanitize_line(action.verdict.reason),
                        now=now,
                        deadline=now + self.expire_after,
                    )
                except DuplicateOpenTask:
                    continue
                extra: dict[str, Any] = {"cause": cause_of(action.verdict, subject.provider or "").value}
                hint = hint_of(action.verdict, subject.provider or "")
                if hint is not None:
                    extra["cause_hint"] = hint
                if action.verdict.evidence:
                    extra["evidence"] = evidence_record(action.verdict)
                self.store.update_task_fields(task.id, now, details={**task.details, **extra})
                result.raised.append(task.id)
                log.info(
                    "task.raised", task=task.id, cpa=subject.cpa, auth_name=subject.name, source="detect"
                )
            elif isinstance(action, CloseTask):
                try:
                    self.store.apply_transition(action.task_id, action.to_state, action.reason, now)
                except IllegalTransition:
                    continue
                if action.to_state is TaskState.EXPIRED:
                    self.store.delete_login_session(action.task_id)
                result.closed.append((action.task_id, action.to_state))
                log.info("task.closed", task=action.task_id, to=action.to_state.value)
            elif isinstance(action, Stuck):
                try:
                    self.store.apply_transition(
                        action.task_id, TaskState.AWAITING_OPERATOR, action.reason, now
                    )
                except IllegalTransition:
                    continue
                result.stuck.append(action.task_id)
                log.warning("task.stuck", task=action.task_id)
            else:
                self.store.update_task_fields(action.task_id, now, quiet_until_healthy=False)
                result.rearmed.append(action.task_id)
        return result


#: How much of a verdict's evidence a task keeps (the newest observations) and how long each text may be.
EVIDENCE_KEPT = 5
EVIDENCE_TEXT_CHARS = 300


def evidence_record(verdict: Verdict) -> list[dict[str, Any]]:
    """The observations behind a verdict, JSON-ready for the task's details (`tasks show`, the operator view).
    Evidence texts are sanitised when observed; they are sanitised again here, as everything stored is."""
    newest = sorted(verdict.evidence, key=lambda e: e.observed_at)[-EVIDENCE_KEPT:]
    return [
        {
            "source": e.source.value,
            "observed_at": e.observed_at.isoformat(),
            **({"http_status": e.http_status} if e.http_status is not None else {}),
            **({"code": sanitize_line(e.code)} if e.code else {}),
            **({"token_expired": e.token_expired} if e.token_expired is not None else {}),
            "text": sanitize_line(e.text)[:EVIDENCE_TEXT_CHARS],
        }
        for e in newest
    ]


def _acting_item(raw: Any, watched: WatchedCredentials) -> VerdictItem | None:
    """`raw` as a plan item if it can lead to an action (see `plan`); None for the many that cannot."""
    if isinstance(raw, tuple) and len(raw) == 2:
        verdict, who = raw[1], raw[0]
    else:
        verdict, who = getattr(raw, "verdict", None), getattr(raw, "ref", None)
    kind = getattr(verdict, "kind", None)
    if kind is VerdictKind.HEALTHY:
        if who is None or not watched.covers(who.cpa, who.name, who.auth_index):
            return None
    elif kind is not VerdictKind.NEEDS_REAUTH or not getattr(verdict, "confirmed", False):
        return None
    return _as_item(raw)


def _as_item(raw: Any) -> VerdictItem | None:
    if isinstance(raw, tuple) and len(raw) == 2:
        item, verdict = raw
        return (item, verdict)
    ref = getattr(raw, "ref", None)
    verdict = getattr(raw, "verdict", None)
    if ref is None or verdict is None:
        return None
    credential = getattr(raw, "credential", None)
    if isinstance(credential, Credential):
        return (credential, verdict)
    return (Subject(cpa=ref.cpa, name=ref.name, auth_index=ref.auth_index), verdict)
