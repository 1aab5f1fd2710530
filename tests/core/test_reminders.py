"""Digest windows, reminders, escalation, quiet hours and retry backoff, as tables with explicit times."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from reauthd.core.reminders import (
    GROUP_WINDOW_CAP,
    QuietHours,
    ReminderPolicy,
    defer_for_quiet_hours,
    digest_due_at,
    escalation_due,
    next_reminder_due,
    retry_delay,
)

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
W = timedelta(seconds=30)
H4 = timedelta(hours=4)


def at(hh: int, mm: int = 0, day: int = 27, tz: ZoneInfo | None = None) -> datetime:
    return datetime(2026, 11, day, hh, mm, tzinfo=tz or UTC)


@pytest.mark.parametrize(
    ("times", "due"),
    [
        ([], None),
        ([T0], T0 + W),
        ([T0, T0 + timedelta(seconds=10)], T0 + timedelta(seconds=40)),  # a wave keeps the window open
        ([T0 + timedelta(seconds=10), T0], T0 + timedelta(seconds=40)),  # order does not matter
        ([T0 + W * i for i in range(50)], T0 + W * GROUP_WINDOW_CAP),  # ...but not forever
    ],
)
def test_digest_due_at(times: list[datetime], due: datetime | None) -> None:
    assert digest_due_at(times, W) == due


def test_digest_with_zero_window_is_immediate() -> None:
    assert digest_due_at([T0, T0 + timedelta(seconds=5)], timedelta(0)) == T0


POLICY = ReminderPolicy(interval=H4, max_reminders=3, escalate_after=2)


@pytest.mark.parametrize(
    ("sent", "awaiting", "due"),
    [
        (0, True, T0 + H4),
        (2, True, T0 + H4),
        (3, True, None),  # at most max_reminders
        (0, False, None),  # the link was opened: reminders stop
    ],
)
def test_next_reminder_due(sent: int, awaiting: bool, due: datetime | None) -> None:
    assert next_reminder_due(T0, sent, POLICY, awaiting_person=awaiting) == due


def test_no_reminders_when_max_is_zero() -> None:
    assert next_reminder_due(T0, 0, ReminderPolicy(H4, 0), awaiting_person=True) is None


@pytest.mark.parametrize(
    ("policy", "sent", "awaiting", "escalated", "due"),
    [
        (POLICY, 1, True, False, None),  # only one reminder so far
        (POLICY, 2, True, False, T0 + H4),  # one interval after the 2nd unanswered reminder
        (POLICY, 3, True, False, T0 + H4),
        (POLICY, 2, True, True, None),  # once
        (POLICY, 2, False, False, None),  # opened: no escalation
        (ReminderPolicy(H4, 3, None), 3, True, False, None),  # not configured
        (ReminderPolicy(H4, 1, 2), 1, True, False, T0 + H4),  # capped by max_reminders
        (ReminderPolicy(H4, 0, 2), 0, True, False, T0 + H4),
    ],
)
def test_escalation_due(
    policy: ReminderPolicy, sent: int, awaiting: bool, escalated: bool, due: datetime | None
) -> None:
    assert escalation_due(T0, sent, policy, awaiting_person=awaiting, already_escalated=escalated) == due


NIGHT = QuietHours(time(22, 0), time(7, 0), ZoneInfo("UTC"))
LUNCH = QuietHours(time(12, 0), time(13, 0), ZoneInfo("UTC"))
BERLIN = ZoneInfo("Europe/Berlin")
NIGHT_BERLIN = QuietHours(time(22, 0), time(7, 0), BERLIN)


@pytest.mark.parametrize(
    ("quiet", "when", "expected"),
    [
        (None, at(23), at(23)),
        (NIGHT, at(21, 59), at(21, 59)),
        (NIGHT, at(22), at(7, day=28)),  # deferred to the morning, never dropped
        (NIGHT, at(23, 30), at(7, day=28)),
        (NIGHT, at(3), at(7)),  # after midnight: the same morning
        (NIGHT, at(7), at(7)),
        (LUNCH, at(12, 30), at(13)),
        (LUNCH, at(13, 1), at(13, 1)),
        (NIGHT_BERLIN, at(21, 30), at(6, day=28)),  # 22:30 Berlin (UTC+1) -> 07:00 Berlin = 06:00 UTC
        (NIGHT_BERLIN, at(20, 59), at(20, 59)),
        (QuietHours(time(8), time(8), ZoneInfo("UTC")), at(8), at(8)),  # empty window
    ],
)
def test_quiet_hours_defer(quiet: QuietHours | None, when: datetime, expected: datetime) -> None:
    assert defer_for_quiet_hours(when, quiet) == expected


def test_quiet_hours_across_dst_change() -> None:
    # Night of the autumn change in Berlin (2026-10-25, 03:00 CEST -> 02:00 CET).
    quiet = QuietHours(time(1, 0), time(3, 0), BERLIN)
    start = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST
    end = defer_for_quiet_hours(start, quiet)
    assert not quiet.contains(end)
    assert end > start and end - start <= timedelta(hours=2)


@pytest.mark.parametrize(
    ("attempts", "jitter", "delay"),
    [
        (0, 1.0, timedelta(0)),
        (1, 1.0, timedelta(seconds=30)),
        (1, 0.0, timedelta(seconds=15)),
        (2, 1.0, timedelta(seconds=60)),
        (5, 1.0, timedelta(seconds=480)),
        (8, 1.0, timedelta(hours=1)),  # capped
        (99, 0.5, timedelta(minutes=45)),
        (3, 7.0, timedelta(seconds=120)),  # jitter clamped
    ],
)
def test_retry_delay(attempts: int, jitter: float, delay: timedelta) -> None:
    assert retry_delay(attempts, jitter) == delay
