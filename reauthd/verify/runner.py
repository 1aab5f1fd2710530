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
import hashlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

import structlog

from reauthd.config import Settings
from reauthd.core.identity import MatchKind, OldCredential, find_replacement
from reauthd.core.model import Credential, ReauthTask, TaskState
from reauthd.core.retire import (
    VERIFY_PREFIX_STEM,
    AuthFileUnreadable,
    OldProbe,
    RecheckKind,
    RetirePolicy,
    RetireStep,
    parse_auth_file,
    recheck_old,
    retire_plan,
    settings_to_copy,
)
from reauthd.core.tasks import IllegalTransition
from reauthd.cpa.client import CPAClient
from reauthd.cpa.errors import CPAError, CPARequestError, KeyProblem
from reauthd.detect.probes import NEVER_VIA_API_CALL, ProbeTable, probe
from reauthd.store.sqlite import Store
from reauthd.verify.flow import (
    DETAILS_KEY,
    Candidate,
    Flow,
    NewCredential,
    Phase,
    PublicCheck,
    PublicStage,
    StepState,
)
from reauthd.verify.outcome import CheckResult, judge_old_probe, judge_probe, judge_public_answer
from reauthd.verify.public_api import PublicAPI, PublicAPIUnreachable

log = structlog.get_logger(__name__)

S = TaskState
ACTIVE_STATES = frozenset({S.VERIFYING, S.RETIRING})
#: After this many refused verifications in a row the task fails instead of offering yet another login.
MAX_REFUSED_LOGINS = 3


@dataclass(frozen=True, slots=True)
class CompletionConfig:
    policy: RetirePolicy = "delete"
    # CPA's watcher registers a new file about a second after the login (contract §12); a listing that
    # still does not show it after this long means something else is wrong: ask the operator.
    find_timeout: timedelta = timedelta(minutes=3)
    # One advance() keeps polling the listing this long before handing back to the next tick.
    find_inline_budget_s: float = 10.0
    find_poll_interval_s: float = 1.0
    # Files written before the login started (minus this allowance for the clocks of CPA and reauthd
    # disagreeing) are not the new credential.
    clock_skew: timedelta = timedelta(seconds=30)
    verify_max_attempts: int = 4
    verify_inline_attempts: int = 2  # attempts within one advance() before waiting for the next tick
    verify_inline_delay_s: float = 2.0
    verify_retry_after: timedelta = timedelta(seconds=30)
    # The public API routes a fresh prefix only once CPA re-registered the auth: retry this often.
    not_routed_retries: int = 5
    not_routed_delay_s: float = 1.0
    # provider -> model for the public-API verification (`[[cpa]] verify_models`).
    verify_models: Mapping[str, str] = field(default_factory=dict)
    # Retire steps that keep failing (CPA down) are retried on every tick; after this many, a person looks.
    max_retire_errors: int = 50


class _Next(Enum):
    CONTINUE = "continue"  # the phase moved on: run the next one now
    WAIT = "wait"  # nothing more to do before the next tick
    STOP = "stop"  # the task left verifying/retiring


