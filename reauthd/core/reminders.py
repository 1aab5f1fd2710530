"""Notification schedules (pure): digest grouping windows, bounded reminders, escalation, quiet hours, and
delivery retry backoff. Every function takes the time as an argument."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

# A wave of revocations keeps extending the digest window, but never beyond this many windows: a slow
# trickle must not postpone the first message forever.
GROUP_WINDOW_CAP = 10


@dataclass(frozen=True, slots=True)
class QuietHours:
    """Local times between which nothing is delivered (deferred, never dropped). `start == end` = never."""

    start: time
    end: time
    tz: ZoneInfo

    def contains(self, at: datetime) -> bool:
        local = at.astimezone(self.tz).time().replace(tzinfo=None)
        if self.start == self.end:
            return False
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end  # the window crosses midnight

    def ends_after(self, at: datetime) -> datetime:
        """The first moment after `at` that is outside the window (`at` itself when it is outside)."""
        if not self.contains(at):
            return at
        local = at.astimezone(self.tz)
        candidate = datetime.combine(local.date(), self.end, tzinfo=self.tz)
        if candidate <= local:
            candidate = datetime.combine(local.date() + timedelta(days=1), self.end, tzinfo=self.tz)
        # Wall-clock arithmetic in the zone: a DST jump may land the end an hour off; re-check and step.
        result = candidate.astimezone(UTC)
        while self.contains(result):
            result += timedelta(minutes=15)
        return result


def defer_for_quiet_hours(at: datetime, quiet: QuietHours | None) -> datetime:
    """When a message planned for `at` may actually go out."""
    return at if quiet is None else quiet.ends_after(at)


def digest_due_at(confirmed_at: Sequence[datetime], window: timedelta) -> datetime | None:
    """When the digest of not-yet-announced tasks goes out: `window` after the newest one (a wave keeps the
    window open), but at most GROUP_WINDOW_CAP windows after the oldest. None when there is nothing."""
    if not confirmed_at:
        return None
    newest, oldest = max(confirmed_at), min(confirmed_at)
    return min(newest + window, oldest + window * GROUP_WINDOW_CAP)


@dataclass(frozen=True, slots=True)
class ReminderPolicy:
    interval: timedelta
    max_reminders: int
    escalate_after: int | None = None  # N unanswered reminders; None = no escalation configured


def next_reminder_due(
    anchor: datetime, reminders_sent: int, policy: ReminderPolicy, *, awaiting_person: bool
) -> datetime | None:
    """When the next reminder is due, or None when reminders are over (max reached or the link was opened).

    `anchor` is the last reminder's time, else the first notification's (or the task's creation).
    """
    if not awaiting_person or reminders_sent >= policy.max_reminders:
        return None
    return anchor + policy.interval


def escalation_due(
    anchor: datetime,
    reminders_sent: int,
    policy: ReminderPolicy,
    *,
    awaiting_person: bool,
    already_escalated: bool,
) -> datetime | None:
    """When to escalate: one reminder interval after the N-th unanswered reminder (N capped at the number of
    reminders that will ever be sent, so a small `max_reminders` cannot disable escalation)."""
    if policy.escalate_after is None or already_escalated or not awaiting_person:
        return None
    needed = min(policy.escalate_after, policy.max_reminders)
    if reminders_sent < needed:
        return None
    return anchor + policy.interval


def retry_delay(
    attempts: int,
    jitter: float,
    *,
    base: timedelta = timedelta(seconds=30),
    cap: timedelta = timedelta(hours=1),
) -> timedelta:
    """Backoff before attempt `attempts + 1`: base·2^(attempts-1), capped, scaled by 0.5..1.0 with
    `jitter` in [0, 1] (the caller draws it; keeping randomness out makes this a table)."""
    if attempts < 1:
        return timedelta(0)
    factor: int = 2 ** min(attempts - 1, 30)
    bounded: timedelta = min(base * factor, cap)
    return bounded * (0.5 + 0.5 * min(max(jitter, 0.0), 1.0))
