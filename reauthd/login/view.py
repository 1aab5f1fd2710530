"""What the recipient page shows for a task at a moment: the phase, the words, the countdown, the progress.

Pure: a function of the task, its login session and `now`. The HTML page and the JSON status endpoint both
render this, so a refresh without JavaScript and the live updates always agree. Nothing here is secret:
the OAuth state and the sign-in URL stay out of the view (the page links to them through a redirect).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from reauthd.core.model import ReauthTask, TaskState
from reauthd.core.retire import RetireStep
from reauthd.login.providers import LoginKind, UnsupportedProvider, login_for_provider
from reauthd.login.timing import format_countdown, seconds_left, window_lapsed
from reauthd.store.records import LoginSession
from reauthd.verify.flow import DETAILS_KEY

S = TaskState


class Phase(StrEnum):
    LANDING = "landing"  # nobody pressed Start yet: what will happen, one button
    READY = "ready"  # opened, no login running (first time, or after one ended): Start login (again)
    VERTEX_FORM = "vertex_form"
    CALLBACK = "callback"  # provider link + paste form
    DEVICE = "device"  # verification link + user code + countdown
    PROGRESS = "progress"  # callback accepted / verifying / retiring
    OPERATOR = "operator"  # waiting for an operator's decision
    DONE = "done"
    FAILED = "failed"  # failed, expired or cancelled


class StepStatus(StrEnum):
    DONE = "done"
    CURRENT = "current"
    PENDING = "pending"
    SKIPPED = "skipped"  # did not happen and was not needed (e.g. CPA overwrote the old login in place)


@dataclass(frozen=True, slots=True)
class ProgressStep:
    label: str
    status: StepStatus


@dataclass(frozen=True, slots=True)
class LoginView:
    phase: Phase
    state: TaskState
    provider_name: str
    headline: str
    detail: str
    seconds_left: int | None = None
    countdown: str | None = None
    lapsed: bool = False
    user_code: str | None = None
    steps: tuple[ProgressStep, ...] = ()

    @property
    def terminal(self) -> bool:
        return self.state.terminal

    def to_json(self) -> dict[str, Any]:
        """The status endpoint's body. No secrets: no state, no URL, no token."""
        return {
            "phase": self.phase.value,
            "state": self.state.value,
            "headline": self.headline,
            "detail": self.detail,
            "seconds_left": self.seconds_left,
            "countdown": self.countdown,
            "lapsed": self.lapsed,
            "terminal": self.terminal,
            "steps": [{"label": s.label, "status": s.status.value} for s in self.steps],
        }


_STEP_LABELS = ("Sign-in received", "Testing the new login", "Removing the old login", "Done")
_VERTEX_STEP_LABELS = ("Key received", *_STEP_LABELS[1:])
_STEP_INDEX = {S.CALLBACK_RECEIVED: 0, S.VERIFYING: 1, S.RETIRING: 2, S.DONE: 4}


_REMOVE_STEP = 2
_SKIPPED_SUFFIX = " — not needed"

#: What the recipient reads while reauthd works, per state. Plain and fixed: the recorded reasons name files
#: and CPA's answers, which belong to the operator view and the audit trail.
_PROGRESS_DETAIL = {
    S.CALLBACK_RECEIVED: "The proxy server accepted the sign-in. reauthd is now looking for the new login.",
    S.VERIFYING: "reauthd is testing the new login with one small request.",
    S.RETIRING: "The new login works. reauthd is now removing the old one.",
}
DONE_DETAIL = "The account works again. You can close this page."


def old_login_removed(task: ReauthTask) -> bool:
    """Whether the verify run took the old credential out of use (disabled or deleted it). False when CPA
    overwrote it in place (same file name: nothing to remove) or the policy keeps it."""
    completion = task.details.get(DETAILS_KEY) if isinstance(task.details, dict) else None
    steps = completion.get("steps") if isinstance(completion, dict) else None
    if not isinstance(steps, dict):
        return False
    return any(steps.get(step.value) == "done" for step in (RetireStep.DISABLE_OLD, RetireStep.DELETE_OLD))


def progress_steps(
    state: TaskState, *, vertex: bool = False, removed: bool = True
) -> tuple[ProgressStep, ...]:
    """The progress list. `removed` (for `done`): False shows "Removing the old login" as skipped."""
    current = _STEP_INDEX.get(state)
    if current is None:
        return ()
    labels = _VERTEX_STEP_LABELS if vertex else _STEP_LABELS
    steps: list[ProgressStep] = []
    for i, label in enumerate(labels):
        if i == _REMOVE_STEP and i < current and not removed:
            steps.append(ProgressStep(label + _SKIPPED_SUFFIX, StepStatus.SKIPPED))
            continue
        status = (
            StepStatus.DONE if i < current else StepStatus.CURRENT if i == current else StepStatus.PENDING
        )
        steps.append(ProgressStep(label, status))
    return tuple(steps)


def latest_reason(task: ReauthTask) -> str:
    """The reason recorded with the task's latest state change (the history is sanitised by the store)."""
    return task.history[-1].reason if task.history else task.reason


