"""Reconcile at fleet size: `plan` looks tasks up by credential instead of comparing every verdict with every
task, and `reconcile_from` plans only the verdicts that can act. Both must decide exactly what the plain
quadratic reading of the rules decides (the oracle below is the previous `plan`, kept verbatim)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reauthd.core.model import (
    Credential,
    Evidence,
    EvidenceSource,
    ReauthTask,
    TaskState,
    Verdict,
    VerdictKind,
)
from reauthd.core.tasks import (
    STUCK_AFTER,
    Action,
    CloseTask,
    RaiseTask,
    Rearm,
    Stuck,
    Subject,
    _rearmed_after,
    closes_as_done,
    in_flight,
    plan,
    same_credential,
    works_again_since,
)
from reauthd.store import Store
from reauthd.tasks.service import TaskService, WatchedCredentials
from tests.tasks.test_service import settings_for

S = TaskState
T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
EXPIRE = timedelta(days=7)


def oracle_plan(
    tasks: Sequence[ReauthTask], verdicts: Iterable[tuple[Subject | Credential, Verdict]], now: datetime
) -> list[Action]:
    """The rules read plainly (O(verdicts x tasks)), as `plan` was before it indexed tasks."""

    def same(a: Subject, b: Subject) -> bool:
        if a.cpa != b.cpa:
            return False
        if a.auth_index and b.auth_index:
            return a.auth_index == b.auth_index
        return a.name == b.name

    actions: list[Action] = []
    open_tasks = [t for t in tasks if not t.state.terminal]
    closed_tasks = sorted((t for t in tasks if t.state.terminal), key=lambda t: t.closed_at or t.updated_at)
    closing: set[str] = set()
    for task in open_tasks:
        expires_at = min(task.deadline, task.created_at + EXPIRE)
        if in_flight(task, now):
            if task.state is not S.LOGIN_STARTED and now - task.updated_at >= STUCK_AFTER:
                actions.append(
                    Stuck(task.id, f"no progress in {task.state.value} for a day; an operator should look")
                )
                closing.add(task.id)
        elif now >= expires_at:
            actions.append(CloseTask(task.id, S.EXPIRED, "nobody completed the login before the deadline"))
            closing.add(task.id)
    raised: list[Subject] = []
    for item, verdict in verdicts:
        subject = Subject.of(item) if isinstance(item, Credential) else item
        mine = [t for t in open_tasks if same_credential(t, subject) and t.id not in closing]
        if verdict.kind is VerdictKind.HEALTHY:
            for task in mine:
                if not in_flight(task, now) and closes_as_done(task, item, verdict):
                    actions.append(
                        CloseTask(task.id, S.DONE, "the credential works again (re-logged elsewhere)")
                    )
            latest_closed = [t for t in closed_tasks if same_credential(t, subject)]
            if latest_closed and latest_closed[-1].quiet_until_healthy:
                last = latest_closed[-1]
                if works_again_since(item, verdict, last.closed_at or last.updated_at):
                    actions.append(Rearm(last.id))
            continue
        if verdict.kind is not VerdictKind.NEEDS_REAUTH or not verdict.confirmed:
            continue
        expiring = [t for t in open_tasks if t.id in closing and same_credential(t, subject)]
        if mine or expiring or any(same(s, subject) for s in raised):
            continue
        previous = [t for t in closed_tasks if same_credential(t, subject)]
        if previous and not _rearmed_after(previous[-1], verdict, now):
            continue
        actions.append(RaiseTask(subject, verdict))
        raised.append(subject)
    return actions


# A tiny world so that collisions (same index, same name, no index) are frequent.
INDEXES = st.sampled_from(["", "i1", "i2", "i3"])
NAMES = st.sampled_from(["a.json", "b.json", "c.json"])
CPAS = st.sampled_from(["main", "other"])
HOURS = st.integers(min_value=0, max_value=24 * 9).map(lambda h: T0 + timedelta(hours=h))


@st.composite
def tasks_strategy(draw: st.DrawFn) -> list[ReauthTask]:
    result = []
    for number in range(draw(st.integers(0, 8))):
        created = draw(HOURS)
        state = draw(st.sampled_from(list(S)))
        updated = created + timedelta(hours=draw(st.integers(0, 48)))
        result.append(
            ReauthTask(
                id=f"t{number}",
                cpa=draw(CPAS),
                auth_name=draw(NAMES),
                auth_index=draw(INDEXES),
                provider="codex",
                account_masked="a***@example.com",
                state=state,
                reason="revoked",
                created_at=created,
                updated_at=updated,
                deadline=created + timedelta(days=draw(st.integers(1, 8))),
                closed_at=updated if state.terminal else None,
                quiet_until_healthy=draw(st.booleans()),
            )
        )
    return result


@st.composite
def verdicts_strategy(draw: st.DrawFn) -> list[tuple[Subject, Verdict]]:
    result = []
    for _ in range(draw(st.integers(0, 10))):
        subject = Subject(cpa=draw(CPAS), name=draw(NAMES), auth_index=draw(INDEXES), provider="codex")
        kind = draw(st.sampled_from([VerdictKind.HEALTHY, VerdictKind.NEEDS_REAUTH, VerdictKind.QUOTA]))
        seen = draw(st.none() | HOURS)
        source = draw(st.sampled_from([EvidenceSource.LISTING, EvidenceSource.PROBE]))
        status = draw(st.sampled_from([200, 401]))
        evidence = () if seen is None else (Evidence(source, seen, status, code="x"),)
        result.append((subject, Verdict(kind, "why", evidence, confirmed=draw(st.booleans()))))
    return result


@settings(max_examples=400, deadline=None)
@given(tasks=tasks_strategy(), verdicts=verdicts_strategy(), now=HOURS)
def test_indexed_plan_decides_what_the_plain_rules_decide(
    tasks: list[ReauthTask], verdicts: list[tuple[Subject, Verdict]], now: datetime
) -> None:
    assert plan(tasks, verdicts, now, expire_after=EXPIRE) == oracle_plan(tasks, verdicts, now)


@settings(max_examples=400, deadline=None)
@given(tasks=tasks_strategy(), verdicts=verdicts_strategy(), now=HOURS)
def test_only_the_verdicts_a_watch_covers_can_act(
    tasks: list[ReauthTask], verdicts: list[tuple[Subject, Verdict]], now: datetime
) -> None:
    """Dropping healthy verdicts the watch does not cover, and everything but confirmed needs_reauth
    otherwise, changes no decision: the filter `reconcile_from` applies is safe."""
    watched = WatchedCredentials.of(tasks)
    kept = [
        (s, v)
        for s, v in verdicts
        if (v.kind is VerdictKind.HEALTHY and watched.covers(s.cpa, s.name, s.auth_index))
        or (v.kind is VerdictKind.NEEDS_REAUTH and v.confirmed)
    ]
    assert plan(tasks, kept, now, expire_after=EXPIRE) == oracle_plan(tasks, verdicts, now)


# ------------------------------------------------------------------------------------ the service


@pytest.fixture
def service(tmp_path: Path) -> Iterator[TaskService]:
    store = Store.open(tmp_path / "state.db")
    try:
        yield TaskService(store, settings_for(tmp_path))
    finally:
        store.close()


def credential(number: int) -> Credential:
    return Credential(
        cpa="main",
        name=f"codex-{number}.json",
        auth_index=f"idx-{number}",
        provider="codex",
        status="active",
        email=f"user{number}@example.com",
    )


NEEDS = Verdict(VerdictKind.NEEDS_REAUTH, "token revoked", confirmed=True)


def works(at: datetime) -> Verdict:
    """Healthy with positive evidence: the provider accepted the credential's own token at `at`."""
    return Verdict(VerdictKind.HEALTHY, "ok", (Evidence(EvidenceSource.PROBE, at, 200),))


