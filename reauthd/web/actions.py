"""What an operator can do from the operator view, without a shell: a fresh recipient link, the message
again, cancel, start again with a new task and link, and a task for any credential (`reauthd reauth`).

Each action goes through the task service (the same code as `reauthd tasks cancel` and `reauthd reauth`)
and leaves one audit entry (`operator: …`) next to the changes reauthd made in CPA. The web layer
(`reauthd.web.operator`) checks the session and CSRF before calling any of these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import structlog

from reauthd.core.model import ReauthTask, TaskState
from reauthd.core.tasks import AWAITING_PERSON, IllegalTransition
from reauthd.cpa.errors import CPAError
from reauthd.cpa.models import AuthFile
from reauthd.store import TaskNotFound
from reauthd.tasks.service import TaskService

log = structlog.get_logger(__name__)

S = TaskState
#: Cancelling is refused here: the old credential is being changed in CPA and the runner must finish.
UNCANCELLABLE = frozenset({S.RETIRING})


class OperatorCPA(Protocol):
    """The two calls of reauthd.cpa.CPAClient the actions use."""

    async def list_auth_files(self, *, name: str | None = None) -> list[AuthFile]: ...

    async def cancel_oauth_session(self, state: str) -> bool: ...


class ActionRefused(Exception):
    """The action could not be done; the message is one sentence for the operator (nothing was changed)."""


@dataclass(frozen=True, slots=True)
class ActionResult:
    headline: str
    sentence: str
    task_id: str
    link: str | None = None  # a fresh recipient link to copy (shown once, never logged)


def can_cancel(task: ReauthTask) -> bool:
    return not task.state.terminal and task.state not in UNCANCELLABLE


def can_resend(task: ReauthTask) -> bool:
    return task.state in AWAITING_PERSON


def can_link(task: ReauthTask) -> bool:
    return not task.state.terminal


def can_start_again(task: ReauthTask) -> bool:
    return task.state not in UNCANCELLABLE


class OperatorActions:
    def __init__(self, tasks: TaskService, clients: Mapping[str, OperatorCPA]) -> None:
        self.tasks = tasks
        self.store = tasks.store
        self.clients = clients

    @property
    def cpa_names(self) -> list[str]:
        return sorted(self.clients)

    # ------------------------------------------------------------------------------------ helpers

    def _task(self, task_id: str) -> ReauthTask:
        try:
            return self.store.get_task(task_id, with_history=False)
        except TaskNotFound:
            raise ActionRefused(f"There is no task {task_id}.") from None

    def _audit(self, task: ReauthTask, action: str, outcome: str, now: datetime) -> None:
        self.store.record_audit(
            task_id=task.id,
            cpa=task.cpa,
            action=f"operator: {action}",
            target_name=task.auth_name,
            target_auth_index=task.auth_index,
            outcome=outcome,
            at=now,
        )
        log.info("operator.action", action=action, task_id=task.id, outcome=outcome)

    async def _cancel_pending_login(self, task: ReauthTask, now: datetime) -> str:
        """Best effort: end the task's pending sign-in at CPA first, so an approval after the cancel does not
        make CPA save a file nothing verifies (as `reauthd tasks cancel` does)."""
        session = self.store.get_login_session(task.id)
        client = self.clients.get(task.cpa)
        if session is None or task.state is not S.LOGIN_STARTED or client is None or not session.oauth_state:
            return ""
        try:
            cancelled = await client.cancel_oauth_session(session.oauth_state)
        except CPAError as exc:
            return f" CPA could not cancel the pending sign-in ({exc}); it lapses by itself."
        self._audit(task, "oauth-session cancel", "cancelled" if cancelled else "was no longer pending", now)
        return " Its pending sign-in at CPA was cancelled too." if cancelled else ""

    async def _cancel(self, task: ReauthTask, now: datetime, reason: str) -> str:
        if not can_cancel(task):
            raise ActionRefused(
                f"Task {task.id} is {task.state.value}: it cannot be cancelled now; nothing was changed."
            )
        note = await self._cancel_pending_login(task, now)
        try:
            self.tasks.cancel(task.id, now, reason)
        except IllegalTransition as exc:
            raise ActionRefused(f"{exc}; nothing was changed.") from None
        return note

    # ------------------------------------------------------------------------------------ actions

    async def link(self, task_id: str, now: datetime) -> ActionResult:
        task = self._task(task_id)
        if not can_link(task):
            raise ActionRefused(
                f"Task {task.id} has ended ({task.state.value}); start it again for a new link."
            )
        link = self.tasks.link_for(task.id, now)
        self._audit(task, "new recipient link", "issued", now)
        return ActionResult(
            "A fresh link for the recipient",
            "Copy it and send it to the person. Earlier links keep working until the task ends.",
            task.id,
            link,
        )

    async def resend(self, task_id: str, now: datetime) -> ActionResult:
        task = self._task(task_id)
        if not can_resend(task):
            raise ActionRefused(
                f"Task {task.id} is {task.state.value}: the person is past the message, nothing to resend."
            )
        queued = self.tasks.resend(task.id, now)
        if not queued:
            raise ActionRefused(
                "No notification channel hears about this task ([notify] urls or routes); copy the link instead."
            )
        self._audit(task, "resend message", f"{queued} message(s) queued", now)
        return ActionResult(
            "Message queued",
            f"{queued} message(s) with a fresh link go out on the next tick (within seconds).",
            task.id,
        )

    async def cancel(self, task_id: str, now: datetime) -> ActionResult:
        task = self._task(task_id)
        note = await self._cancel(task, now, "cancelled by an operator (operator view)")
        self._audit(task, "cancel", "cancelled", now)
        return ActionResult(
            "Task cancelled", f"Task {task.id} is cancelled; its links stop working.{note}", task.id
        )

    async def start_again(self, task_id: str, now: datetime) -> ActionResult:
        """A new task for the same credential, with a new link; the old task is cancelled if still open."""
        task = self._task(task_id)
        if not can_start_again(task):
            raise ActionRefused(
                f"Task {task.id} is {task.state.value}: wait until it ends, then start it again."
            )
        note = ""
        if not task.state.terminal:
            note = await self._cancel(task, now, "an operator started this request again")
        new, created = self.tasks.raise_manual(
            task.cpa,
            task.auth_name,
            f"an operator started the request again (after task {task.id})",
            now,
            auth_index=task.auth_index,
            provider=task.provider,
            account_masked=task.account_masked,
        )
        link = self.tasks.link_for(new.id, now)
        self._audit(task, "start again", f"replaced by task {new.id}", now)
        if created:
            self._audit(new, "start again", f"raised after task {task.id}", now)
        sentence = (
            f"Task {new.id} replaces task {task.id}; the person gets a message with the new link, or copy it."
            if created
            else f"Task {new.id} was already open for this credential; here is a fresh link for it."
        )
        return ActionResult("Started again", sentence + note, new.id, link)

    async def raise_task(self, cpa: str, auth_name: str, reason: str, now: datetime) -> ActionResult:
        """`reauthd reauth` from the operator view: look the file up in CPA, then raise (or find) its task."""
        auth_name = auth_name.strip()
        client = self.clients.get(cpa)
        if client is None:
            raise ActionRefused("There is no CPA with that name in the configuration.")
        if not auth_name or len(auth_name) > 255 or "/" in auth_name:
            raise ActionRefused("Give the auth file name as CPA lists it, e.g. codex-alice@example.com.json.")
        try:
            files = await client.list_auth_files(name=auth_name)
        except CPAError as exc:
            raise ActionRefused(f"Cannot look up {auth_name} in CPA {cpa}: {exc}") from None
        found = next((f for f in files if f.name == auth_name), None)
        if found is None:
            raise ActionRefused(f"CPA {cpa} has no auth file named {auth_name}.")
        task, created = self.tasks.raise_manual(
            cpa,
            auth_name,
            reason.strip()[:300] or "an operator asked for a new login (operator view)",
            now,
            auth_index=found.auth_index,
            provider=found.provider,
            account=found.account_email or None,
        )
        link = self.tasks.link_for(task.id, now)
        if created:
            self._audit(task, "raise task", "raised", now)
            return ActionResult(
                "Task raised",
                f"Task {task.id} for {auth_name}: the person gets a message with this link, or copy it.",
                task.id,
                link,
            )
        return ActionResult(
            "Already open",
            f"{auth_name} already has an open task ({task.id}, {task.state.value}); here is a fresh link for it.",
            task.id,
            link,
        )
