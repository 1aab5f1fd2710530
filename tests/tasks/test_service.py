"""TaskService: reconcile idempotence, raising, opening, cancelling, views, and notifications end to end
through a custom in-process Apprise schema."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from apprise.decorators import notify as apprise_plugin

from reauthd.config import Settings
from reauthd.core.model import (
    Credential,
    CredentialRef,
    Evidence,
    EvidenceSource,
    TaskState,
    Verdict,
    VerdictKind,
)
from reauthd.core.tasks import IllegalTransition
from reauthd.notify.notifier import Notifier
from reauthd.store import Store
from reauthd.tasks import TaskService

S = TaskState
T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
SENT: list[dict[str, Any]] = []
LINK = re.compile(r"https://reauthd\.example\.org/r/([A-Za-z0-9_-]+)")


@apprise_plugin(on="reauthdtasks")
def _channel(body: str, title: str, *args: Any, **kwargs: Any) -> bool:
    SENT.append({"title": title, "body": body})
    return True


def settings_for(tmp_path: Path, **notify: Any) -> Settings:
    notify = {"urls": ["reauthdtasks://team"], "group_window_s": 30, **notify}
    return Settings(
        state={"path": tmp_path / "state.db"},
        cpa=[{"name": "main", "base_url": "http://127.0.0.1:9", "management_key": "k" * 16}],
        notify=notify,
        web={"public_url": "https://reauthd.example.org"},
        tasks={"expire_after_s": 86400},
    )


@pytest.fixture
def service(tmp_path: Path) -> Iterator[TaskService]:
    SENT.clear()
    settings = settings_for(tmp_path)
    store = Store.open(settings.state.path)
    yield TaskService(store, settings, Notifier(settings.notify), clock=lambda: T0)
    store.close()


def cred(name: str = "codex-a.json", index: str = "idx-a", email: str = "alice@example.com") -> Credential:
    return Credential(cpa="main", name=name, auth_index=index, provider="codex", status="error", email=email)


NEEDS = Verdict(VerdictKind.NEEDS_REAUTH, "the provider revoked the token", confirmed=True)
HEALTHY = Verdict(VerdictKind.HEALTHY, "ok")  # only "listed as active": what a CPA restart shows too


def works(at: datetime) -> Verdict:
    """Healthy with positive evidence: the provider accepted the credential's own token at `at`."""
    return Verdict(VerdictKind.HEALTHY, "ok", (Evidence(EvidenceSource.PROBE, at, 200),))


def test_confirmed_revocation_raises_one_task(service: TaskService) -> None:
    task = service.on_confirmed_revocation(cred(), NEEDS, T0)
    assert task is not None and task.state is S.OPEN
    assert task.account_masked == "a***@example.com" and task.reason == "the provider revoked the token"
    assert task.deadline == T0 + timedelta(days=1)
    again = service.on_confirmed_revocation(cred(), NEEDS, T0 + timedelta(minutes=1))
    assert again is not None and again.id == task.id
    assert len(service.store.list_tasks()) == 1
    assert (
        service.on_confirmed_revocation(cred("b.json", "idx-b"), Verdict(VerdictKind.QUOTA, "429"), T0)
        is None
    )


def test_reconcile_is_idempotent(service: TaskService) -> None:
    verdicts = [(cred(), NEEDS), (cred("b.json", "idx-b", "bob@example.com"), NEEDS)]
    first = service.reconcile(verdicts, T0)
    assert len(first.raised) == 2
    snapshot = [
        (t.id, t.state, t.updated_at, len(t.history)) for t in service.store.list_tasks(with_history=True)
    ]
    second = service.reconcile(verdicts, T0 + timedelta(minutes=1))
    assert not second.changed
    assert [
        (t.id, t.state, t.updated_at, len(t.history)) for t in service.store.list_tasks(with_history=True)
    ] == snapshot


