"""Retiring the old credential after a recorded successful test: copy settings, disable, delete, per policy."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import structlog

from reauthd.core.identity import OldCredential
from reauthd.core.model import Credential
from reauthd.core.retire import (
    AuthFileUnreadable,
    OldProbe,
    RecheckKind,
    RetireStep,
    parse_auth_file,
    recheck_old,
    retire_plan,
    settings_to_copy,
)
from reauthd.cpa.errors import CPAError, CPARequestError, KeyProblem
from reauthd.detect.probes import probe
from reauthd.verify.context import (
    Next,
    RunBase,
    S,
    modtime_of,
)
from reauthd.verify.flow import (
    NewCredential,
    StepState,
)
from reauthd.verify.outcome import judge_old_probe

log = structlog.get_logger(__name__)


class RetirePhase(RunBase):
    """Copy settings, then disable and delete the old file per policy, re-checking it before each change."""

    async def retire(self) -> Next:
        new = self.flow.new
        if new is None or not self.flow.verified:
            # Defence in depth: the invariant is "no retiring without a recorded successful test".
            return self.to_operator("internal check: retiring was reached without a verified new credential")
        if self.flow.retire_after is not None and self.clock() < self.flow.retire_after:
            return Next.WAIT
        plan = retire_plan(self.config.policy, new.same_name)
        if (
            self.task.state is S.VERIFYING
            and plan
            and not self.transition(S.RETIRING, f"{new.name} works; retiring the old credential")
        ):
            return Next.STOP
        for step in plan:
            state = self.flow.steps.get(step.value, StepState.PENDING)
            if state in (StepState.DONE, StepState.SKIPPED):
                continue
            if step is RetireStep.COPY_SETTINGS:
                outcome = await self.copy_settings(new)
            else:
                outcome = await self.change_old(step, new)
            if outcome is Next.WAIT:
                if self.flow.retire_errors >= self.config.max_retire_errors:
                    return self.to_operator(
                        f"retiring {self.task.auth_name} kept failing ({self.flow.last_error}); "
                        f"{new.name} is verified and in use"
                    )
                return Next.WAIT
            if outcome is Next.STOP:
                return Next.STOP
            if self.flow.steps.get(step.value) is StepState.SKIPPED:
                # The old file was left alone: the remaining steps are moot.
                for rest in plan:
                    if self.flow.steps.get(rest.value, StepState.PENDING) is StepState.PENDING:
                        self.flow.steps[rest.value] = StepState.SKIPPED
                self.save()
                break
        return self.finish(new, plan)

    async def copy_settings(self, new: NewCredential) -> Next:
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
                return Next.CONTINUE
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
            return Next.CONTINUE
        except CPAError as exc:
            return self.retire_error(f"could not read {new.name}: {exc.sentence}")
        finally:
            del old_raw  # holds tokens: keep nothing
        if not body:
            self.flow.steps[step] = StepState.DONE
            self.save()
            return Next.CONTINUE
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
        return Next.CONTINUE

    def retire_error(self, detail: str) -> Next:
        self.flow.retire_errors += 1
        self.flow.last_error = detail
        # Bounded exponential backoff: CPA restarting or briefly unreachable is retried without a flood.
        delay = min(
            self.config.retire_backoff_max_s,
            self.config.retire_backoff_s * 2 ** (self.flow.retire_errors - 1),
        )
        self.flow.retire_after = self.clock() + timedelta(seconds=delay)
        self.save()
        log.info("verify.retire_wait", task_id=self.task.id, error=detail)
        return Next.WAIT

    def _rewritten(self, current: Credential | None) -> bool:
        seen = self.flow.old_modtime
        return seen is not None and current is not None and modtime_of(current) not in (None, seen)

    async def change_old(self, step: RetireStep, new: NewCredential) -> Next:
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
                return Next.CONTINUE
            if check.kind is RecheckKind.ALREADY_DONE:
                if step is RetireStep.DISABLE_OLD and not check.disabled_by_someone:
                    self.flow.we_disabled = True
                if step is RetireStep.DISABLE_OLD:
                    self.flow.old_modtime = modtime_of(current)
                self.flow.steps[step.value] = StepState.DONE
                self.save()
                return Next.CONTINUE
            return await self.apply(step, old, new)
        return self.retire_error(f"could not decide whether {old.name} may be changed")

    async def apply(self, step: RetireStep, old: OldCredential, new: NewCredential) -> Next:
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
            if exc.status == 409:
                # A plugin's virtual auth (auth_files_crud.go): CPA changes it only through its source file,
                # which may hold other accounts too. Retrying cannot help; a person decides.
                return self.to_operator(
                    f"CPA will not change {old.name} directly: it is a plugin's virtual credential; edit or "
                    f"delete its source auth file by hand. {new.name} is verified and in use"
                )
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
                self.flow.old_modtime = modtime_of(await self.entry(old.name))
            except KeyProblem:
                raise
            except CPAError:
                self.flow.old_modtime = None
        self.flow.steps[step.value] = StepState.DONE
        self.save()
        log.info("verify.retired", task_id=self.task.id, step=step.value)
        return Next.CONTINUE

    def finish(self, new: NewCredential, plan: tuple[RetireStep, ...]) -> Next:
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
        return Next.STOP
