"""Finding the new credential: poll CPA's listing until the file the login wrote is registered (contract §12)."""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog

from reauthd.core.foreign import other_account_logins, other_account_sentence
from reauthd.core.identity import MatchKind, OldCredential, find_replacement
from reauthd.core.model import Credential
from reauthd.cpa.errors import CPAError, KeyProblem
from reauthd.verify.context import (
    Next,
    RunBase,
    fingerprint,
    modtime_of,
)
from reauthd.verify.flow import (
    Candidate,
    NewCredential,
    Phase,
)

log = structlog.get_logger(__name__)


class FindPhase(RunBase):
    """Find the file the login wrote; wait (bounded) until CPA's watcher registered it; never guess."""

    async def find(self) -> Next:
        while True:
            try:
                listing = await self.list_all()
            except KeyProblem:
                raise
            except CPAError as exc:
                self.flow.last_error = exc.sentence
                self.save()
                return Next.WAIT
            now = self.clock()
            self._note_disabled_old(self._old_entry(listing))
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
                    self.flow.old_modtime = modtime_of(self._old_entry(listing))
                self.flow.phase = Phase.VERIFY
                self.flow.last_error = ""
                self.save(new_auth_name=new.name, new_auth_index=new.auth_index)
                log.info("verify.found", task_id=self.task.id, new=new.name, same_name=result.same_name)
                return Next.CONTINUE
            # Nothing of the right account, or only the old file itself still showing its failure.
            untouched = result.kind is MatchKind.WAITING or (
                result.kind is MatchKind.REGISTERING
                and result.same_name
                and result.credential is not None
                and result.credential.status == "error"
            )
            if untouched and now - self.flow.started >= self.config.other_account_settle:
                others = other_account_logins(old, listing, self.flow.since)
                if others:
                    for entry in others:  # the audit keeps the full file name for the operator
                        self.audit("other-account login", entry, "not a replacement: remove it if unwanted")
                    log.warning(
                        "verify.other_account_login", task_id=self.task.id, files=[e.name for e in others]
                    )
                    return self.to_operator(other_account_sentence(old, others, self.task.account_masked))
            if now - self.flow.started >= self.config.find_timeout:
                minutes = self.config.find_timeout.total_seconds() / 60
                return self.to_operator(
                    f"CPA did not show the new credential within {minutes:g} minutes of the login "
                    f"({result.reason}); nothing was changed"
                )
            self.flow.last_error = result.reason
            elapsed = (now - self.inline_started).total_seconds()
            budget = self.config.find_inline_budget_s if self.wait else 0.0
            if elapsed + self.config.find_poll_interval_s > budget:
                self.save()
                return Next.WAIT
            await self.runner.sleep(self.config.find_poll_interval_s)

    def _old_entry(self, listing: list[Credential]) -> Credential | None:
        for entry in listing:
            if entry.auth_index == self.task.auth_index and entry.name == self.task.auth_name:
                return entry
        return None

    def _note_disabled_old(self, entry: Credential | None) -> None:
        # A second chance after the look when the login was minted (runner.remember_old_file): until CPA's
        # watcher reloads a same-name file, the listing still shows the old auth, disabled or not (§4.4).
        if entry is None or not entry.disabled or self.task.disabled_by_person or self.flow.we_disabled:
            return
        if self.runner.left_disabled_by_reauthd(self.task):
            return
        self.save(disabled_by_person=True)
        log.info("verify.old_file_disabled", task_id=self.task.id, by_person=True)

    def _old_from(self, listing: list[Credential]) -> OldCredential:
        # The listing still shows the old file when the login landed under a new name; its e-mail and
        # account id identify the account. Read fresh every time: reauthd does not store e-mails.
        entry = self._old_entry(listing)
        if entry is None:
            return self.old
        return OldCredential(entry.name, entry.auth_index, self.task.provider, entry.email, entry.account_id)

    def _track_candidate(self, entry: Credential, now: datetime) -> timedelta:
        fp = fingerprint(entry)
        cand = self.flow.candidate
        if cand is None or (cand.name, cand.auth_index, cand.fingerprint) != (
            entry.name,
            entry.auth_index,
            fp,
        ):
            self.flow.candidate = Candidate(entry.name, entry.auth_index, fp, now)
            return timedelta(0)
        return now - cand.first_seen