def test_reconcile_closes_when_healthy_by_other_means_and_expires(service: TaskService) -> None:
    a = service.on_confirmed_revocation(cred(), NEEDS, T0)
    b = service.on_confirmed_revocation(cred("b.json", "idx-b"), NEEDS, T0)
    assert a is not None and b is not None
    # Listed active again (a CPA restart does that) closes nothing; a probe that works does.
    assert not service.reconcile([(cred(), HEALTHY)], T0 + timedelta(minutes=30)).changed
    later = T0 + timedelta(hours=1)
    result = service.reconcile([(cred(), works(later)), (cred("b.json", "idx-b"), NEEDS)], later)
    assert result.closed == [(a.id, S.DONE)]
    result = service.reconcile([(cred("b.json", "idx-b"), NEEDS)], T0 + timedelta(days=1))
    assert result.closed == [(b.id, S.EXPIRED)] and result.raised == []
    # Expired: stays quiet while still broken, re-armed once seen healthy, then raised again.
    assert not service.reconcile([(cred("b.json", "idx-b"), NEEDS)], T0 + timedelta(days=2)).changed
    assert not service.reconcile([(cred("b.json", "idx-b"), HEALTHY)], T0 + timedelta(days=3)).changed
    day3 = T0 + timedelta(days=3)
    assert service.reconcile([(cred("b.json", "idx-b"), works(day3))], day3).rearmed == [b.id]
    assert len(service.reconcile([(cred("b.json", "idx-b"), NEEDS)], T0 + timedelta(days=4)).raised) == 1


def test_reconcile_accepts_detection_views(service: TaskService) -> None:
    @dataclass(frozen=True)
    class View:  # the shape of reauthd.detect.engine.CredentialVerdict
        ref: CredentialRef
        credential: Credential | None
        verdict: Verdict
        at: datetime

    views = [
        View(cred().ref, cred(), NEEDS, T0),
        View(CredentialRef("main", "ghost.json", "idx-g"), None, NEEDS, T0),
    ]
    result = service.reconcile({v.ref: v for v in views}, T0)
    assert len(result.raised) == 2
    ghost = service.store.find_open_task("main", "idx-g", "ghost.json")
    assert ghost is not None and ghost.account_masked == "(unknown account)"


def test_in_flight_task_is_not_closed_by_reconcile(service: TaskService) -> None:
    task = service.on_confirmed_revocation(cred(), NEEDS, T0)
    assert task is not None
    service.mark_opened(task.id, T0)
    for to in (S.LOGIN_STARTED, S.CALLBACK_RECEIVED, S.VERIFYING):
        service.store.apply_transition(task.id, to, "flow", T0)
    assert not service.reconcile(
        [(cred(), works(T0 + timedelta(hours=12)))], T0 + timedelta(hours=12)
    ).changed
    assert service.store.get_task(task.id).state is S.VERIFYING
    # A step that made no progress for a day was lost: an operator gets it, then it can expire as usual.
    assert service.reconcile([(cred(), NEEDS)], T0 + timedelta(days=1)).stuck == [task.id]
    assert service.store.get_task(task.id).state is S.AWAITING_OPERATOR
    assert service.reconcile([(cred(), NEEDS)], T0 + timedelta(days=1, minutes=1)).closed == [
        (task.id, S.EXPIRED)
    ]


async def test_on_confirmed_adapter_for_detection_events(service: TaskService) -> None:
    @dataclass(frozen=True)
    class Event:  # the shape of reauthd.core.confirm.ConfirmedRevocation
        ref: CredentialRef
        provider: str
        kind: VerdictKind
        verdict: Verdict
        account: str

    await service.on_confirmed(
        Event(cred().ref, "codex", VerdictKind.NEEDS_REAUTH, NEEDS, "a***@example.com")
    )
    gone = Verdict(VerdictKind.ACCOUNT_GONE, "deactivated", confirmed=True)
    await service.on_confirmed(
        Event(CredentialRef("main", "g.json", "g"), "codex", VerdictKind.ACCOUNT_GONE, gone, "")
    )
    assert [t.auth_name for t in service.store.list_tasks()] == ["codex-a.json"]


