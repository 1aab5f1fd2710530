"""The outbox end to end with real Apprise to a loopback endpoint: grouping, routes, reminders, escalation,
quiet hours, retries with backoff, final notices, and restarts without duplicate sends."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from reauthd.config import Settings
from reauthd.core.model import TaskState
from reauthd.notify.notifier import Notifier, SendOutcome
from reauthd.notify.outbox import SUPERSEDED, Outbox
from reauthd.store import DeliveryKind, DeliveryStatus, Store
from tests.notify.notify_settings import make_settings
from tests.support.inbox import Inbox

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
S = TaskState
LINK = re.compile(r"https://reauthd\.example\.org/r/([A-Za-z0-9_-]+)")


class Rig:
    """A store, a notifier and an outbox over one state file; `restart()` rebuilds them all."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store.open(settings.state.path)
        self._build()

    def _build(self) -> None:
        self.notifier = Notifier(self.settings.notify, timeout_s=5)
        self.outbox = Outbox(self.store, self.settings, self.notifier, jitter=lambda: 1.0)

    def restart(self) -> None:
        self.store.close()
        self.store = Store.open(self.settings.state.path)
        self._build()

    def task(self, name: str, at: datetime, provider: str = "codex", cpa: str = "main") -> str:
        return self.store.create_task(
            cpa=cpa,
            auth_name=name,
            auth_index=f"idx-{name}",
            provider=provider,
            account_masked=f"{name[0]}***@example.com",
            reason="token revoked",
            now=at,
            deadline=at + timedelta(days=7),
        ).id

    def state(self, task_id: str) -> S:
        return self.store.get_task(task_id).state


@pytest.fixture
def make_rig(tmp_path: Path) -> Iterator[Any]:
    rigs: list[Rig] = []

    def build(**notify: Any) -> Rig:
        rig = Rig(make_settings(tmp_path, **notify))
        rigs.append(rig)
        return rig

    yield build
    for rig in rigs:
        rig.store.close()