Sleep = Callable[[float], Awaitable[None]]


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
        self._sleep = sleep
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

    async def advance(self, task_id: str, now: datetime) -> ReauthTask:
        """Continue the task from its persisted progress; return it as it stands afterwards.

        Never raises for what CPA does: errors are recorded and retried on a later call. A refused
        management key (KeyProblem) is recorded and left to the key gate; nothing is retried here.
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
            run = _Run(self, task, flow, client, clock)
            try:
                await run.drive()
            except KeyProblem as exc:
                flow.last_error = exc.sentence
                run.save()
                log.warning("verify.key_problem", task_id=task_id, cpa=task.cpa, error=exc.sentence)
            return self.store.get_task(task_id)

    # ------------------------------------------------------------------------------------- the record

    def _load_flow(self, task: ReauthTask, now: datetime) -> Flow:
        attempt = _attempt_key(task)
        raw = task.details.get(DETAILS_KEY)
        if isinstance(raw, dict) and raw.get("attempt") == attempt:
            try:
                return Flow.from_json(raw)
            except (KeyError, ValueError, TypeError):
                log.warning("verify.flow_unreadable", task_id=task.id)
        since = _login_started(task) - self.config.clock_skew
        return Flow(attempt=attempt, since=since, started=now, expected_name=task.new_auth_name)

    def _to_operator(self, task: ReauthTask, flow: Flow | None, reason: str, now: datetime) -> None:
        fields: dict[str, Any] = {}
        if flow is not None:
            flow.phase = Phase.FINISHED
            fields["details"] = self._details(task.id, flow)
        try:
            self.store.apply_transition(
                task.id, S.AWAITING_OPERATOR, reason, now, expect=ACTIVE_STATES, **fields
            )
        except IllegalTransition:
            log.info("verify.transition_lost", task_id=task.id, to="awaiting_operator")

    def _details(self, task_id: str, flow: Flow) -> dict[str, Any]:
        current = self.store.get_task(task_id, with_history=False).details
        return {**current, DETAILS_KEY: flow.to_json()}


def _attempt_key(task: ReauthTask) -> str:
    """The login attempt this run belongs to: when the task last entered `verifying`."""
    for event in reversed(task.history):
        if event.to_state is S.VERIFYING:
            return event.at.isoformat()
    return task.created_at.isoformat()


def _login_started(task: ReauthTask) -> datetime:
    """When the person's latest login began: files older than that cannot be its result."""
    for event in reversed(task.history):
        if event.to_state is S.LOGIN_STARTED:
            return event.at
    return task.opened_at or task.created_at


def _fingerprint(entry: Credential) -> str:
    parts = (entry.status, entry.disabled, entry.modtime, entry.last_refresh)
    return "|".join("" if p is None else str(p) for p in parts)


def _modtime(entry: Credential | None) -> str | None:
    return entry.modtime.isoformat() if entry is not None and entry.modtime is not None else None


def _temporary_prefix(task_id: str, attempt: str) -> str:
    # Unique per task and login attempt, one path segment, recognisable (never copied as a setting).
    digest = hashlib.sha256(f"{task_id}|{attempt}".encode()).hexdigest()[:12]
    return f"{VERIFY_PREFIX_STEM}{digest}"