def test_manual_raise_cancel_and_mark_opened(service: TaskService) -> None:
    task, created = service.raise_manual(
        "main", "x.json", "password changed", T0, auth_index="idx-x", provider="claude"
    )
    assert created and task.source == "manual"
    same, created = service.raise_manual("main", "x.json", "again", T0, auth_index="idx-x")
    assert not created and same.id == task.id
    opened = service.mark_opened(task.id, T0 + timedelta(minutes=1))
    assert opened.state is S.OPENED and opened.opened_at == T0 + timedelta(minutes=1)
    assert service.mark_opened(task.id, T0 + timedelta(minutes=2)).opened_at == T0 + timedelta(minutes=1)
    link = service.link_for(task.id, T0)
    token = link.rsplit("/", 1)[1]
    assert service.store.resolve_link_token(token, T0 + timedelta(minutes=3)) == task.id
    service.cancel(task.id, T0 + timedelta(minutes=5))
    assert service.store.resolve_link_token(token, T0 + timedelta(minutes=6)) is None
    with pytest.raises(IllegalTransition):
        service.cancel(task.id, T0 + timedelta(minutes=7))
    # A cancelled credential is not re-raised by detection while it stays broken.
    assert (
        service.on_confirmed_revocation(
            Credential(cpa="main", name="x.json", auth_index="idx-x", provider="claude", status="error"),
            NEEDS,
            T0,
        )
        is None
    )


def test_views_are_json_ready_with_required_fields(service: TaskService) -> None:
    import json

    task = service.on_confirmed_revocation(cred(), NEEDS, T0)
    assert task is not None
    (row,) = service.list_tasks()
    for key in ("id", "cpa", "auth_name", "provider", "state", "reason", "created_at", "updated_at"):
        assert key in row
    assert row["created_at"] == "2026-11-27T12:00:00Z"
    shown = service.show(task.id)
    assert [e["to"] for e in shown["history"]] == ["open"]
    json.dumps(shown)


async def test_notifications_end_to_end_with_restart(tmp_path: Path) -> None:
    SENT.clear()
    settings = settings_for(tmp_path)
    store = Store.open(settings.state.path)
    service = TaskService(store, settings, Notifier(settings.notify))
    for i in range(5):
        service.on_confirmed_revocation(cred(f"c{i}.json", f"idx{i}", f"user{i}@example.com"), NEEDS, T0)
    await service.flush_notifications(T0 + timedelta(seconds=30))
    assert len(SENT) == 1 and "5 accounts" in SENT[0]["title"]
    tokens = LINK.findall(SENT[0]["body"])
    assert len(tokens) == 5
    store.close()

    store = Store.open(settings.state.path)  # a restart: nothing is sent twice, the link still works
    service = TaskService(store, settings, Notifier(settings.notify))
    await service.flush_notifications(T0 + timedelta(minutes=1))
    assert len(SENT) == 1
    c1 = store.find_open_task("main", "idx1", "c1.json")
    assert c1 is not None
    linked = {store.resolve_link_token(t, T0 + timedelta(hours=1)) for t in tokens}
    assert c1.id in linked and None not in linked
    task_id = sorted(i for i in linked if i and i != c1.id)[0]
    service.mark_opened(task_id, T0 + timedelta(hours=1))
    service.reconcile([(cred("c1.json", "idx1"), works(T0 + timedelta(hours=2)))], T0 + timedelta(hours=2))
    await service.flush_notifications(T0 + timedelta(hours=4))  # reminders count from notified_at (T0+30s)
    assert len(SENT) == 2
    await service.flush_notifications(T0 + timedelta(hours=4, seconds=30))
    titles = [m["title"] for m in SENT]
    assert titles[1] == "Resolved: u***@example.com (codex on main) works again"
    assert (
        titles[2] == "Reminder: 3 accounts still need a new login"
    )  # the opened and the resolved are left out
    store.close()
