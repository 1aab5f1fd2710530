"""The notification outbox: decides which messages are due (digests, reminders, escalation, final notices),
persists them, and delivers them through Apprise with retries — level-triggered from the store.

Delivery guarantee. Each message to each channel is one outbox row. A row is *claimed* (attempts + 1, next
retry time) and the task links are minted in one transaction before the send; the send result and the task's
`open -> notified` transition are written in one transaction after it. A crash between those two leaves the
row `sending`: it is sent again after its retry time. That is at-least-once for the length of one HTTP call
and exactly-once otherwise — we accept a rare duplicate over a lost revocation notice. A restart never
re-plans a message that is already in the outbox (rows are planned from durable task fields and existing
rows, never from memory).

Retries. A failed attempt is retried with backoff (30 s doubling, capped at an hour). A message a task still
waits for — a digest, reminder, escalation, refused-login or operator message — is never given up: past
`retry_max_attempts` it is reported (`notify.still_undelivered`) and retried at the cap until it is delivered,
its task moves on (then it is skipped: nothing left to say), or a newer message about the task replaces it on
that channel (skipped as superseded). Only a final notice about a closed task is given up after
`retry_max_attempts` attempts, and that is counted where operators look (log, metrics, /healthz).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import structlog

from reauthd.config import NotifyConfig, QuietHoursConfig, Settings
from reauthd.core.model import ReauthTask, TaskState
from reauthd.core.reminders import (
    QuietHours,
    ReminderPolicy,
    defer_for_quiet_hours,
    digest_due_at,
    escalation_due,
    next_reminder_due,
    retry_delay,
)
from reauthd.core.tasks import AWAITING_PERSON, IllegalTransition
from reauthd.notify import notices
from reauthd.notify.notifier import Notifier, SendOutcome
from reauthd.notify.routes import ESCALATION, channel_url, channels_of, routes_for
from reauthd.notify.templates import TaskLink, link_url, render, render_notice
from reauthd.store import Delivery, DeliveryKind, DeliveryStatus, Store

log = structlog.get_logger(__name__)

_ACTION_KINDS = frozenset({DeliveryKind.NEW, DeliveryKind.REMINDER, DeliveryKind.ESCALATION})
# Messages that carry a fresh link (the person has something to do).
_LINKED_KINDS = _ACTION_KINDS | {DeliveryKind.REFUSED}
_FINAL_KIND = {
    TaskState.DONE: DeliveryKind.RESOLVED,
    TaskState.FAILED: DeliveryKind.FAILED,
    TaskState.EXPIRED: DeliveryKind.EXPIRED,
}
# Messages about tasks that still wait for someone: retried (at the backoff cap) for as long as the task
# needs them, never given up; once the task moves on (or a newer message replaces one) they are skipped.
_WAITING_KINDS = _ACTION_KINDS | {DeliveryKind.REFUSED, DeliveryKind.OPERATOR}
# A newer message of these kinds about the same task on the same channel makes an undelivered older one stale.
_SUPERSEDED_BY_NEWER = frozenset({DeliveryKind.REFUSED, DeliveryKind.OPERATOR})
_OPEN_ROWS = (DeliveryStatus.PENDING, DeliveryStatus.SENDING)
# Final notices are planned for tasks closed this recently; older ones were handled (or predate a channel).
_FINAL_LOOKBACK = timedelta(days=2)
#: `last_error` of a message skipped because a newer one about the same task replaced it on its channel.
SUPERSEDED = "superseded by a newer message"


def quiet_hours(config: QuietHoursConfig | None) -> QuietHours | None:
    if config is None:
        return None
    return QuietHours(config.start_time, config.end_time, ZoneInfo(config.timezone))


def reminder_policy(notify: NotifyConfig) -> ReminderPolicy:
    return ReminderPolicy(
        interval=timedelta(seconds=notify.reminder_interval_s),
        max_reminders=notify.max_reminders,
        escalate_after=notify.escalation.after_reminders if notify.escalation else None,
    )


@dataclass(slots=True)
class FlushReport:
    planned: int = 0
    sent: int = 0
    failed: int = 0
    gave_up: int = 0
    skipped: int = 0
    superseded: int = 0
    postponed: int = 0  # due but not tried: the flush's time budget ran out (they go out on the next flush)
    deferred: int = 0
    errors: list[str] = field(default_factory=list)


class Outbox:
    """Plans and delivers notifications. `flush(now)` is safe to call on every tick and after a restart."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        notifier: Notifier,
        *,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.settings = settings
        self.notifier = notifier
        self._notify = settings.notify
        self._quiet = quiet_hours(settings.notify.quiet_hours)
        self._policy = reminder_policy(settings.notify)
        self._jitter = jitter
        self._lock = asyncio.Lock()
        #: CPAs that are a CLIProxyAPIHome: reauthd's page cannot run their logins yet, so no link is minted.
        self._home_cpas = frozenset(c.name for c in settings.cpa if c.kind == "home")
        #: Called after each delivery attempt: the daemon's liveness counts it as progress of its tick.
        self.on_progress: Callable[[], None] | None = None
        notifier.seed(store.last_channel_outcomes())

    async def flush(self, now: datetime, *, budget_s: float | None = None) -> FlushReport:
        """Plan what is due, then deliver it. With `budget_s`, no delivery starts once that many seconds have
        passed: the rest stays due for the next flush (one blackholed webhook cannot hold a tick for
        100 × its timeout)."""
        async with self._lock:
            loop = asyncio.get_running_loop()
            deadline = None if budget_s is None else loop.time() + budget_s
            report = FlushReport()
            report.planned = self.plan(now)
            await self._deliver(now, report, deadline)
            return report

    # ------------------------------------------------------------------------------------ planning

    def plan(self, now: datetime) -> int:
        """Put every message that is due into the outbox (idempotent). Returns the number of rows added."""
        with self.store.transaction():
            live = self.store.list_tasks([s for s in TaskState if not s.terminal])
            added = self._plan_new(live, now)
            added += self._plan_follow_ups(live, now)
            added += self._plan_finals(now)
            added += self._plan_refused(live, now)
            added += self._plan_operator(live, now)
        return added

    def _enqueue(
        self, kind: DeliveryKind, route: str, tasks: Sequence[ReauthTask], now: datetime, tag: str
    ) -> int:
        return self._enqueue_channels(kind, channels_of(route, self._notify), tasks, now, tag)

    def _enqueue_channels(
        self,
        kind: DeliveryKind,
        channels: Iterable[str],
        tasks: Sequence[ReauthTask],
        now: datetime,
        tag: str,
    ) -> int:
        added = 0
        ids = sorted(t.id for t in tasks)
        digest = hashlib.sha256(",".join(ids).encode()).hexdigest()[:16]
        for channel in channels:
            row = self.store.enqueue_delivery(
                kind=kind,
                route=channel,
                task_ids=[t.id for t in tasks],
                due_at=now,
                now=now,
                dedupe_key=f"{kind.value}:{channel}:{tag}:{digest}",
            )
            added += row is not None
        return added

    def _by_route(self, tasks: Iterable[ReauthTask]) -> dict[str, list[ReauthTask]]:
        grouped: dict[str, list[ReauthTask]] = defaultdict(list)
        for task in tasks:
            for route in routes_for(task, self._notify):
                grouped[route].append(task)
        return grouped

    def _person_and_operator_channels(self, task: ReauthTask) -> list[str]:
        """The task's channels and the escalation route's: a message the operator must see too. A URL that
        is both one of the task's routes and the escalation route is told once, not twice."""
        routes = routes_for(task, self._notify)
        if self._notify.escalation is not None:
            routes.append(ESCALATION)
        channels: list[str] = []
        seen: set[str] = set()
        for route in routes:
            for name in channels_of(route, self._notify):
                url = channel_url(name, self._notify)
                key = url.get_secret_value() if url is not None else name
                if key not in seen:
                    seen.add(key)
                    channels.append(name)
        return channels

    def _plan_new(self, live: list[ReauthTask], now: datetime) -> int:
        announced = self.store.task_ids_with_delivery([DeliveryKind.NEW])
        waiting = [t for t in live if t.state is TaskState.OPEN and t.id not in announced]
        # Tasks no channel would hear about stay unannounced (and are retried once a channel is configured).
        waiting = [t for t in waiting if routes_for(t, self._notify)]
        due = digest_due_at([t.created_at for t in waiting], timedelta(seconds=self._notify.group_window_s))
        if due is None or now < due:
            return 0
        return sum(
            self._enqueue(DeliveryKind.NEW, r, ts, now, "new") for r, ts in self._by_route(waiting).items()
        )

    def _undelivered_channels(self) -> dict[str, set[str]]:
        """For each task, the channels that still hold an undelivered digest or reminder about it."""
        busy: dict[str, set[str]] = defaultdict(set)
        for row in self.store.list_deliveries(
            statuses=_OPEN_ROWS, kinds=[DeliveryKind.NEW, DeliveryKind.REMINDER]
        ):
            for task_id in row.task_ids:
                busy[task_id].add(row.route)
        return busy

    def _plan_follow_ups(self, live: list[ReauthTask], now: datetime) -> int:
        announced = self.store.task_ids_with_delivery([DeliveryKind.NEW])
        # A channel that has not delivered the previous message about a task (quiet hours, an outage) gets no
        # new reminder on top of it: it delivers that one when it can. The task's other channels go on, so one
        # dead URL does not silence the reminders everyone else should get.
        busy = self._undelivered_channels()
        goes_out_at = defer_for_quiet_hours(now, self._quiet)
        remind: list[ReauthTask] = []
        remind_on: dict[str, list[ReauthTask]] = defaultdict(list)
        escalate: list[ReauthTask] = []
        for task in live:
            if task.state not in AWAITING_PERSON or task.id not in announced:
                continue
            anchor = task.reminded_at or task.notified_at or task.created_at
            due = next_reminder_due(anchor, task.reminders_sent, self._policy, awaiting_person=True)
            free = [
                name
                for route in routes_for(task, self._notify)
                for name in channels_of(route, self._notify)
                if name not in busy.get(task.id, ())
            ]
            if due is not None and now >= due and free:
                remind.append(task)
                for name in free:
                    remind_on[name].append(task)
            esc = escalation_due(
                anchor,
                task.reminders_sent,
                self._policy,
                awaiting_person=True,
                already_escalated=task.escalated_at is not None,
            )
            if esc is not None and now >= esc:
                escalate.append(task)
        added = 0
        for task in remind:
            # The next reminder counts from when this one actually goes out (after quiet hours).
            self.store.update_task_fields(
                task.id, now, reminders_sent=task.reminders_sent + 1, reminded_at=goes_out_at
            )
        for name, tasks in remind_on.items():
            added += self._enqueue_channels(
                DeliveryKind.REMINDER, [name], tasks, now, f"r{max(t.reminders_sent for t in tasks) + 1}"
            )
        if escalate:
            for task in escalate:
                self.store.update_task_fields(task.id, now, escalated_at=goes_out_at)
            added += self._enqueue(DeliveryKind.ESCALATION, ESCALATION, escalate, now, "esc")
        return added

    def _plan_finals(self, now: datetime) -> int:
        kinds = list(_FINAL_KIND.values())
        told = self.store.task_ids_with_delivery(kinds)
        closed = self.store.list_tasks(list(_FINAL_KIND), closed_since=now - _FINAL_LOOKBACK)
        recent = [t for t in closed if t.id not in told and t.notified_at is not None]
        added = 0
        for state, kind in _FINAL_KIND.items():
            of_kind = [t for t in recent if t.state is state]
            for route, tasks in self._by_route(of_kind).items():
                added += self._enqueue(kind, route, tasks, now, "final")
        return added

    def _plan_refused(self, live: list[ReauthTask], now: datetime) -> int:
        """Tell the person and the operator when a new login failed verification (issue 6): once per
        refusal, keyed by the task's refusal count so a restart or a second tick never repeats it. The
        person hears it on the task's routes, the operator on the escalation route (when configured)."""
        added = 0
        for task in live:
            refusals = task.details.get("refused_logins") if task.details else None
            if task.state is not TaskState.OPENED or not isinstance(refusals, int) or refusals < 1:
                continue
            added += self._enqueue_channels(
                DeliveryKind.REFUSED,
                self._person_and_operator_channels(task),
                [task],
                now,
                f"refused{refusals}",
            )
        return added

    def _plan_operator(self, live: list[ReauthTask], now: datetime) -> int:
        """A task waiting for an operator (two candidates for the new file, no way to verify, a step
        stuck for a day) is announced once each time it enters that state, to its routes and escalation."""
        added = 0
        for task in live:
            if task.state is not TaskState.AWAITING_OPERATOR:
                continue
            entered = sum(
                1 for e in self.store.task_history(task.id) if e.to_state is TaskState.AWAITING_OPERATOR
            )
            added += self._enqueue_channels(
                DeliveryKind.OPERATOR,
                self._person_and_operator_channels(task),
                [task],
                now,
                f"operator{entered}",
            )
        return added

    # ------------------------------------------------------------------------------------ delivery

    async def _deliver(self, now: datetime, report: FlushReport, deadline: float | None = None) -> None:
        loop = asyncio.get_running_loop()
        per_channel: dict[str, list[Delivery]] = defaultdict(list)
        for delivery in self.store.due_deliveries(now):
            if self._quiet is not None and self._quiet.contains(now):
                self.store.reschedule_delivery(delivery.id, self._quiet.ends_after(now))
                report.deferred += 1
                continue
            per_channel[delivery.route].append(delivery)

        async def drain(rows: list[Delivery]) -> None:
            for done, delivery in enumerate(rows):  # in order within a channel: a digest before its reminder
                if deadline is not None and loop.time() >= deadline:
                    report.postponed += len(rows) - done
                    return
                await self._deliver_one(delivery, now, report)
                if self.on_progress is not None:
                    self.on_progress()

        # Channels are independent: one slow or dead webhook must not hold up the others. Store writes stay
        # synchronous between awaits, so the concurrent drains never interleave inside a transaction.
        await asyncio.gather(*(drain(rows) for rows in per_channel.values()))

    def _relevant(self, delivery: Delivery) -> tuple[list[ReauthTask], str]:
        """The tasks this message is still about, and why there are none when the list is empty."""
        tasks = [self.store.get_task(task_id) for task_id in delivery.task_ids]
        if delivery.kind in _ACTION_KINDS:
            # Someone opened the link, or the task ended: no need to ask any more.
            tasks = [t for t in tasks if t.state in AWAITING_PERSON]
        elif delivery.kind is DeliveryKind.OPERATOR:
            tasks = [t for t in tasks if t.state is TaskState.AWAITING_OPERATOR]
        elif delivery.kind is DeliveryKind.REFUSED:
            # Already logging in again (or finished): the message would be stale.
            tasks = [t for t in tasks if t.state is TaskState.OPENED]
        if not tasks:
            return [], "nothing left to say"
        if delivery.kind in _SUPERSEDED_BY_NEWER:
            tasks = [t for t in tasks if not self._superseded(delivery, t)]
            if not tasks:
                return [], SUPERSEDED
        return tasks, ""

    def _superseded(self, delivery: Delivery, task: ReauthTask) -> bool:
        """A later refusal (or a later wait for an operator) of this task was planned for this channel: the
        person hears the newest one only, not a backlog of stale ones once the channel works again."""
        return any(
            row.id > delivery.id and row.route == delivery.route
            for row in self.store.list_deliveries(task_id=task.id, kinds=[delivery.kind])
        )

    async def _deliver_one(self, delivery: Delivery, now: datetime, report: FlushReport) -> None:
        if delivery.kind is DeliveryKind.NOTICE:
            await self._deliver_notice(delivery, now, report)
            return
        with self.store.transaction():
            if channel_url(delivery.route, self._notify) is None:
                # A reload removed the route (or one of its URLs): nobody is left to hear it on this channel.
                self.store.finish_delivery(
                    delivery.id, DeliveryStatus.SKIPPED, now, error="the channel is no longer configured"
                )
                log.warning("notify.channel_removed", kind=delivery.kind.value, channel=delivery.route)
                report.skipped += 1
                return
            tasks, why_not = self._relevant(delivery)
            if not tasks:
                self.store.finish_delivery(delivery.id, DeliveryStatus.SKIPPED, now, error=why_not)
                if why_not == SUPERSEDED:
                    report.superseded += 1
                else:
                    report.skipped += 1
                return
            retry_at = now + retry_delay(delivery.attempts + 1, self._jitter())
            claimed = self.store.claim_delivery(delivery.id, now, retry_at)
            items = [
                TaskLink(
                    t,
                    self._link(t, now)
                    if delivery.kind in _LINKED_KINDS and t.cpa not in self._home_cpas
                    else None,
                    home=t.cpa in self._home_cpas,
                )
                for t in tasks
            ]
        try:
            message = render(delivery.kind, items)
            outcome = await self.notifier.send(delivery.route, message, now)
        except Exception as exc:  # a bug must count as a failed attempt, or the row would retry forever
            log.exception("notify.render_or_send_failed", kind=delivery.kind.value, channel=delivery.route)
            outcome = SendOutcome(False, f"internal error {type(exc).__name__}")
        with self.store.transaction():
            if outcome.ok:
                self.store.finish_delivery(delivery.id, DeliveryStatus.SENT, now)
                for task in tasks:
                    self._mark_notified(task, delivery, now)
                report.sent += 1
                log.info("notify.sent", kind=delivery.kind.value, channel=delivery.route, tasks=len(tasks))
                return
            error = outcome.error or "delivery failed"
            report.errors.append(error)
            exhausted = claimed.attempts >= self._notify.retry_max_attempts
            if exhausted and delivery.kind not in _WAITING_KINDS:
                # A final notice about a closed task: nobody has to act on it any more, so it is given up,
                # loudly (log, reauthd_notifications_gave_up_total, /healthz).
                self.store.finish_delivery(delivery.id, DeliveryStatus.GAVE_UP, now, error=error)
                self.notifier.record_gave_up(delivery.route, now)
                report.gave_up += 1
                log.error(
                    "notify.gave_up",
                    kind=delivery.kind.value,
                    channel=delivery.route,
                    attempts=claimed.attempts,
                )
                return
            # A task still waits for this message: it is retried at the backoff cap (every 30-60 min) for as
            # long as the task needs it, however long the outage lasts.
            self.store.finish_delivery(delivery.id, DeliveryStatus.PENDING, now, error=error)
            report.failed += 1
            if claimed.attempts == self._notify.retry_max_attempts:
                log.error(
                    "notify.still_undelivered",
                    kind=delivery.kind.value,
                    channel=delivery.route,
                    attempts=claimed.attempts,
                    detail="still retried, at most hourly, while its task waits",
                )

    async def _deliver_notice(self, delivery: Delivery, now: datetime, report: FlushReport) -> None:
        """An operator notice (reauthd.notify.notices): no task, no link; given up after
        `retry_max_attempts` like a final notice."""
        with self.store.transaction():
            key = notices.notice_key_of(delivery.dedupe_key)
            content = notices.stored(self.store, key) if key is not None else None
            if channel_url(delivery.route, self._notify) is None or content is None:
                why = "the channel is no longer configured" if content is not None else "the notice is gone"
                self.store.finish_delivery(delivery.id, DeliveryStatus.SKIPPED, now, error=why)
                report.skipped += 1
                return
            retry_at = now + retry_delay(delivery.attempts + 1, self._jitter())
            claimed = self.store.claim_delivery(delivery.id, now, retry_at)
        try:
            items = content.get("items")
            message = render_notice(
                str(content.get("title", "")),
                str(content.get("text", "")),
                [str(i) for i in items] if isinstance(items, list) else (),
                int(content.get("more", 0) or 0),
            )
            outcome = await self.notifier.send(delivery.route, message, now)
        except Exception as exc:  # a bug counts as a failed attempt
            log.exception("notify.render_or_send_failed", kind=delivery.kind.value, channel=delivery.route)
            outcome = SendOutcome(False, f"internal error {type(exc).__name__}")
        with self.store.transaction():
            if outcome.ok:
                self.store.finish_delivery(delivery.id, DeliveryStatus.SENT, now)
                report.sent += 1
                log.info("notify.sent", kind=delivery.kind.value, channel=delivery.route, tasks=0)
                return
            error = outcome.error or "delivery failed"
            report.errors.append(error)
            if claimed.attempts >= self._notify.retry_max_attempts:
                self.store.finish_delivery(delivery.id, DeliveryStatus.GAVE_UP, now, error=error)
                self.notifier.record_gave_up(delivery.route, now)
                report.gave_up += 1
                log.error("notify.gave_up", kind=delivery.kind.value, channel=delivery.route)
                return
            self.store.finish_delivery(delivery.id, DeliveryStatus.PENDING, now, error=error)
            report.failed += 1

    def _link(self, task: ReauthTask, now: datetime) -> str:
        token = self.store.issue_link_token(task.id, task.deadline, now)
        return link_url(self.settings.web.public_url, token)

    def _mark_notified(self, task: ReauthTask, delivery: Delivery, now: datetime) -> None:
        if task.state is not TaskState.OPEN:
            return
        # The person may have opened the link meanwhile: then there is nothing to record.
        with contextlib.suppress(IllegalTransition):
            self.store.apply_transition(
                task.id,
                TaskState.NOTIFIED,
                f"{delivery.kind.value} message delivered",
                now,
                expect=TaskState.OPEN,
            )