async def test_a_wave_of_fifty_is_one_digest_with_fifty_links(inbox: Inbox, make_rig: Any) -> None:
    rig = make_rig(urls=[inbox.url()], group_window_s=30)
    ids = [rig.task(f"acct{i:02d}", T0 + timedelta(seconds=i // 5)) for i in range(50)]
    last = T0 + timedelta(seconds=9)
    report = await rig.outbox.flush(last + timedelta(seconds=29))  # the window is still open
    assert report.sent == 0 and inbox.messages() == []
    report = await rig.outbox.flush(last + timedelta(seconds=30))
    assert report.sent == 1
    (message,) = inbox.messages()
    assert "50 accounts" in message["title"]
    tokens = LINK.findall(message["message"])
    assert len(tokens) == 50
    resolved = {rig.store.resolve_link_token(t, last + timedelta(days=1)) for t in tokens}
    assert resolved == set(ids)  # one link per task, each leading to its own task
    assert all(rig.state(i) is S.NOTIFIED for i in ids)
    again = await rig.outbox.flush(last + timedelta(minutes=5))
    assert again.planned == 0 and again.sent == 0 and len(inbox.messages()) == 1


async def test_separate_windows_are_separate_messages(inbox: Inbox, make_rig: Any) -> None:
    rig = make_rig(urls=[inbox.url()], group_window_s=30)
    rig.task("a", T0)
    await rig.outbox.flush(T0 + timedelta(seconds=30))
    rig.task("b", T0 + timedelta(minutes=10))
    await rig.outbox.flush(T0 + timedelta(minutes=10, seconds=30))
    titles = [m["title"] for m in inbox.messages()]
    assert titles == [
        "Log in again: a***@example.com (codex on main)",
        "Log in again: b***@example.com (codex on main)",
    ]


async def test_routes_by_provider_and_cpa(inbox: Inbox, make_rig: Any) -> None:
    rig = make_rig(
        urls=[inbox.url("all")],
        routes=[
            {"name": "claude-team", "providers": ["claude"], "urls": [inbox.url("claude")]},
            {"cpas": ["backup"], "urls": [inbox.url("backup")]},
        ],
        group_window_s=0,
    )
    rig.task("codex1", T0)
    rig.task("claude1", T0, provider="claude")
    rig.task("other", T0, cpa="backup")
    await rig.outbox.flush(T0)
    (everyone,) = inbox.messages(path="all")
    assert "3 accounts" in everyone["title"]
    (claude,) = inbox.messages(path="claude")
    assert claude["title"].startswith("Log in again: c***@example.com (claude on main)")
    (backup,) = inbox.messages(path="backup")
    assert "(codex on backup)" in backup["title"]


async def test_reminders_are_bounded_and_stop_once_opened(inbox: Inbox, make_rig: Any) -> None:
    rig = make_rig(urls=[inbox.url()], group_window_s=0, reminder_interval_s=4 * 3600, max_reminders=3)
    a = rig.task("a", T0)
    b = rig.task("b", T0)
    await rig.outbox.flush(T0)
    assert len(inbox.messages()) == 1
    for hours in (1, 3, 3.9):
        await rig.outbox.flush(T0 + timedelta(hours=hours))
    assert len(inbox.messages()) == 1
    await rig.outbox.flush(T0 + timedelta(hours=4))
    assert inbox.messages()[-1]["title"] == "Reminder: 2 accounts still need a new login"
    # b's person opens the link: b gets no more reminders, a does.
    rig.store.apply_transition(b, S.OPENED, "opened", T0 + timedelta(hours=5))
    for hours in (8, 12, 16, 20, 24, 48):
        await rig.outbox.flush(T0 + timedelta(hours=hours))
    titles = [m["title"] for m in inbox.messages()]
    assert (
        titles[2:] == ["Reminder: log in again to a***@example.com (codex on main)"] * 2
    )  # 3 reminders in all
    assert rig.store.get_task(a).reminders_sent == 3
    assert rig.store.get_task(b).reminders_sent == 1


async def test_pending_reminder_for_a_task_opened_meanwhile_is_skipped(inbox: Inbox, make_rig: Any) -> None:
    rig = make_rig(urls=[inbox.url()], group_window_s=0, quiet_hours={"start": "15:00", "end": "17:00"})
    a = rig.task("a", T0)
    await rig.outbox.flush(T0)
    await rig.outbox.flush(T0 + timedelta(hours=4))  # 16:00, quiet: the reminder is queued, not sent
    assert len(inbox.messages()) == 1
    rig.store.apply_transition(a, S.OPENED, "opened", T0 + timedelta(hours=4, minutes=30))
    report = await rig.outbox.flush(T0 + timedelta(hours=5))
    assert report.skipped == 1 and len(inbox.messages()) == 1


async def test_escalation_after_unanswered_reminders(inbox: Inbox, make_rig: Any) -> None:
    rig = make_rig(
        urls=[inbox.url("all")],
        escalation={"after_reminders": 2, "urls": [inbox.url("boss")]},
        group_window_s=0,
        reminder_interval_s=3600,
        max_reminders=3,
    )
    rig.task("a", T0)
    for minutes in range(0, 6 * 60, 10):
        await rig.outbox.flush(T0 + timedelta(minutes=minutes))
    assert len(inbox.messages(path="all")) == 4  # new + 3 reminders
    (boss,) = inbox.messages(path="boss")
    assert boss["title"].startswith("Unanswered: a***@example.com")
    assert LINK.search(boss["message"])
    escalated_at = rig.store.list_tasks()[0].escalated_at
    assert escalated_at == T0 + timedelta(hours=3)  # one interval after the 2nd reminder


async def test_quiet_hours_defer_and_never_drop(inbox: Inbox, make_rig: Any) -> None:
    rig = make_rig(urls=[inbox.url()], group_window_s=30, quiet_hours={"start": "22:00", "end": "07:00"})
    night = datetime(2026, 11, 27, 23, 0, tzinfo=UTC)
    a = rig.task("a", night)
    report = await rig.outbox.flush(night + timedelta(minutes=1))
    assert report.planned == 1 and report.deferred == 1 and inbox.messages() == []
    for hours in (1, 3, 7.9):
        await rig.outbox.flush(night + timedelta(hours=hours))
    assert inbox.messages() == []
    rig.restart()  # deferral is durable
    await rig.outbox.flush(datetime(2026, 11, 28, 7, 0, tzinfo=UTC))
    assert len(inbox.messages()) == 1 and rig.state(a) is S.NOTIFIED
    assert rig.store.get_task(a).notified_at == datetime(2026, 11, 28, 7, 0, tzinfo=UTC)


async def test_failures_are_retried_with_backoff_then_delivered_once(inbox: Inbox, make_rig: Any) -> None:
    rig = make_rig(urls=[inbox.url()], group_window_s=0)
    a = rig.task("a", T0)
    inbox.fail_with = 503
    report = await rig.outbox.flush(T0)
    assert report.failed == 1 and not rig.notifier.health.ok
    (row,) = rig.store.list_deliveries()
    assert row.status is DeliveryStatus.PENDING and row.attempts == 1
    assert row.next_attempt_at == T0 + timedelta(seconds=30) and row.last_error
    report = await rig.outbox.flush(T0 + timedelta(seconds=29))  # not yet
    assert report.failed == 0 and report.sent == 0
    await rig.outbox.flush(T0 + timedelta(seconds=30))
    assert rig.store.list_deliveries()[0].next_attempt_at == T0 + timedelta(seconds=90)  # doubled
    inbox.fail_with = None
    rig.restart()  # retries survive a restart
    await rig.outbox.flush(T0 + timedelta(seconds=90))
    assert len(inbox.messages()) == 1 and rig.state(a) is S.NOTIFIED and rig.notifier.health.ok
    await rig.outbox.flush(T0 + timedelta(hours=1))
    assert len(inbox.messages()) == 1


async def test_a_ten_hour_outage_then_recovery_delivers_the_open_tasks_message_once(
    inbox: Inbox, make_rig: Any
) -> None:
    """The default 12 attempts are spent after ~6 h; the task still waits for its link, so the digest keeps
    being retried (hourly at most) instead of being given up, and arrives once when the channel is back."""
    rig = make_rig(urls=[inbox.url()], group_window_s=0)
    a = rig.task("a", T0)
    inbox.fail_with = 500
    with capture_logs() as logs:
        for minutes in range(0, 10 * 60 + 1, 10):
            report = await rig.outbox.flush(T0 + timedelta(minutes=minutes))
            assert report.gave_up == 0
    assert inbox.messages() == [] and rig.state(a) is S.OPEN
    (row,) = rig.store.list_deliveries()  # no reminders piled up behind the undelivered digest either
    assert row.status is DeliveryStatus.PENDING and row.attempts > rig.settings.notify.retry_max_attempts
    assert row.next_attempt_at <= T0 + timedelta(hours=11)  # retried at the one-hour cap
    undelivered = [e for e in logs if e["event"] == "notify.still_undelivered"]
    assert len(undelivered) == 1 and undelivered[0]["log_level"] == "error"  # said once, loudly
    inbox.fail_with = None
    for minutes in range(10 * 60 + 10, 12 * 60 + 1, 10):
        await rig.outbox.flush(T0 + timedelta(minutes=minutes))
    (message,) = inbox.messages()
    assert message["title"] == "Log in again: a***@example.com (codex on main)"
    assert LINK.search(message["message"])
    assert rig.state(a) is S.NOTIFIED
    assert [(d.kind, d.status) for d in rig.store.list_deliveries()] == [
        (DeliveryKind.NEW, DeliveryStatus.SENT)
    ]


async def test_a_dead_channel_does_not_hold_back_the_reminders_of_the_others(
    inbox: Inbox, make_rig: Any
) -> None:
    """The working channel gets its reminders on time; the dead one keeps its undelivered digest (no pile of
    reminders behind it) and delivers it when it works again."""
    rig = make_rig(
        urls=[inbox.url("ok"), "json://127.0.0.1:9/dead"],
        group_window_s=0,
        reminder_interval_s=3600,
        max_reminders=2,
    )
    rig.task("a", T0)
    for minutes in range(0, 4 * 60 + 1, 10):
        await rig.outbox.flush(T0 + timedelta(minutes=minutes))
    assert [m["title"] for m in inbox.messages(path="ok")] == [
        "Log in again: a***@example.com (codex on main)",
        "Reminder: log in again to a***@example.com (codex on main)",
        "Reminder: log in again to a***@example.com (codex on main)",
    ]
    dead = [d for d in rig.store.list_deliveries() if d.route == "default#1"]
    assert [(d.kind, d.status) for d in dead] == [(DeliveryKind.NEW, DeliveryStatus.PENDING)]


async def test_a_final_notice_is_given_up_after_retry_max_attempts_and_says_so(
    inbox: Inbox, make_rig: Any
) -> None:
    """Nobody has to act on a closed task's final notice: that is the one message that can be given up,
    and the give-up is counted in the channel health (and, in the daemon, on /metrics)."""
    rig = make_rig(urls=[inbox.url()], group_window_s=0, retry_max_attempts=2)
    a = rig.task("a", T0)
    await rig.outbox.flush(T0)
    rig.store.apply_transition(a, S.DONE, "the credential works again", T0 + timedelta(hours=1))
    inbox.fail_with = 500
    with capture_logs() as logs:
        await rig.outbox.flush(T0 + timedelta(hours=1))
        report = await rig.outbox.flush(T0 + timedelta(hours=1, minutes=5))
    assert report.gave_up == 1
    resolved = rig.store.list_deliveries(kinds=[DeliveryKind.RESOLVED])[0]
    assert resolved.status is DeliveryStatus.GAVE_UP
    assert [e["log_level"] for e in logs if e["event"] == "notify.gave_up"] == ["error"]
    health = rig.notifier.health
    assert health.gave_up == 1 and "1 message(s) given up" in health.detail
    assert "no notification channel works" in health.detail
    rig.restart()  # the channel health survives a restart: it is rebuilt from the outbox
    assert not rig.notifier.health.ok and rig.notifier.health.failing == ("default#0",)


async def test_an_undelivered_refusal_is_superseded_by_a_newer_one(inbox: Inbox, make_rig: Any) -> None:
    """Two refusals during an outage: the person hears the newest once the channel is back, not both."""
    rig = make_rig(urls=[inbox.url()], group_window_s=0)
    task_id = rig.task("carol", T0)
    await rig.outbox.flush(T0)
    inbox.fail_with = 500
    _refuse(rig, task_id, T0 + timedelta(minutes=5))
    await rig.outbox.flush(T0 + timedelta(minutes=6))
    rig.store.update_task_fields(task_id, T0 + timedelta(minutes=20), details={"refused_logins": 2})
    superseded = (await rig.outbox.flush(T0 + timedelta(minutes=21))).superseded
    inbox.fail_with = None
    for minutes in range(30, 120, 10):
        superseded += (await rig.outbox.flush(T0 + timedelta(minutes=minutes))).superseded
    refused = [m for m in inbox.messages() if m["title"].startswith("The new login did not work")]
    assert len(refused) == 1 and superseded == 1
    rows = rig.store.list_deliveries(kinds=[DeliveryKind.REFUSED])
    assert [(d.status, d.last_error) for d in rows] == [
        (DeliveryStatus.SKIPPED, SUPERSEDED),
        (DeliveryStatus.SENT, None),
    ]


async def test_a_message_for_a_channel_removed_by_a_reload_is_skipped(
    inbox: Inbox, make_rig: Any, tmp_path: Path
) -> None:
    rig = make_rig(urls=[inbox.url("kept"), "json://127.0.0.1:9/removed"], group_window_s=0)
    rig.task("a", T0)
    await rig.outbox.flush(T0)
    rig.settings = make_settings(tmp_path, urls=[inbox.url("kept")], group_window_s=0)
    rig.restart()
    report = await rig.outbox.flush(T0 + timedelta(hours=1))
    assert report.skipped == 1 and report.failed == 0
    removed = [d for d in rig.store.list_deliveries() if d.route == "default#1"]
    assert [(d.status, d.last_error) for d in removed] == [
        (DeliveryStatus.SKIPPED, "the channel is no longer configured")
    ]


async def test_restart_between_plan_and_send_sends_once(inbox: Inbox, make_rig: Any) -> None:
    rig = make_rig(urls=[inbox.url()], group_window_s=0)
    rig.task("a", T0)
    assert rig.outbox.plan(T0) == 1
    rig.restart()
    assert rig.outbox.plan(T0) == 0  # already in the outbox
    await rig.outbox.flush(T0)
    rig.restart()
    await rig.outbox.flush(T0 + timedelta(minutes=1))
    assert len(inbox.messages()) == 1


async def test_crash_during_send_resends_after_retry_time(inbox: Inbox, make_rig: Any) -> None:
    # Documented trade-off: a crash between the send and its record means at-least-once.
    rig = make_rig(urls=[inbox.url()], group_window_s=0)
    a = rig.task("a", T0)
    rig.outbox.plan(T0)
    (row,) = rig.store.due_deliveries(T0)
    rig.store.claim_delivery(row.id, T0, T0 + timedelta(seconds=30))  # claimed, then the process died
    rig.restart()
    await rig.outbox.flush(T0 + timedelta(seconds=10))
    assert inbox.messages() == [] and rig.state(a) is S.OPEN
    await rig.outbox.flush(T0 + timedelta(seconds=30))
    assert len(inbox.messages()) == 1 and rig.state(a) is S.NOTIFIED


async def test_final_notices(inbox: Inbox, make_rig: Any) -> None:
    rig = make_rig(urls=[inbox.url()], group_window_s=0)
    told = rig.task("told", T0)
    expired = rig.task("expired", T0)
    await rig.outbox.flush(T0)
    silent = rig.task("silent", T0 + timedelta(minutes=1))  # closed before anyone was told
    rig.store.apply_transition(silent, S.DONE, "works again", T0 + timedelta(minutes=1))
    rig.store.apply_transition(told, S.DONE, "the credential works again", T0 + timedelta(hours=1))
    rig.store.apply_transition(expired, S.EXPIRED, "deadline passed", T0 + timedelta(hours=1))
    await rig.outbox.flush(T0 + timedelta(hours=1))
    await rig.outbox.flush(T0 + timedelta(hours=2))
    titles = [m["title"] for m in inbox.messages()]
    assert titles[1:] == [
        "Resolved: t***@example.com (codex on main) works again",
        "Expired: nobody logged in again to e***@example.com (codex on main)",
    ]
    kinds = {d.kind for d in rig.store.list_deliveries()}
    assert kinds == {DeliveryKind.NEW, DeliveryKind.RESOLVED, DeliveryKind.EXPIRED}


async def test_no_channel_configured_plans_nothing_and_health_says_so(make_rig: Any) -> None:
    rig = make_rig(group_window_s=0)
    a = rig.task("a", T0)
    report = await rig.outbox.flush(T0)
    assert report.planned == 0 and rig.state(a) is S.OPEN
    assert not rig.notifier.health.ok


async def test_a_rendering_bug_counts_as_a_failed_attempt(
    inbox: Inbox, make_rig: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import reauthd.notify.outbox as outbox_module

    def broken(*args: Any) -> Any:
        raise RuntimeError("template bug")

    monkeypatch.setattr(outbox_module, "render", broken)
    rig = make_rig(urls=[inbox.url()], group_window_s=0, retry_max_attempts=1)
    rig.task("a", T0)
    report = await rig.outbox.flush(T0)
    assert report.failed == 1 and inbox.messages() == []
    (row,) = rig.store.list_deliveries()
    assert row.last_error == "internal error RuntimeError"
    assert row.status is DeliveryStatus.PENDING  # the task still waits: retried, not given up


async def test_a_refused_new_login_is_told_once_per_refusal_with_a_fresh_link(
    inbox: Inbox, make_rig: Any
) -> None:
    """Issue 6: when verification fails the person and the operator are told; the page offers to start again."""
    rig = make_rig(urls=[inbox.url()], group_window_s=0)
    task_id = rig.task("carol", T0)
    await rig.outbox.flush(T0 + timedelta(seconds=1))
    assert len(inbox.messages()) == 1  # the new-task message
    rig.store.apply_transition(task_id, S.OPENED, "link opened", T0 + timedelta(minutes=1))
    rig.store.update_task_fields(
        task_id,
        T0 + timedelta(minutes=5),
        reason="The new login did not work: 401; please log in again",
        details={"refused_logins": 1},
    )
    for minute in (6, 7):  # a second tick and a restart change nothing
        await rig.outbox.flush(T0 + timedelta(minutes=minute))
        rig.restart()
    refused = [m for m in inbox.messages() if m["title"].startswith("The new login did not work")]
    assert len(refused) == 1
    assert "left exactly as it was" in refused[0]["message"]
    assert LINK.search(refused[0]["message"])

    rig.store.update_task_fields(task_id, T0 + timedelta(minutes=20), details={"refused_logins": 2})
    await rig.outbox.flush(T0 + timedelta(minutes=21))
    assert len([m for m in inbox.messages() if m["title"].startswith("The new login did not work")]) == 2
    kinds = [d.kind for d in rig.store.list_deliveries()]
    assert kinds.count(DeliveryKind.REFUSED) == 2


async def test_a_task_waiting_for_an_operator_is_announced_once_each_time(
    inbox: Inbox, make_rig: Any
) -> None:
    """Issue 6: two candidates for the new file are never guessed between; the operator is asked."""
    rig = make_rig(urls=[inbox.url()], group_window_s=0)
    task_id = rig.task("erin", T0)
    for state, minute in ((S.OPENED, 1), (S.LOGIN_STARTED, 2), (S.CALLBACK_RECEIVED, 3), (S.VERIFYING, 4)):
        rig.store.apply_transition(task_id, state, "step", T0 + timedelta(minutes=minute))
    rig.store.apply_transition(
        task_id, S.AWAITING_OPERATOR, "two candidate files for the new login", T0 + timedelta(minutes=5)
    )
    for minute in (6, 7):
        await rig.outbox.flush(T0 + timedelta(minutes=minute))
        rig.restart()
    asked = [m for m in inbox.messages() if m["title"].startswith("Needs an operator")]
    assert len(asked) == 1
    assert "two candidate files" in asked[0]["message"]
    assert not LINK.search(asked[0]["message"])  # recipient links are not for operators


def _refuse(rig: Rig, task_id: str, at: datetime) -> None:
    rig.store.apply_transition(task_id, S.OPENED, "link opened", at)
    rig.store.update_task_fields(
        task_id, at, reason="The new login did not work: 401", details={"refused_logins": 1}
    )


async def test_a_refused_new_login_is_told_to_the_operator_on_the_escalation_route_too(
    inbox: Inbox, make_rig: Any
) -> None:
    """A login that failed verification concerns the operator as much as an operator message does."""
    rig = make_rig(
        urls=[inbox.url("all")],
        escalation={"after_reminders": 2, "urls": [inbox.url("boss")]},
        group_window_s=0,
    )
    task_id = rig.task("carol", T0)
    await rig.outbox.flush(T0)
    _refuse(rig, task_id, T0 + timedelta(minutes=5))
    await rig.outbox.flush(T0 + timedelta(minutes=6))
    refused = "The new login did not work: c***@example.com (codex on main)"
    assert [m["title"] for m in inbox.messages(path="all")][1:] == [refused]
    assert [m["title"] for m in inbox.messages(path="boss")] == [refused]


async def test_an_escalation_url_that_is_also_a_task_route_hears_a_refusal_once(
    inbox: Inbox, make_rig: Any
) -> None:
    rig = make_rig(
        urls=[inbox.url("all")],
        escalation={"after_reminders": 2, "urls": [inbox.url("all")]},
        group_window_s=0,
    )
    task_id = rig.task("carol", T0)
    await rig.outbox.flush(T0)
    _refuse(rig, task_id, T0 + timedelta(minutes=5))
    await rig.outbox.flush(T0 + timedelta(minutes=6))
    titles = [m["title"] for m in inbox.messages(path="all")]
    assert sum(t.startswith("The new login did not work") for t in titles) == 1, titles


class _SlowNotifier(Notifier):
    def __init__(self, settings: Settings, delay_s: float) -> None:
        super().__init__(settings.notify)
        self.delay_s = delay_s
        self.sent: list[str] = []

    async def send(self, channel: str, message: Any, now: datetime) -> SendOutcome:
        await asyncio.sleep(self.delay_s)
        self.sent.append(message.title)
        return SendOutcome(True)


async def test_a_flush_starts_no_delivery_after_its_budget_and_reports_progress(make_rig: Any) -> None:
    """A slow channel cannot hold one flush (the daemon's tick) for all its due messages: what is left is the
    next flush's. Each attempt is reported as progress (the daemon's liveness)."""
    rig = make_rig(urls=["json://127.0.0.1:9/slow"], group_window_s=0)
    for i in range(6):
        task_id = rig.task(f"a{i}", T0)
        rig.store.apply_transition(task_id, S.DONE, "works again", T0)
        rig.store.enqueue_delivery(
            kind=DeliveryKind.RESOLVED, route="default#0", task_ids=[task_id], due_at=T0, now=T0,
            dedupe_key=f"final{i}",
        )  # fmt: skip
    notifier = _SlowNotifier(rig.settings, 0.5)
    outbox = Outbox(rig.store, rig.settings, notifier, jitter=lambda: 1.0)
    beats: list[int] = []
    outbox.on_progress = lambda: beats.append(len(notifier.sent))
    first = await outbox.flush(T0, budget_s=0.75)
    assert (first.sent, first.postponed) == (2, 4)  # started at 0 s and 0.5 s; not at 1 s
    assert beats == [1, 2]
    second = await outbox.flush(T0 + timedelta(seconds=2))
    assert (second.sent, second.postponed) == (4, 0)
