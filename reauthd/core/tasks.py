"""The reauth task state machine and the reconcile decision between verdicts and tasks (pure, no I/O).

`transition` is the only way a task changes state; `plan` decides, from the tasks and the latest verdicts,
which tasks to raise and which to close. Both take `now` as an argument.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from reauthd.core.identity import MatchKind, OldCredential, find_replacement, written_since
from reauthd.core.model import (
    Credential,
    EvidenceSource,
    ReauthTask,
    TaskEvent,
    TaskState,
    Verdict,
    VerdictKind,
)
from reauthd.core.sanitize import mask_account, sanitize_line

S = TaskState
T = TypeVar("T")

# Allowed transitions. Anything not listed is a bug in the caller and raises IllegalTransition.
TRANSITIONS: Mapping[TaskState, frozenset[TaskState]] = {
    # To VERIFYING before any login of ours: the account logged in again through another tool under a new
    # file name (see `panel_logins`); that file is tested before the old one is retired.
    S.OPEN: frozenset(
        {S.NOTIFIED, S.OPENED, S.VERIFYING, S.AWAITING_OPERATOR, S.DONE, S.FAILED, S.EXPIRED, S.CANCELLED}
    ),
    S.NOTIFIED: frozenset(
        {S.OPENED, S.VERIFYING, S.AWAITING_OPERATOR, S.DONE, S.FAILED, S.EXPIRED, S.CANCELLED}
    ),
    S.OPENED: frozenset(
        {S.LOGIN_STARTED, S.VERIFYING, S.AWAITING_OPERATOR, S.DONE, S.FAILED, S.EXPIRED, S.CANCELLED}
    ),
    # Back to OPENED: CPA's callback flow lives 5 minutes only (contract §4); the person may start again.
    # Straight to VERIFYING: device flows (Kimi, xAI) and Vertex imports have no callback step.
    S.LOGIN_STARTED: frozenset(
        {S.CALLBACK_RECEIVED, S.VERIFYING, S.OPENED, S.AWAITING_OPERATOR, S.FAILED, S.EXPIRED, S.CANCELLED}
    ),
    S.CALLBACK_RECEIVED: frozenset({S.VERIFYING, S.OPENED, S.AWAITING_OPERATOR, S.FAILED, S.CANCELLED}),
    # VERIFYING -> OPENED: the new credential failed its test request; make-before-break left the old file
    # untouched and the person may log in again. VERIFYING -> OPEN/NOTIFIED: a file reload seen through
    # another tool (`panel_logins`) was tested and refused; the task waits where it waited before.
    S.VERIFYING: frozenset(
        {S.RETIRING, S.DONE, S.OPEN, S.NOTIFIED, S.OPENED, S.AWAITING_OPERATOR, S.FAILED, S.CANCELLED}
    ),
    S.RETIRING: frozenset({S.DONE, S.AWAITING_OPERATOR, S.FAILED}),
    S.AWAITING_OPERATOR: frozenset(
        {S.OPENED, S.VERIFYING, S.RETIRING, S.DONE, S.FAILED, S.EXPIRED, S.CANCELLED}
    ),
    S.DONE: frozenset(),
    S.FAILED: frozenset(),
    S.EXPIRED: frozenset(),
    S.CANCELLED: frozenset(),
}

# States in which reauthd itself is in the middle of a login, a verification or a retirement: that path owns
# the outcome, so reconcile neither closes nor expires such a task (see `plan`).
IN_FLIGHT: frozenset[TaskState] = frozenset({S.LOGIN_STARTED, S.CALLBACK_RECEIVED, S.VERIFYING, S.RETIRING})
# A login that was started but never finished stops counting as in flight after this long: CPA forgets an
# unfinished callback flow after 5 minutes and any pending session after 30 (contract §4.2); xAI's device
# code also lives 30 minutes. The margin covers a poll that lands just after.
LOGIN_STALE_AFTER = timedelta(minutes=35)
# A callback/verify/retire step takes minutes. One that made no progress for this long was lost (a bug, or a
# CPA that never answered): hand it to an operator instead of letting it sit in flight forever.
STUCK_AFTER = timedelta(hours=24)
# States where the person has not acted yet: reminders and escalation apply only here.
AWAITING_PERSON: frozenset[TaskState] = frozenset({S.OPEN, S.NOTIFIED})
# After our own flow closed a task as done, a needs_reauth verdict must carry evidence newer than the close
# to raise a new task; without timestamps we wait this long (detection's latest verdict may lag a tick).
REARM_GRACE = timedelta(minutes=10)


class IllegalTransition(Exception):
    """A caller asked for a state change the task lifecycle does not allow."""

    def __init__(self, task_id: str, from_state: TaskState, to_state: TaskState) -> None:
        super().__init__(f"task {task_id} cannot go from {from_state.value} to {to_state.value}")
        self.task_id = task_id
        self.from_state = from_state
        self.to_state = to_state


def can_transition(from_state: TaskState, to_state: TaskState) -> bool:
    return to_state in TRANSITIONS[from_state]


def transition(task: ReauthTask, to: TaskState, reason: str, now: datetime) -> ReauthTask:
    """Return a copy of `task` in state `to` with the event appended; raise IllegalTransition if not allowed.

    Also maintains the bookkeeping fields that follow from a state: `notified_at`, `opened_at`, `closed_at`
    and `quiet_until_healthy`.
    """
    if not can_transition(task.state, to):
        raise IllegalTransition(task.id, task.state, to)
    clean = sanitize_line(reason)
    event = TaskEvent(at=now, from_state=task.state, to_state=to, reason=clean)
    changed = replace(
        task, state=to, updated_at=now, history=[*task.history, event], details=dict(task.details)
    )
    if to is S.NOTIFIED and changed.notified_at is None:
        changed.notified_at = now
    if to is S.OPENED and changed.opened_at is None:
        changed.opened_at = now
    if to.terminal:
        changed.closed_at = now
        changed.quiet_until_healthy = to is not S.DONE
    return changed


def reminders_apply(state: TaskState) -> bool:
    """Reminders and escalation are sent only while nobody has opened the link yet."""
    return state in AWAITING_PERSON


def in_flight(task: ReauthTask, now: datetime) -> bool:
    """True while one of reauthd's own login/verify/retire steps owns this task's outcome."""
    if task.state not in IN_FLIGHT:
        return False
    if task.state is S.LOGIN_STARTED:
        return now - task.updated_at < LOGIN_STALE_AFTER
    return True


# ------------------------------------------------------------------------------------------ reconcile


@dataclass(frozen=True, slots=True)
class Subject:
    """The credential a task is about, as reconcile needs it. `account` is already masked."""

    cpa: str
    name: str
    auth_index: str
    provider: str = ""
    account: str = ""

    @classmethod
    def of(cls, credential: Credential) -> Subject:
        return cls(
            cpa=credential.cpa,
            name=credential.name,
            auth_index=credential.auth_index,
            provider=credential.provider,
            account=mask_account(credential.email or credential.label or None),
        )


@dataclass(frozen=True, slots=True)
class RaiseTask:
    """Open a new task for a credential with a confirmed needs_reauth verdict."""

    subject: Subject
    verdict: Verdict


@dataclass(frozen=True, slots=True)
class CloseTask:
    """Move an open task to a terminal state (done: healthy by other means; expired: past its deadline)."""

    task_id: str
    to_state: TaskState
    reason: str


@dataclass(frozen=True, slots=True)
class Stuck:
    """An in-flight task made no progress for STUCK_AFTER: move it to awaiting_operator."""

    task_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Rearm:
    """The credential was seen healthy after a cancelled/failed/expired task: allow new tasks again."""

    task_id: str


Action = RaiseTask | CloseTask | Rearm | Stuck


def same_credential(task: ReauthTask, subject: Subject) -> bool:
    """One credential = CPA + `auth_index` (stable per file path, contract §2.1); the file name is the
    fallback when either side has no index."""
    if task.cpa != subject.cpa:
        return False
    if task.auth_index and subject.auth_index:
        return task.auth_index == subject.auth_index
    return task.auth_name == subject.name


class _CredentialIndex(Generic[T]):
    """Items filed under the credential they are about, found the way `same_credential` matches: by
    `auth_index` when both sides have one, by file name otherwise. Keeps insertion order, so `plan` over
    50,000 verdicts looks tasks up instead of comparing every verdict with every task."""

    def __init__(self) -> None:
        self._count = 0
        self._by_index: dict[tuple[str, str], list[tuple[int, T]]] = {}
        self._unindexed_by_name: dict[tuple[str, str], list[tuple[int, T]]] = {}
        self._by_name: dict[tuple[str, str], list[tuple[int, T]]] = {}

    def add(self, cpa: str, name: str, auth_index: str, item: T) -> None:
        entry = (self._count, item)
        self._count += 1
        if auth_index:
            self._by_index.setdefault((cpa, auth_index), []).append(entry)
        else:
            self._unindexed_by_name.setdefault((cpa, name), []).append(entry)
        self._by_name.setdefault((cpa, name), []).append(entry)

    def matching(self, subject: Subject) -> list[T]:
        if not subject.auth_index:
            return [item for _, item in self._by_name.get((subject.cpa, subject.name), ())]
        by_index = self._by_index.get((subject.cpa, subject.auth_index), [])
        by_name = self._unindexed_by_name.get((subject.cpa, subject.name), [])
        if not by_name:
            return [item for _, item in by_index]
        return [item for _, item in sorted([*by_index, *by_name], key=lambda entry: entry[0])]


def _task_index(tasks: Iterable[ReauthTask]) -> _CredentialIndex[ReauthTask]:
    index: _CredentialIndex[ReauthTask] = _CredentialIndex()
    for task in tasks:
        index.add(task.cpa, task.auth_name, task.auth_index, task)
    return index


def _latest_evidence(verdict: Verdict) -> datetime | None:
    times = [e.observed_at for e in verdict.evidence]
    return max(times) if times else None


def works_again_since(item: Subject | Credential, verdict: Verdict, since: datetime) -> bool:
    """Positive evidence, newer than `since`, that a request with the credential succeeded.

    "CPA lists it as active" alone is not: after a CPA restart every file auth starts `active` (contract
    §2.2), and so does one whose cooldown was reset, that was re-enabled or whose file was reloaded
    (§13), whatever its tokens. A file written (a newer `modtime`) is not either: a login the provider then
    refuses writes it too (§13). What counts:
    - a probe with the credential's own token that the provider accepted (2xx) after `since`;
    - a `last_refresh` after `since`: CPA's runtime LastRefreshedAt, set only by a refresh that succeeded
      (conductor_refresh.go, api_tools.go) or by an upload carrying it (auth_files_crud.go). An in-place
      re-login copies the old value (service_auth.go), so it never moves this by itself.
    reauthd's own verification closes its tasks through the completion runner, not here.
    """
    for evidence in verdict.evidence:
        status = evidence.http_status
        if (
            evidence.source is EvidenceSource.PROBE
            and status is not None
            and 200 <= status < 300
            and evidence.observed_at > since
        ):
            return True
    return isinstance(item, Credential) and item.last_refresh is not None and item.last_refresh > since


def closes_as_done(task: ReauthTask, item: Subject | Credential, verdict: Verdict) -> bool:
    """May a healthy verdict close this open task as "re-logged elsewhere"? A detected revocation closes on
    a request with the credential that succeeded after the task was raised (`works_again_since`).

    A task an operator raised by hand is about a credential that still works (a password or organisation
    change): its probes succeed and CPA keeps refreshing it, and a re-login through another tool looks in
    the listing exactly like such a refresh (the file rewritten, status active, §13). Only reauthd's own
    login and verification (or the new-name hand-off to it) closes it, never a healthy verdict."""
    if task.source == "manual":
        return False
    return works_again_since(item, verdict, task.created_at)


def _rearmed_after(closed: ReauthTask, verdict: Verdict, now: datetime) -> bool:
    """May a new task be raised for a credential whose latest task is `closed`?"""
    if closed.quiet_until_healthy:
        return False  # cancelled/failed/expired: stay quiet until the credential is seen healthy
    closed_at = closed.closed_at or closed.updated_at
    latest = _latest_evidence(verdict)
    if latest is not None:
        return latest > closed_at
    return now - closed_at >= REARM_GRACE


def plan(
    tasks: Sequence[ReauthTask],
    verdicts: Iterable[tuple[Subject | Credential, Verdict]],
    now: datetime,
    *,
    expire_after: timedelta,
) -> list[Action]:
    """Decide what reconcile does this tick. Idempotent: applying the result and planning again yields [].

    - A confirmed needs_reauth without an open task for that credential raises one (one open task per
      credential) unless the credential's last task asked to stay quiet until it is healthy again.
    - A healthy verdict closes an open task as done ("someone re-logged through a panel") only with evidence
      newer than the task that the credential works (`works_again_since`), never on "listed as active"
      alone (a CPA restart lists every file active), and not while a login/verify/retire of ours is in
      flight: that path owns the outcome. Re-arming a quiet credential needs the same evidence.
    - An open task past its deadline (or `created_at + expire_after`, if earlier) expires, unless in flight;
      an in-flight step without progress for STUCK_AFTER goes to awaiting_operator.
    Credentials absent from `verdicts` are left alone (no information is not evidence).
    """
    actions: list[Action] = []
    open_tasks = [t for t in tasks if not t.state.terminal]
    closed_tasks = sorted((t for t in tasks if t.state.terminal), key=lambda t: t.closed_at or t.updated_at)
    closing: set[str] = set()

    for task in open_tasks:
        # The earlier of the stored deadline (what messages promised, when links stop) and the configured
        # lifetime (an operator may have shortened it since).
        expires_at = min(task.deadline, task.created_at + expire_after)
        if in_flight(task, now):
            if task.state is not S.LOGIN_STARTED and now - task.updated_at >= STUCK_AFTER:
                actions.append(
                    Stuck(task.id, f"no progress in {task.state.value} for a day; an operator should look")
                )
                closing.add(task.id)
        elif now >= expires_at:
            actions.append(CloseTask(task.id, S.EXPIRED, "nobody completed the login before the deadline"))
            closing.add(task.id)

    open_index = _task_index(open_tasks)
    closed_index = _task_index(closed_tasks)
    raised: _CredentialIndex[Subject] = _CredentialIndex()
    for item, verdict in verdicts:
        if verdict.kind is not VerdictKind.HEALTHY and (
            verdict.kind is not VerdictKind.NEEDS_REAUTH or not verdict.confirmed
        ):
            continue  # neither closes nor raises anything
        subject = Subject.of(item) if isinstance(item, Credential) else item
        credential_tasks = open_index.matching(subject)
        mine = [t for t in credential_tasks if t.id not in closing]
        if verdict.kind is VerdictKind.HEALTHY:
            for task in mine:
                if not in_flight(task, now) and closes_as_done(task, item, verdict):
                    actions.append(
                        CloseTask(task.id, S.DONE, "the credential works again (re-logged elsewhere)")
                    )
            latest_closed = closed_index.matching(subject)
            if latest_closed and latest_closed[-1].quiet_until_healthy:
                closed = latest_closed[-1]
                if works_again_since(item, verdict, closed.closed_at or closed.updated_at):
                    actions.append(Rearm(closed.id))
            continue
        expiring = [t for t in credential_tasks if t.id in closing]
        if mine or expiring or raised.matching(subject):
            continue
        previous = closed_index.matching(subject)
        if previous and not _rearmed_after(previous[-1], verdict, now):
            continue
        actions.append(RaiseTask(subject, verdict))
        raised.add(subject.cpa, subject.name, subject.auth_index, subject)
    return actions


# ------------------------------------------------------------------------------------ logins elsewhere

#: Tasks a login through another tool may end: nobody has started a login of ours for them.
ADOPTABLE: frozenset[TaskState] = frozenset({S.OPEN, S.NOTIFIED, S.OPENED})


@dataclass(frozen=True, slots=True)
class Adopt:
    """The task's account logged in again elsewhere (a new file name, or its own file reloaded in place):
    verify that file, then retire what is left to retire."""

    task_id: str
    credential: Credential
    reason: str


def reloaded_in_place(task: ReauthTask, entry: Credential) -> bool:
    """The task's own file shows what a reload after a new login shows (contract §13): the runtime auth is
    rebuilt from the file, `active` with an empty `status_message` (the old failure state is not copied),
    and the file was written after the task was raised (`modtime`). `last_refresh` plays no part: the
    reload copies it unchanged. A CPA restart also lists every file active, but rewrites none of them.

    Never for a task an operator raised by hand: its credential still works, and CPA's routine refresh
    rewrites the file and reloads it exactly like a login would."""
    return (
        task.source != "manual"
        and entry.status == "active"
        and not entry.disabled
        and not entry.status_message
        and entry.modtime is not None
        and entry.modtime > adopt_since(task)
    )


def adopt_since(task: ReauthTask) -> datetime:
    """Files written after this may be a new login for the task: after it was raised and after its last
    verification ended (a login that verification refused must not be handed to verification again and
    again; a later login writes the file again)."""
    since = task.created_at
    for event in task.history:
        if S.VERIFYING in (event.to_state, event.from_state) and event.at > since:
            since = event.at
    return since


def adopted_from(history: Iterable[TaskEvent]) -> TaskState | None:
    """The state a task waited in when a login through another tool was handed to verification
    (`panel_logins`), or None when the latest verification began with a login of ours."""
    entered: TaskEvent | None = None
    for event in history:
        if event.to_state is S.VERIFYING:
            entered = event
    if entered is None or entered.from_state not in ADOPTABLE:
        return None
    return entered.from_state


def panel_logins(tasks: Iterable[ReauthTask], listing: Iterable[Credential]) -> list[Adopt]:
    """Open tasks whose account logged in again through another tool (a panel, CPA's own CLI) and landed
    under a *new* file name, as a legacy Codex name or a plan change does (contract §4.4). The old file
    stays in `error`, so `plan` never sees it healthy; without this the person would be reminded until
    the task expired. A login in place (same name) is handed over too once the old file shows a reload
    after the task (`reloaded_in_place`): a written file proves nothing until a request with it succeeded,
    so `plan` does not close it on that (§13).

    The new file must be the only candidate for the old one (the rules of `core.identity`), registered by
    CPA, written after the task was raised, and claimed by no other task. Kimi files carry no account
    identity (a new `kimi-<ms>.json` for every login), and e-mail-less xAI files are named after the token,
    so neither can be told apart here: those tasks wait for a login through reauthd's own page.
    """
    waiting = {
        (t.cpa, t.auth_index): t
        for t in tasks
        if t.state in ADOPTABLE and t.auth_index and t.provider != "kimi"
    }
    if not waiting:
        return []
    earliest = min(t.created_at for t in waiting.values())
    providers = {(t.cpa, t.provider) for t in waiting.values()}
    old_entries: dict[tuple[str, str], Credential] = {}
    fresh: dict[tuple[str, str, str], list[Credential]] = {}
    for entry in listing:
        key = (entry.cpa, entry.auth_index)
        if key in waiting:
            old_entries[key] = entry
        elif (
            entry.email
            and (entry.cpa, entry.provider) in providers
            and entry.status == "active"
            and not entry.disabled
            and written_since(entry, earliest)
        ):
            fresh.setdefault((entry.cpa, entry.provider, entry.email.casefold()), []).append(entry)

    found: list[Adopt] = []
    for key, task in waiting.items():
        old_entry = old_entries.get(key)
        if old_entry is not None and reloaded_in_place(task, old_entry):
            reason = sanitize_line(
                f"CPA reloaded {old_entry.name} after the task was raised (a new login in place, through "
                "another tool); testing it"
            )
            found.append(Adopt(task.id, old_entry, reason))
            continue
        if old_entry is None or not old_entry.email:
            continue  # the old file is gone or says nothing about whose it was
        old = OldCredential(
            old_entry.name, old_entry.auth_index, old_entry.provider, old_entry.email, old_entry.account_id
        )
        candidates = fresh.get((old_entry.cpa, old_entry.provider, old_entry.email.casefold()), [])
        match = find_replacement(old, candidates, adopt_since(task))
        if match.kind is MatchKind.FOUND and match.credential is not None and not match.same_name:
            reason = sanitize_line(
                f"a new login for this account appeared in CPA as {match.credential.name} "
                "(through another tool); testing it before the old file is retired"
            )
            found.append(Adopt(task.id, match.credential, reason))
    claimed: dict[tuple[str, str], int] = {}
    for adopt in found:
        ref = (adopt.credential.cpa, adopt.credential.auth_index)
        claimed[ref] = claimed.get(ref, 0) + 1
    return [a for a in found if claimed[(a.credential.cpa, a.credential.auth_index)] == 1]