#: An auth file's name inside a recorded reason ("codex-a***@example.com-plus.json", "vertex-p.json").
_AUTH_FILE = re.compile(r"[\w.@*+~-]+\.json\b")
#: How `verify.checking.VerifyPhase.refused` starts the reason it records.
REFUSED_REASON_HEAD = "The new login ("
_REFUSED_FOR_RECIPIENT = (
    "The new login did not work when reauthd tested it, so the old one was left as it was. "
    "Please sign in again."
)
_OPERATOR_FOR_RECIPIENT = "The operator has to look at this before reauthd can go on; they have the details."


def recipient_reason(task: ReauthTask) -> str:
    """The latest reason as the person on the page reads it (issue 13): the recorded reasons name auth files
    and CPA's answers, which belong to the operator view and the audit trail. A refused test and a wait for
    the operator get a fixed sentence; a login with another account says so, naming the account this
    request is for; anything else keeps its words with file names left out."""
    reason = latest_reason(task)
    last = task.history[-1] if task.history else None
    if (
        task.state is S.OPENED
        and last is not None
        and last.from_state is S.VERIFYING
        and reason.startswith(REFUSED_REASON_HEAD)
    ):
        return _REFUSED_FOR_RECIPIENT
    if task.state is S.AWAITING_OPERATOR:
        if reason.startswith("The sign-in used a different account"):
            return (
                f"The sign-in used a different account than this request ({task.account_masked}), so it "
                "cannot replace this login. The operator has been told. Sign in again with that account "
                "when the operator asks you to."
            )
        return _OPERATOR_FOR_RECIPIENT
    return _AUTH_FILE.sub("the login file", reason)


def provider_display_name(provider: str) -> str:
    try:
        return login_for_provider(provider).display_name
    except UnsupportedProvider:
        return provider


def describe(task: ReauthTask, session: LoginSession | None, now: datetime) -> LoginView:
    """The page for `task` at `now`."""
    name = provider_display_name(task.provider)
    state = task.state
    try:
        vertex = login_for_provider(task.provider).kind is LoginKind.VERTEX
    except UnsupportedProvider:
        vertex = False
    if state in (S.OPEN, S.NOTIFIED):
        return LoginView(
            Phase.LANDING,
            state,
            name,
            f"Sign in to {name} again",
            "The proxy server can no longer use this account. Press “Start login” to sign in again; "
            "reauthd then tests the new login before it removes the old one.",
        )
    if state is S.OPENED:
        # Back in `opened` after a login, an upload or a verification that did not work: say why.
        ended = bool(task.history) and task.history[-1].from_state not in (None, S.OPEN, S.NOTIFIED)
        if vertex:
            instruction = (
                "Create a new JSON key for the service account in Google Cloud, then upload it here."
            )
            return LoginView(
                Phase.VERTEX_FORM,
                state,
                name,
                "Upload a new service-account key",
                f"{recipient_reason(task)} {instruction}" if ended else instruction,
            )
        return LoginView(
            Phase.READY,
            state,
            name,
            "Start the sign-in again" if ended else f"Sign in to {name} again",
            recipient_reason(task) if ended else "Press “Start login” to get a fresh sign-in link.",
        )
    if state is S.LOGIN_STARTED and session is not None:
        left = seconds_left(session.expires_at, now)
        lapsed = window_lapsed(session.expires_at, now)
        if session.flow == LoginKind.DEVICE:
            return LoginView(
                Phase.DEVICE,
                state,
                name,
                "Expired: start again" if lapsed else f"Enter the code at {name}",
                "The code has expired. Start again for a new one."
                if lapsed
                else "Open the verification page, enter the code below and approve. This page follows along."
                if session.user_code
                else "Open the verification page and approve the sign-in there. This page follows along.",
                left,
                format_countdown(left),
                lapsed,
                session.user_code,
            )
        return LoginView(
            Phase.CALLBACK,
            state,
            name,
            "This sign-in link has expired" if lapsed else f"Sign in to {name}",
            "The sign-in took longer than the proxy server allows (5 minutes). Start again for a fresh link."
            if lapsed
            else "Open the sign-in link, sign in, then copy the address your browser lands on and paste it below.",
            left,
            format_countdown(left),
            lapsed,
        )
    if state is S.LOGIN_STARTED:  # a login without its session row: only "start again" helps
        return LoginView(Phase.READY, state, name, "Start the sign-in again", recipient_reason(task))
    if state in (S.CALLBACK_RECEIVED, S.VERIFYING, S.RETIRING):
        headline = {
            S.CALLBACK_RECEIVED: "Sign-in received",
            S.VERIFYING: "Testing the new login",
            S.RETIRING: "Removing the old login",
        }[state]
        return LoginView(
            Phase.PROGRESS,
            state,
            name,
            headline,
            _PROGRESS_DETAIL[state],
            steps=progress_steps(state, vertex=vertex),
        )
    if state is S.AWAITING_OPERATOR:
        return LoginView(
            Phase.OPERATOR,
            state,
            name,
            "Waiting for the operator",
            f"{recipient_reason(task)} Nothing more is needed from you right now.",
        )
    if state is S.DONE:
        return LoginView(
            Phase.DONE,
            state,
            name,
            "All done — thank you",
            DONE_DETAIL,
            steps=progress_steps(state, vertex=vertex, removed=old_login_removed(task)),
        )
    headline = {
        S.FAILED: "This did not work",
        S.EXPIRED: "This request has expired",
        S.CANCELLED: "This request was cancelled",
    }.get(state, "Closed")
    return LoginView(Phase.FAILED, state, name, headline, recipient_reason(task))
