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
from reauthd.core.tasks import IllegalTransition
from reauthd.cpa.client import CPAClient
from reauthd.cpa.errors import KeyProblem
from reauthd.detect.probes import ProbeTable
from reauthd.store.sqlite import Store
from reauthd.verify.checking import VerifyPhase
from reauthd.verify.context import ACTIVE_STATES, CompletionConfig, Next, S, Sleep, attempt_key, login_started
from reauthd.verify.finding import FindPhase
from reauthd.verify.flow import (
    DETAILS_KEY,
    Flow,
    Phase,
)
from reauthd.verify.public_api import PublicAPI
from reauthd.verify.retiring import RetirePhase

__all__ = ["CompletionConfig", "CompletionRunner"]

log = structlog.get_logger(__name__)


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
