"""Testing the new credential with one low-cost request: the provider probe via /api-call, or CPA's public API."""

from __future__ import annotations

from datetime import timedelta

import structlog

from reauthd.core.model import Credential
from reauthd.core.retire import (
    VERIFY_PREFIX_STEM,
    AuthFileUnreadable,
    parse_auth_file,
)
from reauthd.core.tasks import adopted_from
from reauthd.cpa.errors import CPAError, KeyProblem
from reauthd.detect.probes import probe
from reauthd.login.view import REFUSED_REASON_HEAD
from reauthd.verify.context import (
    MAX_REFUSED_LOGINS,
    Next,
    RunBase,
    S,
    temporary_prefix,
)
from reauthd.verify.flow import (
    NewCredential,
    Phase,
    PublicCheck,
    PublicStage,
)
from reauthd.verify.outcome import UNSAFE_EXAMPLE_KEYS, CheckResult, judge_probe, judge_public_answer
from reauthd.verify.public_api import PublicAPI, PublicAPIUnreachable

log = structlog.get_logger(__name__)


class VerifyPhase(RunBase):
    """One low-cost test request with the NEW credential; the old one is untouched whatever it says."""

    async def verify(self) -> Next:
        new = self.flow.new
        assert new is not None
        ver = self.flow.verification
        if self.flow.verified and (ver.public is None or ver.public.stage is PublicStage.RESTORED):
            self.flow.phase = Phase.RETIRE
            return Next.CONTINUE
        if ver.result == "refused" and (ver.public is None or ver.public.stage is PublicStage.RESTORED):
            return self.refused(ver.detail)
        if ver.next_attempt_at is not None and self.clock() < ver.next_attempt_at:
            return Next.WAIT
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

    def no_path(self, new: NewCredential) -> Next:
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

    async def verify_by_probe(self, new: NewCredential) -> Next:
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
            if inline >= self.inline_attempts:
                return self.retry_later(judgement.detail)
            self.save()
            await self.runner.sleep(self.config.verify_inline_delay_s)

    def verified(self) -> Next:
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
            return Next.CONTINUE  # verify() restores the prefix before retiring
        self.flow.phase = Phase.RETIRE
        self.save()
        return Next.CONTINUE

    def retry_later(self, detail: str, *, after: timedelta | None = None) -> Next:
        ver = self.flow.verification
        ver.next_attempt_at = self.clock() + (self.config.verify_retry_after if after is None else after)
        self.flow.last_error = detail
        self.save(verification=f"not verified yet: {detail}")
        return Next.WAIT

    def gave_up(self, detail: str) -> Next:
        new = self.flow.new
        name = new.name if new else "the new credential"
        return self.to_operator(
            f"could not test {name} after {self.flow.verification.attempts} attempts (last answer: {detail}); "
            "the old credential was not touched"
        )

    def refused(self, detail: str) -> Next:
        """Verification failed: the old credential stays exactly as it was; the person may log in again."""
        new = self.flow.new
        name = new.name if new else "the new credential"
        waited_in = adopted_from(self.store.task_history(self.task.id))
        if waited_in is not None:
            return self.refused_elsewhere(waited_in, name, detail)
        refusals = int(self.task.details.get("refused_logins", 0)) + 1
        self.flow.phase = Phase.FINISHED
        reason = f"{REFUSED_REASON_HEAD}{name}) did not work: {detail}. The old credential was left exactly as it was"
        details = {**self.runner.details_with(self.task.id, self.flow), "refused_logins": refusals}
        to = S.OPENED if refusals < MAX_REFUSED_LOGINS else S.FAILED
        reason += "; please log in again" if to is S.OPENED else f"; {refusals} logins in a row were refused"
        self.transition(
            to,
            reason,
            details=details,
            verification=f"refused: {detail}",
            new_auth_name=None,
            new_auth_index=None,
        )
        log.info("verify.refused", task_id=self.task.id, to=to.value)
        return Next.STOP

    def refused_elsewhere(self, waited_in: S, name: str, detail: str) -> Next:
        """A reload seen through another tool (a panel login, but also an operator's edit or a disable and
        enable of the failed file, which reload it just the same) did not pass its test. Nobody used
        reauthd's page, so nobody is told "your new login did not work" and no refusal is counted: the task
        waits where it waited, its link and reminders unchanged, and the same file write is never tested
        again (`core.tasks.adopt_since`)."""
        self.flow.phase = Phase.FINISHED
        reason = (
            f"{name} was reloaded in CPA outside reauthd and tested: {detail}. The old credential was left "
            "exactly as it was; still waiting for a new login"
        )
        self.transition(
            waited_in,
            reason,
            details=self.runner.details_with(self.task.id, self.flow),
            verification=f"refused: {detail}",
            new_auth_name=None,
            new_auth_index=None,
        )
        log.info("verify.refused_elsewhere", task_id=self.task.id, to=waited_in.value)
        return Next.STOP

    # ------------------------------------------------------------------------------ public API

    async def verify_by_public_api(self, new: NewCredential) -> Next:
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
            ver.public = PublicCheck(temporary_prefix(self.task.id, self.flow.attempt), original, model)
            self.save()
        pub = ver.public
        if pub.stage in (PublicStage.PLANNED, PublicStage.PREFIX_SENT) and not ver.result:
            pub.stage = PublicStage.PREFIX_SENT
            self.save()
            try:
                await self.client.patch_fields(new.name, {"prefix": pub.prefix})
            except KeyProblem:
                raise
            except CPAError as exc:
                self.audit("patch-fields prefix (temporary)", new, f"failed: {exc.sentence}")
                ver.attempts += 1
                ver.detail = f"could not set a temporary prefix: {exc.sentence}"
                if ver.attempts < self.config.verify_max_attempts:
                    return self.retry_later(ver.detail)
                ver.result = "gave_up"  # and put the prefix back below, in case the PATCH did land
                self.save()
            else:
                self.audit(
                    "patch-fields prefix (temporary)", new, f"set {pub.prefix} to test the credential: ok"
                )
                pub.stage = PublicStage.PREFIX_SET
                self.save()
        if pub.stage is PublicStage.PREFIX_SET and not ver.result:
            outcome = await self.public_request(api, new, pub)
            if outcome is not None:
                return outcome
        # A verdict exists (or we give up): put the prefix back before anything else.
        if ver.result and pub.stage in (
            PublicStage.PREFIX_SENT,
            PublicStage.PREFIX_SET,
            PublicStage.RESTORE_SENT,
        ):
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
                return Next.WAIT
            shown = repr(restore) if restore else "no prefix"
            self.audit("patch-fields prefix (restore)", new, f"restored {shown}: ok")
            pub.stage = PublicStage.RESTORED
            self.save()
        if ver.result == "ok":
            self.flow.phase = Phase.RETIRE
            self.save()
            return Next.CONTINUE
        if ver.result == "refused":
            return self.refused(ver.detail)
        if ver.result == "gave_up":
            return self.gave_up(ver.detail)
        if ver.result == "proxy_key":
            if UNSAFE_EXAMPLE_KEYS in ver.detail:
                return self.to_operator(
                    f"CPA {self.task.cpa!r} disables its proxy API while its api-keys still contain the example "
                    f"keys (your-api-key-1..3), so {new.name} could not be tested; the old credential was not "
                    "touched"
                )
            return self.to_operator(
                f"CPA {self.task.cpa!r} refused reauthd's proxy_api_key, so {new.name} could not be tested; "
                "the old credential was not touched"
            )
        return Next.WAIT

    async def public_request(self, api: PublicAPI, new: NewCredential, pub: PublicCheck) -> Next | None:
        """Send the one test request; None when a verdict (or a reason to stop) is recorded."""
        ver = self.flow.verification
        inline = 0
        while True:
            try:
                answer = await api.chat_once(f"{pub.prefix}/{pub.model}")
                judgement = judge_public_answer(answer.status, answer.body, new.provider)
            except PublicAPIUnreachable as exc:
                judgement = None
                detail = str(exc)
            if judgement is not None and judgement.result is CheckResult.NOT_ROUTED:
                # CPA routes the prefix once it re-registered the auth after the PATCH: not an attempt yet.
                ver.not_routed += 1
                if ver.not_routed <= self.config.not_routed_retries:
                    if not self.wait:
                        after = timedelta(seconds=self.config.not_routed_delay_s)
                        return self.retry_later(judgement.detail, after=after)
                    self.save()
                    await self.runner.sleep(self.config.not_routed_delay_s)
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
                ver.detail = judgement.detail
                self.save()
                return None
            inline += 1
            if ver.attempts >= self.config.verify_max_attempts:
                ver.result = "gave_up"
                self.save()
                return None
            if inline >= self.inline_attempts:
                return self.retry_later(detail)
            self.save()
            await self.runner.sleep(self.config.verify_inline_delay_s)