class _Run:
    """One advance() of one task: the phases, with the task, its flow record and its CPA client."""

    def __init__(
        self,
        runner: CompletionRunner,
        task: ReauthTask,
        flow: Flow,
        client: CPAClient,
        clock: Callable[[], datetime],
    ) -> None:
        self.runner = runner
        self.store = runner.store
        self.config = runner.config
        self.task = task
        self.flow = flow
        self.client = client
        self.clock = clock
        self.inline_started = clock()

    # ---------------------------------------------------------------------------------- plumbing

    def save(self, **fields: Any) -> None:
        """Persist the flow record (and any task fields) now: the step boundary a crash resumes from."""
        self.task = self.store.update_task_fields(
            self.task.id, self.clock(), details=self.runner._details(self.task.id, self.flow), **fields
        )

    def audit(self, action: str, target: NewCredential | OldCredential | Credential, outcome: str) -> None:
        self.store.record_audit(
            task_id=self.task.id,
            cpa=self.task.cpa,
            action=action,
            target_name=target.name,
            target_auth_index=target.auth_index,
            outcome=outcome,
            at=self.clock(),
        )

    def transition(self, to: TaskState, reason: str, **fields: Any) -> bool:
        self.flow.phase = Phase.FINISHED if to not in ACTIVE_STATES else self.flow.phase
        try:
            self.task = self.store.apply_transition(
                self.task.id,
                to,
                reason,
                self.clock(),
                expect=ACTIVE_STATES,
                details=self.runner._details(self.task.id, self.flow),
                **fields,
            )
        except IllegalTransition:
            # Someone else (an operator, a cancel) moved the task meanwhile: theirs wins.
            log.info("verify.transition_lost", task_id=self.task.id, to=to.value)
            return False
        return True

    def to_operator(self, reason: str) -> _Next:
        self.transition(S.AWAITING_OPERATOR, reason)
        log.info("verify.awaiting_operator", task_id=self.task.id, reason=reason)
        return _Next.STOP

    @property
    def old(self) -> OldCredential:
        return OldCredential(self.task.auth_name, self.task.auth_index, self.task.provider)

    def probe_available(self, provider: str) -> bool:
        return self.runner.probes.has_probe(provider) and provider.lower() not in NEVER_VIA_API_CALL

    def verify_model(self, provider: str) -> str | None:
        per_cpa = self.runner.verify_models.get(self.task.cpa, {})
        return per_cpa.get(provider) or self.config.verify_models.get(provider)

    async def list_all(self) -> list[Credential]:
        return [f.to_credential(self.task.cpa) for f in await self.client.list_auth_files()]

    async def entry(self, name: str) -> Credential | None:
        for f in await self.client.list_auth_files(name=name):
            if f.name == name:
                return f.to_credential(self.task.cpa)
        return None

    # ---------------------------------------------------------------------------------- driving

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
            if step is not _Next.CONTINUE:
                return

    # ---------------------------------------------------------------------------------- find

    async def find(self) -> _Next:
        while True:
            try:
                listing = await self.list_all()
            except KeyProblem:
                raise
            except CPAError as exc:
                self.flow.last_error = exc.sentence
                self.save()
                return _Next.WAIT
            now = self.clock()
            old = self._old_from(listing)
            result = find_replacement(old, listing, self.flow.since, expected_name=self.flow.expected_name)
            if result.credential is not None and result.kind is not MatchKind.AMBIGUOUS:
                unchanged = self._track_candidate(result.credential, now)
                result = find_replacement(
                    old,
                    listing,
                    self.flow.since,
                    expected_name=self.flow.expected_name,
                    unchanged_for=unchanged,
                )
            if result.kind is MatchKind.AMBIGUOUS:
                return self.to_operator(result.reason)
            if result.kind is MatchKind.FOUND and result.credential is not None:
                new = result.credential
                self.flow.new = NewCredential(new.name, new.auth_index, new.provider, result.same_name)
                if not result.same_name:
                    self.flow.old_modtime = _modtime(self._old_entry(listing))
                self.flow.phase = Phase.VERIFY
                self.flow.last_error = ""
                self.save(new_auth_name=new.name, new_auth_index=new.auth_index)
                log.info("verify.found", task_id=self.task.id, new=new.name, same_name=result.same_name)
                return _Next.CONTINUE
            if now - self.flow.started >= self.config.find_timeout:
                minutes = self.config.find_timeout.total_seconds() / 60
                return self.to_operator(
                    f"CPA did not show the new credential within {minutes:g} minutes of the login "
                    f"({result.reason}); nothing was changed"
                )
            self.flow.last_error = result.reason
            elapsed = (now - self.inline_started).total_seconds()
            if elapsed + self.config.find_poll_interval_s > self.config.find_inline_budget_s:
                self.save()
                return _Next.WAIT
            await self.runner._sleep(self.config.find_poll_interval_s)

    def _old_entry(self, listing: list[Credential]) -> Credential | None:
        for entry in listing:
            if entry.auth_index == self.task.auth_index and entry.name == self.task.auth_name:
                return entry
        return None

    def _old_from(self, listing: list[Credential]) -> OldCredential:
        # The listing still shows the old file when the login landed under a new name; its e-mail and
        # account id identify the account. Read fresh every time: reauthd does not store e-mails.
        entry = self._old_entry(listing)
        if entry is None:
            return self.old
        return OldCredential(entry.name, entry.auth_index, self.task.provider, entry.email, entry.account_id)

    def _track_candidate(self, entry: Credential, now: datetime) -> timedelta:
        fp = _fingerprint(entry)
        cand = self.flow.candidate
        if cand is None or (cand.name, cand.auth_index, cand.fingerprint) != (
            entry.name,
            entry.auth_index,
            fp,
        ):
            self.flow.candidate = Candidate(entry.name, entry.auth_index, fp, now)
            return timedelta(0)
        return now - cand.first_seen

    # ---------------------------------------------------------------------------------- verify

    async def verify(self) -> _Next:
        new = self.flow.new
        assert new is not None
        ver = self.flow.verification
        if self.flow.verified and (ver.public is None or ver.public.stage is PublicStage.RESTORED):
            self.flow.phase = Phase.RETIRE
            return _Next.CONTINUE
        if ver.result == "refused" and (ver.public is None or ver.public.stage is PublicStage.RESTORED):
            return self.refused(ver.detail)
        if ver.next_attempt_at is not None and self.clock() < ver.next_attempt_at:
            return _Next.WAIT
        if not ver.method:
            if self.probe_available(new.provider):
                ver.method = "probe"
            elif self.verify_model(new.provider) and self.task.cpa in self.runner.public_apis:
                ver.method = "public_api"
            else:
                return self.no_path(new)
        if ver.method == "probe":
            return await self.verify_by_probe(new)
        return await self.verify_by_public_api(new)

    def no_path(self, new: NewCredential) -> _Next:
        return self.to_operator(
            f"reauthd has no way to test {new.provider} credentials: there is no probe for it "
            f"([detect.probes]) and no proxy_api_key with verify_models.{new.provider} for CPA "
            f"{self.task.cpa!r}. {new.name} is saved but unverified; the old credential was not touched"
        )

    async def current_new(self, new: NewCredential) -> Credential | str:
        """The new credential's live entry, or a reason why it can no longer be tested."""
        entry = await self.entry(new.name)
        if entry is None or entry.auth_index != new.auth_index:
            return f"the new credential {new.name} disappeared from CPA before it could be tested"
        if entry.disabled:
            return f"the new credential {new.name} was disabled in CPA before it could be tested"
        return entry

    async def verify_by_probe(self, new: NewCredential) -> _Next:
        ver = self.flow.verification
        inline = 0
        while True:
            try:
                current = await self.current_new(new)
            except KeyProblem:
                raise
            except CPAError as exc:
                return self.retry_later(f"CPA did not answer: {exc.sentence}")
            if isinstance(current, str):
                return self.to_operator(current)
            evidence = await probe(
                self.client, current, self.clock(), table=self.runner.probes, check_expiry=False
            )
            judgement = judge_probe(evidence, new.provider)
            if judgement.result is CheckResult.NO_PATH:
                if self.verify_model(new.provider) and self.task.cpa in self.runner.public_apis:
                    ver.method = "public_api"
                    self.save()
                    return await self.verify_by_public_api(new)
                return self.no_path(new)
            ver.attempts += 1
            ver.detail = judgement.detail
            self.audit("verify-probe", new, f"test request with the new credential: {judgement.detail}")
            if judgement.result is CheckResult.OK:
                return self.verified()
            if judgement.result is CheckResult.REFUSED:
                ver.result = "refused"
                ver.at = self.clock()
                self.save(verification=f"refused: {judgement.detail}")
                return self.refused(judgement.detail)
            inline += 1
            if ver.attempts >= self.config.verify_max_attempts:
                return self.gave_up(judgement.detail)
            if inline >= self.config.verify_inline_attempts:
                return self.retry_later(judgement.detail)
            self.save()
            await self.runner._sleep(self.config.verify_inline_delay_s)

    def verified(self) -> _Next:
        ver = self.flow.verification
        ver.result = "ok"
        ver.at = self.clock()
        ver.next_attempt_at = None
        self.flow.last_error = ""
        # Persisted before anything is retired: this record is what makes retiring allowed.
        self.save(verification=f"the new credential answered a test request ({ver.detail})")
        log.info("verify.ok", task_id=self.task.id, method=ver.method)
        pub = ver.public
        if pub is not None and pub.stage is not PublicStage.RESTORED:
            return _Next.CONTINUE  # verify() restores the prefix before retiring
        self.flow.phase = Phase.RETIRE
        self.save()
        return _Next.CONTINUE

    def retry_later(self, detail: str) -> _Next:
        ver = self.flow.verification
        ver.next_attempt_at = self.clock() + self.config.verify_retry_after
        self.flow.last_error = detail
        self.save(verification=f"not verified yet: {detail}")
        return _Next.WAIT

    def gave_up(self, detail: str) -> _Next:
        new = self.flow.new
        name = new.name if new else "the new credential"
        return self.to_operator(
            f"could not test {name} after {self.flow.verification.attempts} attempts (last answer: {detail}); "
            "the old credential was not touched"
        )

    def refused(self, detail: str) -> _Next:
        """Verification failed: the old credential stays exactly as it was; the person may log in again."""
        new = self.flow.new
        name = new.name if new else "the new credential"
        refusals = int(self.task.details.get("refused_logins", 0)) + 1
        self.flow.phase = Phase.FINISHED
        reason = (
            f"The new login ({name}) did not work: {detail}. The old credential was left exactly as it was"
        )
        details = {**self.runner._details(self.task.id, self.flow), "refused_logins": refusals}
        to = S.OPENED if refusals < MAX_REFUSED_LOGINS else S.FAILED
        reason += "; please log in again" if to is S.OPENED else f"; {refusals} logins in a row were refused"
        try:
            self.task = self.store.apply_transition(
                self.task.id,
                to,
                reason,
                self.clock(),
                expect=ACTIVE_STATES,
                details=details,
                verification=f"refused: {detail}",
                new_auth_name=None,
                new_auth_index=None,
            )
        except IllegalTransition:
            log.info("verify.transition_lost", task_id=self.task.id, to=to.value)
        log.info("verify.refused", task_id=self.task.id, to=to.value)
        return _Next.STOP

    # ------------------------------------------------------------------------------ public API

    async def verify_by_public_api(self, new: NewCredential) -> _Next:
        ver = self.flow.verification
        api = self.runner.public_apis.get(self.task.cpa)
        model = self.verify_model(new.provider)
        if api is None or model is None:
            return self.no_path(new)
        if ver.public is None:
            try:
                current = await self.current_new(new)
                if isinstance(current, str):
                    return self.to_operator(current)
                meta = parse_auth_file(await self.client.download_auth_file(new.name))
            except KeyProblem:
                raise
            except (CPAError, AuthFileUnreadable) as exc:
                return self.retry_later(f"could not read {new.name}: {exc}")
            original = meta.get("prefix")
            if not isinstance(original, str) or original.strip().startswith(VERIFY_PREFIX_STEM):
                original = None
            ver.public = PublicCheck(_temporary_prefix(self.task.id, self.flow.attempt), original, model)
            self.save()
        pub = ver.public
        if pub.stage in (PublicStage.PLANNED, PublicStage.PREFIX_SENT):
            pub.stage = PublicStage.PREFIX_SENT
            self.save()
            try:
                await self.client.patch_fields(new.name, {"prefix": pub.prefix})
            except KeyProblem:
                raise
            except CPAError as exc:
                self.audit("patch-fields prefix (temporary)", new, f"failed: {exc.sentence}")
                return self.retry_later(f"could not set a temporary prefix: {exc.sentence}")
            self.audit("patch-fields prefix (temporary)", new, f"set {pub.prefix} to test the credential: ok")
            pub.stage = PublicStage.PREFIX_SET
            self.save()
        if pub.stage is PublicStage.PREFIX_SET and not ver.result:
            outcome = await self.public_request(api, new, pub)
            if outcome is not None:
                return outcome
        # A verdict exists (or we give up): put the prefix back before anything else.
        if pub.stage in (PublicStage.PREFIX_SET, PublicStage.RESTORE_SENT):
            pub.stage = PublicStage.RESTORE_SENT
            self.save()
            restore = pub.original_prefix if pub.original_prefix is not None else ""
            try:
                await self.client.patch_fields(new.name, {"prefix": restore})
            except KeyProblem:
                raise
            except CPAError as exc:
                self.audit("patch-fields prefix (restore)", new, f"failed: {exc.sentence}")
                self.flow.last_error = exc.sentence
                self.save()
                return _Next.WAIT
            shown = repr(restore) if restore else "no prefix"
            self.audit("patch-fields prefix (restore)", new, f"restored {shown}: ok")
            pub.stage = PublicStage.RESTORED
            self.save()
        if ver.result == "ok":
            self.flow.phase = Phase.RETIRE
            self.save()
            return _Next.CONTINUE
        if ver.result == "refused":
            return self.refused(ver.detail)
        if ver.result == "gave_up":
            return self.gave_up(ver.detail)
        if ver.result == "proxy_key":
            return self.to_operator(
                f"CPA {self.task.cpa!r} refused reauthd's proxy_api_key, so {new.name} could not be tested; "
                "the old credential was not touched"
            )
        return _Next.WAIT

    async def public_request(self, api: PublicAPI, new: NewCredential, pub: PublicCheck) -> _Next | None:
        """Send the one test request; None when a verdict (or a reason to stop) is recorded."""
        ver = self.flow.verification
        not_routed = 0
        inline = 0
        while True:
            try:
                answer = await api.chat_once(f"{pub.prefix}/{pub.model}")
                judgement = judge_public_answer(answer.status, answer.body, new.provider)
            except PublicAPIUnreachable as exc:
                judgement = None
                detail = str(exc)
            if judgement is not None and judgement.result is CheckResult.NOT_ROUTED:
                not_routed += 1
                if not_routed <= self.config.not_routed_retries:
                    await self.runner._sleep(self.config.not_routed_delay_s)
                    continue
            ver.attempts += 1
            if judgement is not None:
                detail = judgement.detail
            ver.detail = detail
            self.audit("verify-public-api", new, f"one request for {pub.prefix}/{pub.model}: {detail}")
            if judgement is not None and judgement.result is CheckResult.OK:
                self.verified()
                return None
            if judgement is not None and judgement.result is CheckResult.REFUSED:
                ver.result = "refused"
                ver.at = self.clock()
                self.save(verification=f"refused: {detail}")
                return None
            if judgement is not None and judgement.result is CheckResult.PROXY_KEY_REFUSED:
                ver.result = "proxy_key"
                self.save()
                return None
            inline += 1
            if ver.attempts >= self.config.verify_max_attempts:
                ver.result = "gave_up"
                self.save()
                return None
            if inline >= self.config.verify_inline_attempts:
                return self.retry_later(detail)
            self.save()
            await self.runner._sleep(self.config.verify_inline_delay_s)

    # ---------------------------------------------------------------------------------- retire

    async def retire(self) -> _Next:
        new = self.flow.new
        if new is None or not self.flow.verified:
            # Defence in depth: the invariant is "no retiring without a recorded successful test".
            return self.to_operator("internal check: retiring was reached without a verified new credential")
        plan = retire_plan(self.config.policy, new.same_name)
        if (
            self.task.state is S.VERIFYING
            and plan
            and not self.transition(S.RETIRING, f"{new.name} works; retiring the old credential")
        ):
            return _Next.STOP
        for step in plan:
            state = self.flow.steps.get(step.value, StepState.PENDING)
            if state in (StepState.DONE, StepState.SKIPPED):
                continue
            if step is RetireStep.COPY_SETTINGS:
                outcome = await self.copy_settings(new)
            else:
                outcome = await self.change_old(step, new)
            if outcome is _Next.WAIT:
                if self.flow.retire_errors >= self.config.max_retire_errors:
                    return self.to_operator(
                        f"retiring {self.task.auth_name} kept failing ({self.flow.last_error}); "
                        f"{new.name} is verified and in use"
                    )
                return _Next.WAIT
            if outcome is _Next.STOP:
                return _Next.STOP
            if self.flow.steps.get(step.value) is StepState.SKIPPED:
                # The old file was left alone: the remaining steps are moot.
                for rest in plan:
                    if self.flow.steps.get(rest.value, StepState.PENDING) is StepState.PENDING:
                        self.flow.steps[rest.value] = StepState.SKIPPED
                self.save()
                break
        return self.finish(new, plan)

    async def copy_settings(self, new: NewCredential) -> _Next:
        step = RetireStep.COPY_SETTINGS.value
        old = self.old
        try:
            old_raw = await self.client.download_auth_file(old.name)
        except KeyProblem:
            raise
        except CPARequestError as exc:
            if exc.status == 404:
                self.flow.steps[step] = StepState.DONE
                self.flow.note(f"{old.name} was gone, so no settings could be copied from it")
                self.save()
                return _Next.CONTINUE
            return self.retire_error(f"could not read {old.name}: {exc.sentence}")
        except CPAError as exc:
            return self.retire_error(f"could not read {old.name}: {exc.sentence}")
        try:
            new_raw = await self.client.download_auth_file(new.name)
            body = settings_to_copy(parse_auth_file(old_raw), parse_auth_file(new_raw))
        except KeyProblem:
            raise
        except AuthFileUnreadable as exc:
            self.flow.steps[step] = StepState.DONE
            self.flow.note(f"settings were not copied: {exc}")
            self.save()
            return _Next.CONTINUE
        except CPAError as exc:
            return self.retire_error(f"could not read {new.name}: {exc.sentence}")
        finally:
            del old_raw  # holds tokens: keep nothing
        if not body:
            self.flow.steps[step] = StepState.DONE
            self.save()
            return _Next.CONTINUE
        self.flow.steps[step] = StepState.SENT
        self.save()
        keys = ", ".join(sorted(body))
        try:
            await self.client.patch_fields(new.name, body)
        except KeyProblem:
            raise
        except CPAError as exc:
            self.audit("patch-fields settings", new, f"copy of {keys} from {old.name} failed: {exc.sentence}")
            return self.retire_error(exc.sentence)
        self.audit("patch-fields settings", new, f"copied {keys} from {old.name}: ok")
        self.flow.steps[step] = StepState.DONE
        self.flow.note(f"copied the settings {keys} to {new.name}")
        self.save()
        return _Next.CONTINUE

    def retire_error(self, detail: str) -> _Next:
        self.flow.retire_errors += 1
        self.flow.last_error = detail
        self.save()
        log.info("verify.retire_wait", task_id=self.task.id, error=detail)
        return _Next.WAIT

    def _rewritten(self, current: Credential | None) -> bool:
        seen = self.flow.old_modtime
        return seen is not None and current is not None and _modtime(current) not in (None, seen)

    async def change_old(self, step: RetireStep, new: NewCredential) -> _Next:
        old = self.old
        new_cred = Credential(self.task.cpa, new.name, new.auth_index, new.provider, "active")
        old_probe: OldProbe | None = None
        for _ in range(3):
            state = self.flow.steps.get(step.value, StepState.PENDING)
            try:
                current = await self.entry(old.name)
            except KeyProblem:
                raise
            except CPAError as exc:
                return self.retire_error(f"could not re-check {old.name}: {exc.sentence}")
            check = recheck_old(
                step,
                old,
                current,
                new_cred,
                sent_before=state is StepState.SENT,
                we_disabled=self.flow.we_disabled,
                old_probe=old_probe,
                probe_available=self.probe_available(old.provider),
                rewritten=self._rewritten(current),
            )
            if check.disabled_by_someone and not self.flow.old_disabled_by_someone:
                self.flow.old_disabled_by_someone = True
                self.flow.note(f"{old.name} had been disabled by someone else before reauthd retired it")
            if check.kind is RecheckKind.PROBE_OLD:
                assert current is not None
                evidence = await probe(
                    self.client, current, self.clock(), table=self.runner.probes, check_expiry=False
                )
                old_probe = judge_old_probe(evidence, old.provider)
                self.audit(
                    "re-check probe",
                    old,
                    f"the old token answered HTTP {evidence.http_status}: {old_probe.value}",
                )
                continue
            if check.kind is RecheckKind.WAIT:
                return self.retire_error(check.reason)
            if check.kind is RecheckKind.LEAVE:
                self.flow.steps[step.value] = StepState.SKIPPED
                self.flow.note(check.reason)
                self.audit(f"{step.value} skipped", old, check.reason)
                self.save()
                return _Next.CONTINUE
            if check.kind is RecheckKind.ALREADY_DONE:
                if step is RetireStep.DISABLE_OLD and not check.disabled_by_someone:
                    self.flow.we_disabled = True
                if step is RetireStep.DISABLE_OLD:
                    self.flow.old_modtime = _modtime(current)
                self.flow.steps[step.value] = StepState.DONE
                self.save()
                return _Next.CONTINUE
            return await self.apply(step, old, new)
        return self.retire_error(f"could not decide whether {old.name} may be changed")

    async def apply(self, step: RetireStep, old: OldCredential, new: NewCredential) -> _Next:
        assert self.flow.verified  # make before break: checked again right before the side effect
        self.flow.steps[step.value] = StepState.SENT
        self.save()
        action = "patch-status disabled" if step is RetireStep.DISABLE_OLD else "delete"
        try:
            if step is RetireStep.DISABLE_OLD:
                await self.client.set_disabled(old.name, True, auth_index=old.auth_index)
            else:
                await self.client.delete_auth_file(old.name)
        except KeyProblem:
            raise
        except CPARequestError as exc:
            # CPA refused (404: gone or another auth_index): nothing happened. The next re-check says why.
            self.audit(action, old, f"refused: HTTP {exc.status} {exc.error_text}")
            self.flow.steps[step.value] = StepState.PENDING
            return self.retire_error(exc.sentence)
        except CPAError as exc:
            # No answer: it may or may not have happened; the step stays "sent" and is re-checked.
            self.audit(action, old, f"no answer: {exc.sentence}")
            return self.retire_error(exc.sentence)
        self.audit(action, old, "ok")
        if step is RetireStep.DISABLE_OLD:
            self.flow.we_disabled = True
            # CPA persisted `disabled` into the file (contract §3): its new mtime is ours, not someone's.
            try:
                self.flow.old_modtime = _modtime(await self.entry(old.name))
            except KeyProblem:
                raise
            except CPAError:
                self.flow.old_modtime = None
        self.flow.steps[step.value] = StepState.DONE
        self.save()
        log.info("verify.retired", task_id=self.task.id, step=step.value)
        return _Next.CONTINUE

    def finish(self, new: NewCredential, plan: tuple[RetireStep, ...]) -> _Next:
        old = self.old
        done = {s for s in plan if self.flow.steps.get(s.value) is StepState.DONE}
        if new.same_name:
            summary = f"CPA overwrote {new.name} in place with the new login; nothing to retire"
            if self.task.disabled_by_person:
                self.flow.note(
                    f"{new.name} had been disabled by a person; CPA re-enables a file on re-login, so it is "
                    "active again — disable it in CPA if that is still wanted"
                )
        elif RetireStep.DELETE_OLD in done:
            summary = f"now using {new.name}; {old.name} was disabled and deleted"
        elif RetireStep.DISABLE_OLD in done:
            summary = f"now using {new.name}; {old.name} was disabled"
        elif self.config.policy == "keep":
            summary = f"now using {new.name}; {old.name} was kept as configured (retire.policy = keep)"
        else:
            summary = f"now using {new.name}; {old.name} was left alone"
        if self.flow.old_disabled_by_someone or self.task.disabled_by_person:
            fields: dict[str, Any] = {"disabled_by_person": True}
        else:
            fields = {}
        notes = "; ".join(self.flow.notes)
        reason = f"Verified the new credential: {summary}" + (f" ({notes})" if notes else "")
        self.transition(S.DONE, reason, **fields)
        log.info("verify.done", task_id=self.task.id, new=new.name)
        return _Next.STOP
