"""The resumable verify-and-retire executor: find the new credential, test it, then retire the old one.

`CompletionRunner.advance(task_id, now)` is called by the daemon on every tick for tasks in `verifying` or
`retiring`, and by the login page right after CPA said the login is done. Each call continues from the
progress persisted in the task (`verify/flow.py`) and returns when it has to wait for CPA or a person.

Make before break: the old file is touched only after a successful test request of the new credential is
recorded in the store. Every side effect is written as intent before and as result after (with CPA's
answer in the audit trail), so a crash anywhere resumes correctly; every step is idempotent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import structlog

from reauthd.config import Settings
from reauthd.core.model import ReauthTask
from reauthd.core.retire import RetireStep
from reauthd.core.tasks import IllegalTransition
from reauthd.cpa.client import CPAClient
from reauthd.cpa.errors import CPAError, KeyProblem
from reauthd.detect.probes import ProbeTable
from reauthd.store.sqlite import Store
from reauthd.verify.checking import VerifyPhase
from reauthd.verify.context import ACTIVE_STATES, CompletionConfig, Next, S, Sleep, attempt_key, login_started
from reauthd.verify.finding import FindPhase
from reauthd.verify.flow import (
    DETAILS_KEY,
    Flow,
    Phase,
    StepState,
)
from reauthd.verify.public_api import PublicAPI
from reauthd.verify.retiring import RetirePhase

__all__ = ["CompletionConfig", "CompletionRunner"]

log = structlog.get_logger(__name__)

#: Looking at the old file when a login is minted must not keep the person waiting for their link long.
REMEMBER_TIMEOUT_S = 5.0


class CompletionRunner:
    """Verify the new credential and retire the old one, for tasks in `verifying` / `retiring`."""

    def __init__(
        self,
        store: Store,
        clients: Mapping[str, CPAClient],
        *,
        config: CompletionConfig | None = None,
        probes: ProbeTable | None = None,
        public_apis: Mapping[str, PublicAPI] | None = None,
        verify_models: Mapping[str, Mapping[str, str]] | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.store = store
        self.clients = dict(clients)
        self.config = config or CompletionConfig()
        self.probes = probes or ProbeTable()
        self.public_apis = dict(public_apis or {})
        # Per CPA: provider -> model (config `[[cpa]] verify_models`); falls back to config.verify_models.
        self.verify_models = {k: dict(v) for k, v in (verify_models or {}).items()}
        self.sleep = sleep
        self._locks: dict[str, asyncio.Lock] = {}

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        store: Store,
        clients: Mapping[str, CPAClient],
        *,
        public_apis: Mapping[str, PublicAPI] | None = None,
        **overrides: Any,
    ) -> CompletionRunner:
        """Build from the configuration: policy, probes, per-CPA verify models and proxy API keys."""
        apis = dict(public_apis or {})
        if public_apis is None:
            for cpa in settings.cpa:
                if cpa.proxy_api_key is not None:
                    apis[cpa.name] = PublicAPI(cpa.base_url, cpa.proxy_api_key, timeout=cpa.timeout_s)
        config = CompletionConfig(policy=settings.retire.policy, **overrides)
        return cls(
            store,
            clients,
            config=config,
            probes=ProbeTable(settings.detect.probes),
            public_apis=apis,
            verify_models={cpa.name: cpa.verify_models for cpa in settings.cpa},
        )

    async def aclose(self) -> None:
        for api in self.public_apis.values():
            await api.aclose()

    def _lock(self, task_id: str) -> asyncio.Lock:
        lock = self._locks.get(task_id)
        if lock is None:
            lock = self._locks[task_id] = asyncio.Lock()
        return lock

    # ------------------------------------------------------------------------------------- entry point

    async def advance(self, task_id: str, now: datetime, *, wait: bool = False) -> ReauthTask:
        """Continue the task from its persisted progress; return it as it stands afterwards.

        Without `wait` (the default: the daemon's 2-second tick, the login page's hand-over) each step looks
        once and returns when it would have to wait, so a tick never blocks on one task. With `wait` the
        call polls CPA's listing for up to `find_inline_budget_s` while the new file is not registered
        yet and makes up to `verify_inline_attempts` test requests (the CLI, tests). Never raises for what CPA does: errors are recorded and retried
        on a later call. A refused management key (KeyProblem) is recorded and left to the key gate.
        """
        async with self._lock(task_id):
            loop = asyncio.get_running_loop()
            started = loop.time()

            def clock() -> datetime:
                return now + timedelta(seconds=loop.time() - started)

            task = self.store.get_task(task_id)
            if task.state not in ACTIVE_STATES:
                return task
            client = self.clients.get(task.cpa)
            if client is None:
                self._to_operator(task, None, f"reauthd has no configured CPA named {task.cpa!r}", now)
                return self.store.get_task(task_id)
            flow = self._load_flow(task, now)
            run = _Run(self, task, flow, client, clock, wait=wait)
            try:
                await run.drive()
            except KeyProblem as exc:
                flow.last_error = exc.sentence
                run.save()
                log.warning("verify.key_problem", task_id=task_id, cpa=task.cpa, error=exc.sentence)
            return self.store.get_task(task_id)

    async def advance_all(self, now: datetime) -> list[ReauthTask]:
        """One pass over every task in `verifying` or `retiring` (the daemon calls this on each tick)."""
        return [await self.advance(task.id, now) for task in self.store.list_tasks(ACTIVE_STATES)]

    # --------------------------------------------------------------------- before the login: the old file

    async def remember_old_file(self, task_id: str, now: datetime) -> None:
        """Record whether a person had disabled the old file, before a login can change that.

        A re-login to the same file name makes CPA write `disabled: false` (FileTokenStore.Save, contract
        §4.4), and by the time verification starts CPA's watcher has usually reloaded the file (it reloads
        about a second after the save; reauthd polls get-auth-status every 2.5 s), so the person's choice
        would be lost. The login flow calls this when it mints a login (or before a Vertex import); the
        verification's first listing looks again (verify/finding.py). Best effort: if CPA does not answer
        in time, nothing is recorded and the login goes ahead.
        """
        async with self._lock(task_id):
            task = self.store.get_task(task_id, with_history=False)
            client = self.clients.get(task.cpa)
            if client is None or task.state.terminal:
                return
            try:
                async with asyncio.timeout(REMEMBER_TIMEOUT_S):
                    files = await client.list_auth_files(name=task.auth_name)
            except (CPAError, TimeoutError) as exc:
                reason = exc.sentence if isinstance(exc, CPAError) else "CPA did not answer in time"
                log.warning("verify.old_file_not_read", task_id=task_id, cpa=task.cpa, error=reason)
                return
            entry = next(
                (f for f in files if f.name == task.auth_name and f.auth_index == task.auth_index), None
            )
            if entry is None:
                return  # gone (or another file under that name): no login can re-enable it
            by_person = entry.disabled and not self.left_disabled_by_reauthd(task)
            if by_person != task.disabled_by_person:
                self.store.update_task_fields(task_id, now, disabled_by_person=by_person)
                log.info("verify.old_file_disabled", task_id=task_id, by_person=by_person)

    def left_disabled_by_reauthd(self, task: ReauthTask) -> bool:
        """Did reauthd itself disable this very file and leave it so (retire policy "disable")? Then its
        `disabled` flag is not a person's choice. The latest run that disabled it decides: if that run
        also deleted it, whatever is under the name now is a later file, and its flag is not ours."""
        latest: tuple[datetime, dict[str, Any]] | None = None
        key = (task.cpa, task.auth_name, task.auth_index)
        for other in self.store.list_tasks():
            raw = other.details.get(DETAILS_KEY)
            if (other.cpa, other.auth_name, other.auth_index) != key or not isinstance(raw, dict):
                continue
            if raw.get("we_disabled") and (latest is None or other.updated_at > latest[0]):
                latest = (other.updated_at, raw)
        if latest is None:
            return False
        steps = latest[1].get("steps") or {}
        return bool(steps.get(RetireStep.DELETE_OLD.value) != StepState.DONE.value)

    # ------------------------------------------------------------------------------------- the record

    def _load_flow(self, task: ReauthTask, now: datetime) -> Flow:
        attempt = attempt_key(task)
        raw = task.details.get(DETAILS_KEY)
        if isinstance(raw, dict) and raw.get("attempt") == attempt:
            try:
                flow = Flow.from_json(raw)
            except (KeyError, ValueError, TypeError):
                log.warning("verify.flow_unreadable", task_id=task.id)
            else:
                if task.state is S.RETIRING and flow.phase is Phase.FINISHED:
                    # An operator sent a task that had stopped while retiring back to `retiring`: carry on
                    # from the recorded steps (retire() still refuses if no successful test is recorded).
                    flow.phase = Phase.RETIRE
                    flow.retire_errors = 0
                    flow.retire_after = None
                return flow
        since = login_started(task) - self.config.clock_skew
        return Flow(attempt=attempt, since=since, started=now, expected_name=task.new_auth_name)

    def _to_operator(self, task: ReauthTask, flow: Flow | None, reason: str, now: datetime) -> None:
        fields: dict[str, Any] = {}
        if flow is not None:
            flow.phase = Phase.FINISHED
            fields["details"] = self.details_with(task.id, flow)
        try:
            self.store.apply_transition(
                task.id, S.AWAITING_OPERATOR, reason, now, expect=ACTIVE_STATES, **fields
            )
        except IllegalTransition:
            log.info("verify.transition_lost", task_id=task.id, to="awaiting_operator")

    def details_with(self, task_id: str, flow: Flow) -> dict[str, Any]:
        current = self.store.get_task(task_id, with_history=False).details
        return {**current, DETAILS_KEY: flow.to_json()}


class _Run(FindPhase, VerifyPhase, RetirePhase):
    """One advance() of one task: the phases in order until one has to wait."""

    async def drive(self) -> None:
        while True:
            phase = self.flow.phase
            if phase is Phase.FIND:
                step = await self.find()
            elif phase is Phase.VERIFY:
                step = await self.verify()
            elif phase is Phase.RETIRE:
                step = await self.retire()
            else:
                return
            if step is not Next.CONTINUE:
                return
