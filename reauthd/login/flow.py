"""The login a person drives from the recipient page: start, paste the callback, start again, upload a Vertex
key, and the server-side `get-auth-status` poll that hands a finished login to verification.

Every step persists its state change in the store (tasks + login_sessions) right after CPA confirmed it, so
a restarted daemon resumes polling from the store (`resume`). Secrets handled here — the OAuth `state`, the
authorize URL, the pasted callback URL, the service-account key — are never logged, never put in an
exception text and never written to the task's history.
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from reauthd.core.model import ReauthTask, TaskState
from reauthd.core.tasks import IllegalTransition
from reauthd.cpa.errors import CPAError
from reauthd.cpa.home import HomeClient
from reauthd.login.callback import CallbackProblem, CallbackRejected, check_callback_url
from reauthd.login.ports import CompletionRunner, LoginCPA, LoginStore
from reauthd.login.providers import LoginKind, UnsupportedProvider, login_for_provider, resolve_kind
from reauthd.login.timing import (
    DEVICE_POLL_LIMIT_S,
    STATUS_POLL_INTERVAL_S,
    login_deadline,
    window_lapsed,
    worth_reusing,
)
from reauthd.login.vertex import (
    ServiceAccountRejected,
    ServiceAccountSummary,
    check_location,
    check_service_account,
    project_mismatch,
    vertex_file_name,
)
from reauthd.login.wording import (
    Explanation,
    NextStep,
    explain_callback_answer,
    explain_cpa_problem,
    explain_start_problem,
    explain_status_error,
    explain_vertex_answer,
)
from reauthd.store.records import LoginSession

log = structlog.get_logger(__name__)

S = TaskState

#: States in which the page shows progress rather than a login step.
PROGRESS_STATES = frozenset({S.CALLBACK_RECEIVED, S.VERIFYING, S.RETIRING})
#: States in which a login session may be polled.
POLLED_STATES = frozenset({S.LOGIN_STARTED, S.CALLBACK_RECEIVED})
#: After its deadline, CPA itself reports the timeout; if it keeps saying `wait` this long after, give up.
POLL_GIVE_UP_AFTER = timedelta(minutes=3)


@dataclass(frozen=True, slots=True)
class Notice:
    """What the page tells the person after an action that did not simply move on. Never holds a secret."""

    sentence: str
    next_step: NextStep
    problem: CallbackProblem | None = None


def _notice(explanation: Explanation) -> Notice:
    return Notice(explanation.sentence, explanation.next_step)


#: reauthd's page does not drive a CLIProxyAPIHome's login, verify and retire yet (README, "CPA clusters (Home)").
ON_HOME = Notice(
    "This account is on a CLIProxyAPIHome cluster, where reauthd cannot run the sign-in yet. Log in again "
    "through the Home's own management panel; the operator then closes this task.",
    NextStep.TRY_LATER,
)
_NOT_STARTED = Notice("Press “Start login” first: it creates a fresh sign-in link.", NextStep.START_AGAIN)
_IN_PROGRESS = Notice(
    "The sign-in result has already reached the proxy server. Follow the progress below.", NextStep.COMPLETED
)
_CLOSED = Notice("This request is already closed; there is nothing more to do here.", NextStep.COMPLETED)
_OPERATOR = Notice(
    "An operator has to look at this request before the sign-in can continue.", NextStep.TRY_LATER
)
_LAPSED = _notice(explain_status_error("unknown or expired state"))


def _settled(task: ReauthTask) -> Notice | None:
    """The answer to any recipient action on a task that is closed, or that reauthd is already completing."""
    if task.state.terminal:
        return _CLOSED
    if task.state in PROGRESS_STATES:
        return _IN_PROGRESS
    return None


class PollOutcome:
    WAITING = "waiting"
    COMPLETED = "completed"
    ENDED = "ended"
    IDLE = "idle"


class LoginFlow:
    """One instance per daemon. `clients` maps each configured CPA name to its client."""

    def __init__(
        self,
        store: LoginStore,
        clients: Mapping[str, LoginCPA],
        *,
        clock: Callable[[], datetime],
        completion: CompletionRunner | None = None,
        webui_cpas: frozenset[str] = frozenset(),
        poll_interval_s: float = STATUS_POLL_INTERVAL_S,
    ) -> None:
        self.store = store
        self.clients = clients
        self.clock = clock
        self.completion = completion
        self.webui_cpas = webui_cpas
        self.poll_interval_s = poll_interval_s
        self._locks: dict[str, asyncio.Lock] = {}
        self._pollers: dict[str, asyncio.Task[None]] = {}
        self._wakeups: dict[str, asyncio.Event] = {}
        self._background: set[asyncio.Task[None]] = set()
        # Logins this process has seen CPA answer for: an unknown state on the very first answer after a
        # restart may be a completion nobody polled in time (see poll_once).
        self._answered: set[str] = set()
        self._closed = False

    # ------------------------------------------------------------------------------------ helpers

    def _lock(self, task_id: str) -> asyncio.Lock:
        return self._locks.setdefault(task_id, asyncio.Lock())

    def _client(self, task: ReauthTask) -> LoginCPA:
        return self.clients[task.cpa]

    def _on_home(self, task: ReauthTask) -> bool:
        return isinstance(self.clients.get(task.cpa), HomeClient)

    def _audit(self, task: ReauthTask, action: str, outcome: str, now: datetime) -> None:
        self.store.record_audit(
            task_id=task.id,
            cpa=task.cpa,
            action=action,
            target_name=task.auth_name,
            target_auth_index=task.auth_index,
            outcome=outcome,
            at=now,
        )

    # ------------------------------------------------------------------------------------ start

    async def start(self, task_id: str, now: datetime) -> Notice | None:
        """The "Start login" POST: mark the task opened and mint a fresh login at this moment.

        A login minted earlier with enough of its window left is kept (a double click or a second tab must
        not kill the link the person is already using); one that lapsed, or would lapse before a person could
        finish (timing.worth_reusing), is cancelled at CPA and replaced.
        """
        async with self._lock(task_id):
            task = self.store.get_task(task_id, with_history=False)
            if (settled := _settled(task)) is not None:
                return settled
            if task.state is S.AWAITING_OPERATOR:
                return _OPERATOR
            if self._on_home(task):
                return ON_HOME  # before "opened": reminders go on, nothing is minted at Home
            if task.state in (S.OPEN, S.NOTIFIED):
                task = self.store.apply_transition(
                    task_id,
                    S.OPENED,
                    "the recipient pressed Start login",
                    now,
                    expect={S.OPEN, S.NOTIFIED},
                )
                log.info("login opened", task_id=task_id, cpa=task.cpa, provider=task.provider)
            if task.state is S.LOGIN_STARTED:
                session = self.store.get_login_session(task_id)
                if session is not None and worth_reusing(
                    session.created_at,
                    session.expires_at,
                    now,
                    device=session.flow == LoginKind.DEVICE,
                ):
                    self._watch(task_id)
                    return None
                return await self._restart_locked(task, session, now)
            return await self._mint(task, now)

    async def restart(self, task_id: str, now: datetime) -> Notice | None:
        """ "Start again": cancel the old CPA session (DELETE /oauth-session) and mint a new one."""
        async with self._lock(task_id):
            task = self.store.get_task(task_id, with_history=False)
            if (settled := _settled(task)) is not None:
                return settled
            if task.state is S.AWAITING_OPERATOR:
                return _OPERATOR
            if task.state in (S.OPEN, S.NOTIFIED):
                return _NOT_STARTED
            return await self._restart_locked(task, self.store.get_login_session(task_id), now)

    async def _restart_locked(
        self, task: ReauthTask, session: LoginSession | None, now: datetime
    ) -> Notice | None:
        if session is not None and session.oauth_state and session.flow != LoginKind.VERTEX:
            try:
                cancelled = await self._client(task).cancel_oauth_session(session.oauth_state)
                self._audit(
                    task, "oauth-session cancel", "cancelled" if cancelled else "was no longer pending", now
                )
            except CPAError as exc:
                # The old session dies by itself (5 minutes, or the device code's expiry); go on.
                log.warning("could not cancel the old login session", task_id=task.id, error=str(exc))
        self.store.delete_login_session(task.id)
        if task.state is S.LOGIN_STARTED:
            task = self.store.apply_transition(
                task.id, S.OPENED, "the recipient started the sign-in again", now, expect=S.LOGIN_STARTED
            )
        return await self._mint(task, now)

    async def _mint(self, task: ReauthTask, now: datetime) -> Notice | None:
        if self._on_home(task):
            return ON_HOME
        try:
            login = login_for_provider(task.provider)
        except UnsupportedProvider:
            log.warning("no login route for provider", task_id=task.id, provider=task.provider)
            return Notice(
                "reauthd cannot start a sign-in for this kind of account. The operator has to renew it by hand.",
                NextStep.TRY_LATER,
            )
        if login.kind is LoginKind.VERTEX:
            return None  # no CPA call: the page shows the key upload form for an opened Vertex task
        client = self._client(task)
        try:
            answer = await client.auth_url(login.auth_url_provider, is_webui=task.cpa in self.webui_cpas)
        except CPAError as exc:
            log.warning("CPA did not mint a login", task_id=task.id, cpa=task.cpa, error=str(exc))
            return _notice(explain_start_problem(exc))
        kind = resolve_kind(login, answer.flow)
        deadline = login_deadline(
            now,
            device=kind is LoginKind.DEVICE,
            expires_in=answer.expires_in,
            poll_limit_s=DEVICE_POLL_LIMIT_S.get(login.auth_url_provider),
        )
        session = LoginSession(
            task_id=task.id,
            provider=login.auth_url_provider,
            oauth_state=answer.state,
            flow=kind.value,
            expires_at=deadline,
            user_code=answer.user_code,
            # The URL the person opens: the authorize URL (callback flows) or the verification URL (device).
            # It carries `state` like the column next to it, never a code.
            verification_url=answer.url,
            created_at=now,
        )
        self.store.save_login_session(session, now)
        what = "a device code" if kind is LoginKind.DEVICE else "a fresh sign-in link"
        self.store.apply_transition(
            task.id, S.LOGIN_STARTED, f"The proxy server issued {what}.", now, expect=S.OPENED
        )
        log.info("login started", task_id=task.id, cpa=task.cpa, provider=task.provider, flow=kind.value)
        if self.completion is not None:  # before the person can use the link: it is not on the page yet
            await self.completion.remember_old_file(task.id, now)
        self._watch(task.id)
        return None

    # ------------------------------------------------------------------------------------ callback

    async def submit_callback(self, task_id: str, pasted: str, now: datetime) -> Notice | None:
        """The pasted address: checked here, then sent to CPA unchanged as `redirect_url` (contract §4.3)."""
        async with self._lock(task_id):
            task = self.store.get_task(task_id, with_history=False)
            if (settled := _settled(task)) is not None:
                return settled
            if task.state is not S.LOGIN_STARTED:
                return _NOT_STARTED
            session = self.store.get_login_session(task_id)
            if session is None or session.flow != LoginKind.CALLBACK:
                return _NOT_STARTED
            try:
                accepted = check_callback_url(pasted, session.oauth_state)
            except CallbackRejected as exc:
                log.info("pasted address refused before CPA", task_id=task_id, problem=exc.problem.value)
                return Notice(str(exc), NextStep.PASTE_AGAIN, exc.problem)
            if window_lapsed(session.expires_at, now):
                return _LAPSED
            try:
                await self._client(task).post_oauth_callback(accepted.url)
            except CPAError as exc:
                explanation = explain_callback_answer(exc)
                status = getattr(exc, "status", None)
                self._audit(task, "oauth-callback", f"refused ({status or type(exc).__name__})", now)
                log.warning("CPA refused the callback", task_id=task_id, error=str(exc))
                if explanation.next_step is NextStep.COMPLETED:
                    self._wake(task_id)
                return _notice(explanation)
            self._audit(task, "oauth-callback", "accepted", now)
            self.store.apply_transition(
                task_id,
                S.CALLBACK_RECEIVED,
                "The proxy server accepted the sign-in.",
                now,
                expect=S.LOGIN_STARTED,
            )
            log.info("callback accepted", task_id=task_id, cpa=task.cpa)
            self._wake(task_id)
            return None

    # ------------------------------------------------------------------------------------ vertex

    async def upload_vertex(
        self, task_id: str, data: bytes, location: str | None, now: datetime
    ) -> Notice | None:
        """Validate a service-account key, `POST /vertex/import` it, then hand the task to verification."""
        async with self._lock(task_id):
            task = self.store.get_task(task_id, with_history=False)
            if (settled := _settled(task)) is not None:
                return settled
            if task.state is not S.OPENED or login_for_provider(task.provider).kind is not LoginKind.VERTEX:
                return _NOT_STARTED
            try:
                summary = check_service_account(data)
                where = check_location(location)
            except ServiceAccountRejected as exc:
                return Notice(str(exc), NextStep.FIX_FILE)
            refusal = await self._foreign_key(task, summary)
            if refusal is not None:
                self._audit(
                    task, "vertex-import", "refused before CPA: the key is for another credential", now
                )
                log.warning("vertex key for another credential refused", task_id=task_id, cpa=task.cpa)
                return refusal
            # LOGIN_STARTED is recorded before the upload: verification only accepts files written after
            # the latest login began (verify/context.py login_started), and a re-upload keeps the file name.
            self.store.apply_transition(
                task_id, S.LOGIN_STARTED, "uploading a new service-account key", now, expect=S.OPENED
            )
            if self.completion is not None:  # a same-project import overwrites the file, re-enabling it
                await self.completion.remember_old_file(task_id, now)
            try:
                result = await self._client(task).vertex_import(data, where)
            except CPAError as exc:
                self._audit(
                    task, "vertex-import", f"refused ({getattr(exc, 'status', type(exc).__name__)})", now
                )
                log.warning("CPA refused the Vertex key", task_id=task_id, error=str(exc))
                explanation = explain_vertex_answer(exc)
                self.store.apply_transition(
                    task_id, S.OPENED, explanation.sentence, now, expect=S.LOGIN_STARTED
                )
                return _notice(explanation)
            file_name = posixpath.basename(result.auth_file.replace("\\", "/"))
            self._audit(task, "vertex-import", f"saved {file_name}", now)
            vertex = {
                "project_id": result.project_id or summary.project_id,
                "email": result.email or summary.client_email,
                "location": result.location or where,
                "file_name": file_name,
            }
            self.store.apply_transition(
                task_id,
                S.VERIFYING,
                f"The proxy server saved {file_name}; testing it now.",
                now,
                expect=S.LOGIN_STARTED,
                new_auth_name=file_name,
                details={**task.details, "vertex": vertex},
            )
            log.info("vertex key imported", task_id=task_id, cpa=task.cpa)
        self._complete(task_id, now)
        return None

    async def _foreign_key(self, task: ReauthTask, key: ServiceAccountSummary) -> Notice | None:
        """Refuse a key that would not replace this task's credential (issue 11), before CPA sees it.

        CPA writes `vertex-<project>.json` and overwrites whatever holds that name (vertex_import.go), so a
        key for another project would replace, or be "found" as, another credential that existed before
        this login. The key's project must be the old credential's, and the file it lands in must be the
        old file itself or a name no other credential holds yet.
        """
        client = self._client(task)
        target = vertex_file_name(key.project_id)
        try:
            olds = await client.list_auth_files(name=task.auth_name)
            taken = [] if target == task.auth_name else await client.list_auth_files(name=target)
        except CPAError as exc:
            log.warning("could not read the old Vertex credential", task_id=task.id, error=str(exc))
            return _notice(explain_cpa_problem(exc))
        old = next((f for f in olds if f.auth_index == task.auth_index), None)
        sentence = project_mismatch(
            key, task.auth_name, old.project_id if old else None, old.email if old else None
        )
        if sentence is None and any(f.name == target for f in taken):
            sentence = (
                f"The proxy server already holds another credential for project {key.project_id} ({target}); "
                "uploading this key would replace that one, not this request's."
            )
        return None if sentence is None else Notice(sentence, NextStep.FIX_FILE)

    # ------------------------------------------------------------------------------------ polling

    async def poll_once(self, task_id: str, now: datetime) -> str:
        """Ask `get-auth-status` once and act on the answer. Returns a PollOutcome value."""
        async with self._lock(task_id):
            try:
                task = self.store.get_task(task_id, with_history=False)
            except Exception:  # a task deleted under us: nothing to poll
                return PollOutcome.IDLE
            session = self.store.get_login_session(task_id)
            if task.state not in POLLED_STATES or session is None or session.flow == LoginKind.VERTEX:
                return PollOutcome.IDLE
            device = session.flow == LoginKind.DEVICE
            try:
                status = await self._client(task).get_auth_status(session.oauth_state)
            except CPAError as exc:
                log.warning("get-auth-status failed", task_id=task_id, error=str(exc))
                if now > session.expires_at + POLL_GIVE_UP_AFTER:
                    return self._end(task, explain_cpa_problem(exc).sentence, now)
                return PollOutcome.WAITING
            if status.status == "wait":
                self._answered.add(task_id)
                if now > session.expires_at + POLL_GIVE_UP_AFTER:
                    with contextlib.suppress(CPAError):
                        await self._client(task).cancel_oauth_session(session.oauth_state)
                    return self._end(
                        task, explain_status_error("unknown or expired state", device=device).sentence, now
                    )
                return PollOutcome.WAITING
            if status.status == "ok":
                return self._completed(task, "The proxy server saved the new login; testing it now.", now)
            error = (status.error or "").strip()
            first_answer = task_id not in self._answered
            self._answered.add(task_id)
            if error.lower() == "unknown or expired state" and (
                task.state is S.CALLBACK_RECEIVED or first_answer
            ):
                # CPA forgets a completed state after 60 s (contract §4.2). Either it accepted our callback,
                # or this is the first answer since reauthd (re)started — the login may have finished
                # while nobody polled. Verification looks for a file written since the login began and
                # asks the operator if there is none; guessing "failed" could throw a good login away.
                return self._completed(
                    task,
                    "The proxy server no longer reports the finished sign-in; looking for the new login.",
                    now,
                )
            ended = explain_status_error(error, device=device).sentence
            log.info("login ended at CPA", task_id=task_id, error=ended)
            return self._end(task, ended, now)

    def _completed(self, task: ReauthTask, reason: str, now: datetime) -> str:
        self.store.delete_login_session(task.id)
        try:
            self.store.apply_transition(task.id, S.VERIFYING, reason, now, expect=POLLED_STATES)
        except IllegalTransition:
            return PollOutcome.IDLE
        log.info("login completed", task_id=task.id, cpa=task.cpa)
        self._complete(task.id, now)
        return PollOutcome.COMPLETED

    def _end(self, task: ReauthTask, sentence: str, now: datetime) -> str:
        self.store.delete_login_session(task.id)
        with contextlib.suppress(IllegalTransition):
            self.store.apply_transition(task.id, S.OPENED, sentence, now, expect=POLLED_STATES)
        return PollOutcome.ENDED

    def _complete(self, task_id: str, now: datetime) -> None:
        """Hand the task to the verify/retire runner without making the person's request wait for it."""
        if self.completion is None or self._closed:
            return
        runner = self.completion

        async def advance() -> None:
            try:
                await runner.advance(task_id, now)
            except Exception as exc:  # the runner's own failures must not kill the poller or the page
                log.error("completion runner failed", task_id=task_id, error_type=type(exc).__name__)

        job = asyncio.get_running_loop().create_task(advance(), name=f"reauthd-complete-{task_id}")
        self._background.add(job)
        job.add_done_callback(self._background.discard)

    # ---- the poll loop: one asyncio task per login in flight, woken early after a callback is accepted

    def _watch(self, task_id: str) -> None:
        if self._closed:
            return
        running = self._pollers.get(task_id)
        if running is not None and not running.done():
            self._wake(task_id)
            return
        self._wakeups[task_id] = asyncio.Event()
        self._pollers[task_id] = asyncio.get_running_loop().create_task(
            self._poll_loop(task_id), name=f"reauthd-login-poll-{task_id}"
        )

    def _wake(self, task_id: str) -> None:
        event = self._wakeups.get(task_id)
        if event is not None:
            event.set()
        else:
            self._watch(task_id)

    async def _poll_loop(self, task_id: str) -> None:
        wakeup = self._wakeups[task_id]
        try:
            while not self._closed:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_interval_s):  # not wait_for: gh-86296
                        await wakeup.wait()
                wakeup.clear()
                try:
                    outcome = await self.poll_once(task_id, self.clock())
                except Exception as exc:  # keep polling through a store hiccup; never leak the state
                    log.error("login poll failed", task_id=task_id, error_type=type(exc).__name__)
                    continue
                if outcome != PollOutcome.WAITING:
                    return
        finally:
            if self._pollers.get(task_id) is asyncio.current_task():
                del self._pollers[task_id]
                self._wakeups.pop(task_id, None)

    def polling(self, task_id: str) -> bool:
        running = self._pollers.get(task_id)
        return running is not None and not running.done()

    async def resume(self) -> int:
        """After a restart: poll again every login the store says is in flight. Returns how many."""
        count = 0
        for task in self.store.list_tasks(POLLED_STATES):
            if self.store.get_login_session(task.id) is not None:
                self._watch(task.id)
                count += 1
        return count

    async def aclose(self) -> None:
        self._closed = True
        jobs = [*self._pollers.values(), *self._background]
        for job in jobs:
            job.cancel()
        for job in jobs:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await job
        self._pollers.clear()
        self._wakeups.clear()