def test_reconcile_from_hands_the_source_the_tasks_credentials_and_plans_only_acting_verdicts(
    service: TaskService,
) -> None:
    fleet = [credential(n) for n in range(2000)]
    now = T0
    service.reconcile([(fleet[7], NEEDS), (fleet[8], NEEDS)], now)
    seen: list[WatchedCredentials] = []

    def source(watched: WatchedCredentials) -> list[tuple[Credential, Verdict]]:
        seen.append(watched)
        return [(c, works(now + timedelta(minutes=5)) if c is not fleet[8] else NEEDS) for c in fleet]

    result = service.reconcile_from(source, now + timedelta(minutes=5))
    (watched,) = seen
    assert watched.auth_indexes == {("main", "idx-7"), ("main", "idx-8")}
    assert watched.unindexed_names == frozenset()
    # fleet[7] is healthy again: its task closes; fleet[8] still fails: nothing new.
    assert [state for _, state in result.closed] == [S.DONE] and not result.raised
    # The whole list through `reconcile` agrees: the same state changes nothing more.
    again = [(c, works(now + timedelta(minutes=6)) if c is not fleet[8] else NEEDS) for c in fleet]
    assert not service.reconcile(again, now + timedelta(minutes=6)).changed


def test_a_task_without_auth_index_is_watched_by_name(service: TaskService) -> None:
    task = service.store.create_task(
        cpa="main",
        auth_name="codex-3.json",
        auth_index="",
        provider="codex",
        account_masked="",
        reason="revoked",
        now=T0,
        deadline=T0 + timedelta(days=7),
    )
    seen: list[WatchedCredentials] = []

    def source(watched: WatchedCredentials) -> list[tuple[Credential, Verdict]]:
        seen.append(watched)
        # CPA refreshed it successfully after the task was raised (last_refresh moved past it, §13)
        return [(replace(credential(3), last_refresh=T0 + timedelta(seconds=30)), works(T0))]

    result = service.reconcile_from(source, T0 + timedelta(minutes=1))
    assert seen[0].unindexed_names == {("main", "codex-3.json")}
    assert result.closed == [(task.id, S.DONE)]
