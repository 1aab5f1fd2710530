"""What the login flow needs from its neighbours: the task store, a CPA client, the completion runner.

Small Protocols rather than imports of concrete classes: `reauthd.store.Store`, `reauthd.cpa.CPAClient`
and the verify package's runner satisfy them structurally, and the flow stays testable in isolation.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol

from reauthd.core.model import ReauthTask, TaskState
from reauthd.cpa.models import AuthFile, AuthStatus, AuthURL, VertexImportResult
from reauthd.store.records import AuditEntry, LoginSession


class LoginStore(Protocol):
    """The part of reauthd.store.Store the login flow uses."""

    def get_task(self, task_id: str, *, with_history: bool = True) -> ReauthTask: ...

    def list_tasks(
        self, states: Iterable[TaskState] | None = None, *, with_history: bool = False
    ) -> list[ReauthTask]: ...

    def apply_transition(
        self,
        task_id: str,
        to: TaskState,
        reason: str,
        now: datetime,
        *,
        expect: TaskState | Iterable[TaskState] | None = None,
        **fields: Any,
    ) -> ReauthTask: ...

    def update_task_fields(self, task_id: str, now: datetime, **fields: Any) -> ReauthTask: ...

    def save_login_session(self, session: LoginSession, now: datetime) -> None: ...

    def get_login_session(self, task_id: str) -> LoginSession | None: ...

    def delete_login_session(self, task_id: str) -> None: ...

    def record_audit(
        self,
        *,
        task_id: str | None,
        cpa: str,
        action: str,
        target_name: str,
        target_auth_index: str,
        outcome: str,
        at: datetime,
    ) -> int: ...

    def audit_for(self, task_id: str | None = None, *, limit: int = 1000) -> list[AuditEntry]: ...


class LoginCPA(Protocol):
    """The OAuth and Vertex calls of reauthd.cpa.CPAClient (contract §4, §6)."""

    name: str

    async def auth_url(self, provider: str, *, is_webui: bool = False) -> AuthURL: ...

    async def get_auth_status(self, state: str) -> AuthStatus: ...

    async def cancel_oauth_session(self, state: str) -> bool: ...

    async def post_oauth_callback(self, redirect_url: str, *, provider: str | None = None) -> None: ...

    async def vertex_import(self, service_account_json: bytes, location: str) -> VertexImportResult: ...

    async def list_auth_files(
        self, *, name: str | None = None, auth_index: str | None = None
    ) -> list[AuthFile]: ...


class CompletionRunner(Protocol):
    """The verify/retire side (issue 6): called once CPA holds the new credential (task in `verifying`),
    and once when a login is minted, to look at the old file before a same-name re-login re-enables it."""

    async def advance(self, task_id: str, now: datetime) -> object: ...

    async def remember_old_file(self, task_id: str, now: datetime) -> None: ...
