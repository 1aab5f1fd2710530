"""The task state machine and the reconcile decision, as tables."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reauthd.core.model import (
    Credential,
    Evidence,
    EvidenceSource,
    ReauthTask,
    TaskEvent,
    TaskState,
    Verdict,
    VerdictKind,
)
from reauthd.core.tasks import (
    LOGIN_STALE_AFTER,
    REARM_GRACE,
    STUCK_AFTER,
    TRANSITIONS,
    CloseTask,
    IllegalTransition,
    RaiseTask,
    Rearm,
    Stuck,
    Subject,
    can_transition,
    panel_logins,
    plan,
    reminders_apply,
    transition,
)

S = TaskState
T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
WEEK = timedelta(days=7)


def task(
    state: S = S.OPEN, *, id: str = "t1", index: str = "idx1", name: str = "a.json", **kw: object
) -> ReauthTask:
    base = ReauthTask(
        id=id,
        cpa="main",
        auth_name=name,
        auth_index=index,
        provider="codex",
        account_masked="a***@example.com",
        state=state,
        reason="revoked",
        created_at=T0,
        updated_at=T0,
        deadline=T0 + WEEK,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


SUBJ = Subject(cpa="main", name="a.json", auth_index="idx1", provider="codex", account="a***@example.com")
NEEDS = Verdict(VerdictKind.NEEDS_REAUTH, "token revoked", confirmed=True)
UNCONFIRMED = Verdict(VerdictKind.NEEDS_REAUTH, "token revoked", confirmed=False)
HEALTHY = Verdict(VerdictKind.HEALTHY, "ok")  # "CPA lists it as active": what a CPA restart shows too
QUOTA = Verdict(VerdictKind.QUOTA, "429")


# ------------------------------------------------------------------------------------------ transitions

LEGAL = [
    (S.OPEN, S.NOTIFIED),
    (S.OPEN, S.OPENED),
    (S.NOTIFIED, S.OPENED),
    (S.OPENED, S.LOGIN_STARTED),
    (S.LOGIN_STARTED, S.CALLBACK_RECEIVED),
    (S.LOGIN_STARTED, S.VERIFYING),  # device flow
    (S.LOGIN_STARTED, S.OPENED),  # flow timed out, start again
    (S.CALLBACK_RECEIVED, S.VERIFYING),
    (S.VERIFYING, S.RETIRING),
    (S.VERIFYING, S.DONE),  # same name overwritten in place: nothing to retire
    (S.VERIFYING, S.OPENED),  # new credential failed its test: log in again
    (S.RETIRING, S.DONE),
    (S.VERIFYING, S.AWAITING_OPERATOR),
    (S.AWAITING_OPERATOR, S.RETIRING),
    (S.NOTIFIED, S.EXPIRED),
    (S.NOTIFIED, S.DONE),
    (S.OPEN, S.CANCELLED),
]
ILLEGAL = [
    (S.OPEN, S.RETIRING),
    (S.OPEN, S.CALLBACK_RECEIVED),  # a callback needs a login of ours first
    (S.NOTIFIED, S.LOGIN_STARTED),  # a login needs the person to open the link first
    (S.RETIRING, S.CANCELLED),  # half-retired: cancelling would leave CPA in an unknown state
    (S.RETIRING, S.OPENED),
    (S.CALLBACK_RECEIVED, S.EXPIRED),
    (S.DONE, S.OPEN),
    (S.CANCELLED, S.NOTIFIED),
    (S.EXPIRED, S.DONE),
    (S.FAILED, S.OPENED),
    (S.NOTIFIED, S.NOTIFIED),
]


@pytest.mark.parametrize(("src", "dst"), LEGAL)
def test_legal_transitions(src: S, dst: S) -> None:
    moved = transition(task(src), dst, "because", T0 + timedelta(minutes=1))
    assert moved.state is dst
    assert moved.updated_at == T0 + timedelta(minutes=1)
    assert moved.history[-1].from_state is src and moved.history[-1].to_state is dst


@pytest.mark.parametrize(("src", "dst"), ILLEGAL)
def test_illegal_transitions_raise(src: S, dst: S) -> None:
    original = task(src)
    with pytest.raises(IllegalTransition) as info:
        transition(original, dst, "because", T0)
    assert info.value.from_state is src and info.value.to_state is dst
    assert original.state is src and original.history == []


def test_terminal_states_have_no_exits_and_every_state_is_in_the_table() -> None:
    assert set(TRANSITIONS) == set(S)
    for state in S:
        assert (not TRANSITIONS[state]) == state.terminal
    assert not can_transition(S.DONE, S.OPEN)


@pytest.mark.parametrize(
    ("dst", "quiet"), [(S.DONE, False), (S.FAILED, True), (S.EXPIRED, True), (S.CANCELLED, True)]
)
def test_terminal_bookkeeping(dst: S, quiet: bool) -> None:
    at = T0 + timedelta(hours=1)
    closed = transition(task(S.NOTIFIED), dst, "end", at)
    assert closed.closed_at == at and closed.quiet_until_healthy is quiet


def test_notified_and_opened_times_are_set_once() -> None:
    notified = transition(task(S.OPEN), S.NOTIFIED, "sent", T0 + timedelta(minutes=1))
    opened = transition(notified, S.OPENED, "clicked", T0 + timedelta(minutes=5))
    assert opened.notified_at == T0 + timedelta(minutes=1)
    assert opened.opened_at == T0 + timedelta(minutes=5)
    again = transition(
        transition(transition(opened, S.LOGIN_STARTED, "", T0), S.OPENED, "retry", T0),
        S.LOGIN_STARTED,
        "",
        T0,
    )
    assert again.opened_at == T0 + timedelta(minutes=5)


@pytest.mark.parametrize(("state", "applies"), [(s, s in (S.OPEN, S.NOTIFIED)) for s in S])
def test_reminders_stop_once_opened(state: S, applies: bool) -> None:
    assert reminders_apply(state) is applies


def test_transition_reason_is_sanitised() -> None:
    moved = transition(
        task(), S.FAILED, "callback http://localhost:1455/cb?code=ac_secret&state=st_secret", T0
    )
    assert "ac_secret" not in moved.history[-1].reason and "st_secret" not in moved.history[-1].reason


# ------------------------------------------------------------------------------------------ reconcile plan

NOW = T0 + timedelta(hours=1)
OTHER = Subject(cpa="main", name="b.json", auth_index="idx2", provider="claude")


def closed(state: S, at: datetime, **kw: object) -> ReauthTask:
    return transition(task(S.NOTIFIED, **kw), state, "end", at)  # type: ignore[arg-type]


def probed_ok(at: datetime) -> Verdict:
    return replace(HEALTHY, evidence=(Evidence(EvidenceSource.PROBE, at, 200),))


WORKS = probed_ok(NOW)  # the provider accepted the credential's own token after the task was raised


def listed(**kw: object) -> Credential:
    """SUBJ as an `active` listing entry (with the file times `plan` may read)."""
    fields: dict[str, Any] = dict(kw)
    return Credential(
        cpa="main", name="a.json", auth_index="idx1", provider="codex", status="active", **fields
    )


PLAN_TABLE = [
    # (name, tasks, verdicts, expected actions as (type, detail))
    ("confirmed needs_reauth raises", [], [(SUBJ, NEEDS)], [("raise", "a.json")]),
    ("unconfirmed does not page", [], [(SUBJ, UNCONFIRMED)], []),
    ("quota never raises", [], [(SUBJ, QUOTA)], []),
    ("one open task per credential", [task(S.NOTIFIED)], [(SUBJ, NEEDS)], []),
    ("duplicate verdicts raise once", [], [(SUBJ, NEEDS), (SUBJ, NEEDS)], [("raise", "a.json")]),
    (
        "two credentials two tasks",
        [],
        [(SUBJ, NEEDS), (OTHER, NEEDS)],
        [("raise", "a.json"), ("raise", "b.json")],
    ),
    (
        "same name on another CPA is another credential",
        [task(S.NOTIFIED)],
        [(replace(SUBJ, cpa="backup"), NEEDS)],
        [("raise", "a.json")],
    ),
    ("name is the fallback without index", [task(S.OPEN, index="")], [(SUBJ, NEEDS)], []),
    ("a probe that works closes a waiting task", [task(S.NOTIFIED)], [(SUBJ, WORKS)], [("close", S.DONE)]),
    ("a probe that works closes an opened task", [task(S.OPENED)], [(SUBJ, WORKS)], [("close", S.DONE)]),
    # A CPA restart lists every file auth active (contract §2.2): that alone closes nothing.
    ("listed active alone leaves a waiting task open", [task(S.NOTIFIED)], [(SUBJ, HEALTHY)], []),
    ("listed active alone leaves an opened task open", [task(S.OPENED)], [(SUBJ, HEALTHY)], []),
    (
        "listed active after a restart, file unchanged since the task",
        [task(S.NOTIFIED)],
        [(listed(last_refresh=T0 - timedelta(days=2), modtime=NOW), HEALTHY)],
        [],
    ),
    (
        "a probe that worked before the task closes nothing",
        [task(S.NOTIFIED)],
        [(SUBJ, probed_ok(T0 - timedelta(minutes=1)))],
        [],
    ),
    (
        "a refused probe closes nothing",
        [task(S.NOTIFIED)],
        [(SUBJ, replace(HEALTHY, evidence=(Evidence(EvidenceSource.PROBE, NOW, 401),)))],
        [],
    ),
    (
        # CPA sets LastRefreshedAt only on a refresh that succeeded (conductor_refresh.go, §13)
        "CPA's own successful refresh after the task closes",
        [task(S.NOTIFIED)],
        [(listed(last_refresh=NOW - timedelta(minutes=2)), HEALTHY)],
        [("close", S.DONE)],
    ),
    (
        # §13: a file written (a login the provider may still refuse) proves nothing by itself
        "a key file rewritten after the task (no last_refresh) closes nothing",
        [task(S.NOTIFIED, provider="vertex")],
        [(listed(modtime=NOW - timedelta(minutes=2)), HEALTHY)],
        [],
    ),
    (
        # §13: an in-place re-login copies the old last_refresh; the reload alone is not "works"
        "a reloaded file with the old last_refresh closes nothing",
        [task(S.OPENED)],
        [(listed(last_refresh=T0 - timedelta(hours=3), modtime=NOW), HEALTHY)],
        [],
    ),
    ("a manual task stays open on a working probe", [task(S.NOTIFIED, source="manual")], [(SUBJ, WORKS)], []),
    (
        # a routine background refresh of the still-working credential moves last_refresh (§13)
        "a manual task stays open on CPA's refresh",
        [task(S.NOTIFIED, source="manual")],
        [(listed(last_refresh=NOW, modtime=NOW), WORKS)],
        [],
    ),
    ("healthy leaves verifying alone", [task(S.VERIFYING)], [(SUBJ, WORKS)], []),
    ("healthy leaves retiring alone", [task(S.RETIRING)], [(SUBJ, WORKS)], []),
    ("healthy leaves callback_received alone", [task(S.CALLBACK_RECEIVED)], [(SUBJ, WORKS)], []),
    ("healthy leaves a fresh login alone", [task(S.LOGIN_STARTED, updated_at=NOW)], [(SUBJ, WORKS)], []),
    (
        "healthy closes an abandoned login",
        [task(S.LOGIN_STARTED, updated_at=NOW - LOGIN_STALE_AFTER)],
        [(SUBJ, WORKS)],
        [("close", S.DONE)],
    ),
    ("no verdict means no change", [task(S.NOTIFIED)], [], []),
    ("healthy for another credential", [task(S.NOTIFIED)], [(OTHER, WORKS)], []),
    (
        "cancelled stays quiet while still broken",
        [closed(S.CANCELLED, T0)],
        [(SUBJ, NEEDS)],
        [],
    ),
    (
        "healthy re-arms a cancelled credential",
        [closed(S.CANCELLED, T0)],
        [(SUBJ, WORKS)],
        [("rearm", "t1")],
    ),
    ("listed active alone does not re-arm", [closed(S.CANCELLED, T0)], [(SUBJ, HEALTHY)], []),
    (
        "done by us: stale verdict does not re-raise",
        [closed(S.DONE, NOW - timedelta(minutes=1))],
        [(SUBJ, NEEDS)],
        [],
    ),
    (
        "done by us: newer evidence re-raises",
        [closed(S.DONE, NOW - timedelta(minutes=5))],
        [(SUBJ, replace(NEEDS, evidence=(Evidence(EvidenceSource.PROBE, NOW, 401),)))],
        [("raise", "a.json")],
    ),
    (
        "done by us: evidence older than the close does not re-raise",
        [closed(S.DONE, NOW - timedelta(minutes=5))],
        [(SUBJ, replace(NEEDS, evidence=(Evidence(EvidenceSource.PROBE, NOW - timedelta(minutes=6), 401),)))],
        [],
    ),
    (
        "done long ago without evidence times: re-raise after the grace",
        [closed(S.DONE, NOW - REARM_GRACE)],
        [(SUBJ, NEEDS)],
        [("raise", "a.json")],
    ),
]


def _summary(actions: list[RaiseTask | CloseTask | Rearm | Stuck]) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for a in actions:
        if isinstance(a, Stuck):
            out.append(("stuck", a.task_id))
        elif isinstance(a, RaiseTask):
            out.append(("raise", a.subject.name))
        elif isinstance(a, CloseTask):
            out.append(("close", a.to_state))
        else:
            out.append(("rearm", a.task_id))
    return out


@pytest.mark.parametrize(
    ("name", "tasks", "verdicts", "expected"), PLAN_TABLE, ids=[r[0] for r in PLAN_TABLE]
)
def test_plan(
    name: str,
    tasks: list[ReauthTask],
    verdicts: list[tuple[Subject | Credential, Verdict]],
    expected: list[object],
) -> None:
    assert _summary(plan(tasks, verdicts, NOW, expire_after=WEEK)) == expected


@pytest.mark.parametrize(
    ("state", "age", "expires"),
    [
        (S.OPEN, WEEK, True),
        (S.NOTIFIED, WEEK - timedelta(seconds=1), False),
        (S.OPENED, WEEK + timedelta(days=1), True),
        (S.AWAITING_OPERATOR, WEEK, True),
        (S.VERIFYING, WEEK * 2, False),  # in flight: the verify path owns the outcome
        (S.RETIRING, WEEK * 2, False),
        (S.DONE, WEEK * 2, False),
    ],
)
def test_plan_expiry(state: S, age: timedelta, expires: bool) -> None:
    t = task(state, updated_at=T0 + age)
    actions = plan([t], [(SUBJ, NEEDS)], T0 + age, expire_after=WEEK)
    closes = [a for a in actions if isinstance(a, CloseTask)]
    assert bool(closes) is expires
    if expires:
        assert closes[0].to_state is S.EXPIRED
        assert not [a for a in actions if isinstance(a, RaiseTask)]  # no instant re-raise of an expiring task


def test_plan_accepts_credentials() -> None:
    from reauthd.core.model import Credential

    cred = Credential(
        cpa="main", name="a.json", auth_index="idx9", provider="codex", status="error", email="zed@x.org"
    )
    (action,) = plan([], [(cred, NEEDS)], NOW, expire_after=WEEK)
    assert isinstance(action, RaiseTask)
    assert action.subject.account == "z***@x.org" and action.subject.provider == "codex"


@pytest.mark.parametrize(
    ("state", "idle", "stuck"),
    [
        (S.VERIFYING, STUCK_AFTER - timedelta(seconds=1), False),
        (S.VERIFYING, STUCK_AFTER, True),
        (S.CALLBACK_RECEIVED, STUCK_AFTER, True),
        (S.RETIRING, STUCK_AFTER * 3, True),
        (S.NOTIFIED, STUCK_AFTER, False),  # waiting for a person is not being stuck
    ],
)
def test_plan_hands_stuck_steps_to_an_operator(state: S, idle: timedelta, stuck: bool) -> None:
    t = task(state, created_at=T0, updated_at=T0)
    actions = plan([t], [(SUBJ, HEALTHY)], T0 + idle, expire_after=WEEK * 10)
    assert (("stuck", "t1") in _summary(actions)) is stuck
    if stuck:
        assert not [a for a in actions if isinstance(a, CloseTask)]


def test_plan_expires_at_the_earlier_of_deadline_and_lifetime() -> None:
    shortened = task(S.NOTIFIED, deadline=T0 + WEEK)
    assert _summary(plan([shortened], [], T0 + timedelta(days=2), expire_after=timedelta(days=2))) == [
        ("close", S.EXPIRED)
    ]
    lengthened = task(S.NOTIFIED, deadline=T0 + timedelta(days=1))
    assert _summary(plan([lengthened], [], T0 + timedelta(days=1), expire_after=WEEK)) == [
        ("close", S.EXPIRED)
    ]
    assert plan([lengthened], [], T0 + timedelta(hours=23), expire_after=WEEK) == []


# ------------------------------------------------------------------------------------------ logins elsewhere

LEGACY = "codex-bob@example.com-plus.json"  # named before CPA put the account hash in Codex names
HASHED = "codex-1a2b3c4d-bob@example.com-plus.json"


def entry(name: str, index: str, **kw: object) -> Credential:
    fields: dict[str, Any] = {
        "cpa": "main",
        "provider": "codex",
        "status": "active",
        "email": "bob@example.com",
        "modtime": NOW,
        **kw,
    }
    return Credential(name=name, auth_index=index, **fields)


def waiting_task(state: S = S.NOTIFIED, **kw: object) -> ReauthTask:
    return task(state, name=LEGACY, index="old1", **kw)


OLD_ENTRY = entry(LEGACY, "old1", status="error", modtime=T0 - timedelta(days=30))


@pytest.mark.parametrize(
    ("name", "tasks", "listing", "adopted"),
    [
        ("a new file for the same account", [waiting_task()], [OLD_ENTRY, entry(HASHED, "new1")], ["new1"]),
        (
            "also once the page was opened",
            [waiting_task(S.OPENED)],
            [OLD_ENTRY, entry(HASHED, "new1")],
            ["new1"],
        ),
        (
            "not while our own login runs",
            [waiting_task(S.LOGIN_STARTED)],
            [OLD_ENTRY, entry(HASHED, "n")],
            [],
        ),
        ("not a closed task", [waiting_task(S.DONE, closed_at=NOW)], [OLD_ENTRY, entry(HASHED, "n")], []),
        (
            "not a file written before the task",
            [waiting_task()],
            [OLD_ENTRY, entry(HASHED, "new1", modtime=T0 - timedelta(hours=1))],
            [],
        ),
        (
            "not another account",
            [waiting_task()],
            [OLD_ENTRY, entry(HASHED, "n", email="eve@example.com")],
            [],
        ),
        (
            "not a file CPA has not loaded",
            [waiting_task()],
            [OLD_ENTRY, entry(HASHED, "n", status="error")],
            [],
        ),
        ("not a disabled file", [waiting_task()], [OLD_ENTRY, entry(HASHED, "n", disabled=True)], []),
        ("not another CPA", [waiting_task()], [OLD_ENTRY, entry(HASHED, "n", cpa="backup")], []),
        (
            "two candidates: nobody guesses",
            [waiting_task()],
            [OLD_ENTRY, entry(HASHED, "n1"), entry("codex-bob@example.com-pro.json", "n2")],
            [],
        ),
        ("the old file is gone: nothing says whose it was", [waiting_task()], [entry(HASHED, "new1")], []),
        (
            "a refresh time alone is not a write of the file (§13)",
            [waiting_task()],
            [OLD_ENTRY, entry(HASHED, "new1", modtime=T0 - timedelta(hours=1), last_refresh=NOW)],
            [],
        ),
        (
            "Kimi files carry no identity",
            [task(S.NOTIFIED, name="kimi-1.json", index="k1", provider="kimi")],
            [
                entry("kimi-1.json", "k1", provider="kimi", status="error"),
                entry("kimi-1796000000000.json", "k2", provider="kimi"),
            ],
            [],
        ),
        (
            "one new file claimed by two tasks: neither",
            [waiting_task(), task(S.NOTIFIED, id="t2", name="codex-bob@example.com.json", index="old2")],
            [OLD_ENTRY, entry("codex-bob@example.com.json", "old2", status="error"), entry(HASHED, "new1")],
            [],
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_panel_logins(
    name: str, tasks: list[ReauthTask], listing: list[Credential], adopted: list[str]
) -> None:
    found = panel_logins(tasks, listing)
    assert [a.credential.auth_index for a in found] == adopted
    for adopt in found:
        # The reason is shown to people: the e-mail inside the file name is masked, its prefix kept.
        assert adopt.task_id == "t1" and "codex-1a2b3c4d-b***@example.com-plus.json" in adopt.reason


@pytest.mark.parametrize(
    ("name", "the_task", "own_entry", "adopted"),
    [
        # §13: a reload rebuilds the auth from the file: active, empty message, the file written after
        # the task; last_refresh keeps the value from before (copied), whatever it is
        (
            "reloaded in place after the task",
            waiting_task(),
            entry(LEGACY, "old1", last_refresh=T0 - timedelta(hours=5)),
            True,
        ),
        (
            "also without any last_refresh",
            waiting_task(S.OPENED),
            entry(LEGACY, "old1", last_refresh=None),
            True,
        ),
        # a CPA restart lists it active but rewrote nothing
        (
            "a restart writes nothing",
            waiting_task(),
            entry(LEGACY, "old1", modtime=T0 - timedelta(days=1)),
            False,
        ),
        ("still failing", waiting_task(), entry(LEGACY, "old1", status="error"), False),
        (
            "a message is not a reload",
            waiting_task(),
            entry(LEGACY, "old1", status_message="unauthorized"),
            False,
        ),
        ("not loaded yet (raw record, no status)", waiting_task(), entry(LEGACY, "old1", status=""), False),
        ("disabled", waiting_task(), entry(LEGACY, "old1", disabled=True), False),
        # the credential of a manual task works: CPA's routine refresh looks exactly like this
        ("never a manual task", waiting_task(source="manual"), entry(LEGACY, "old1"), False),
        (
            "not the write a refused verification already tested",
            waiting_task(
                S.OPENED,
                history=[
                    TaskEvent(NOW - timedelta(minutes=5), S.OPENED, S.VERIFYING, "login elsewhere"),
                    TaskEvent(NOW - timedelta(minutes=4), S.VERIFYING, S.OPENED, "refused"),
                ],
            ),
            entry(LEGACY, "old1", modtime=NOW - timedelta(minutes=6)),
            False,
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_panel_logins_in_place(name: str, the_task: ReauthTask, own_entry: Credential, adopted: bool) -> None:
    found = panel_logins([the_task], [own_entry])
    assert [a.credential.auth_index for a in found] == (["old1"] if adopted else [])


def test_a_task_adopted_elsewhere_may_move_to_verifying() -> None:
    for state in (S.OPEN, S.NOTIFIED, S.OPENED):
        assert can_transition(state, S.VERIFYING)
