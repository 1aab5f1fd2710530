"""The detection engine: owns each credential's evidence and confirmation state, runs the sources, and
hands one "confirmed revocation" event per failure to the task layer.

Sources, best first (contract §7 summary): the RESP `errors` stream (real time; triggers an immediate
confirming probe), the `GET /auth-files` poll (one list request per CPA per cycle), probes through
`/api-call` (confirming and a slow idle schedule), and CPAMP when configured. Never `/usage-queue`:
reading it deletes records other tools collect.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import structlog

from reauthd.config import DetectConfig
from reauthd.core.causes import Cause, cause_of
from reauthd.core.classify import NOT_CREDENTIAL_FAILURE_CODES, classify, is_failure
from reauthd.core.confirm import Confirmation, ConfirmedRevocation, ConfirmPolicy, observe
from reauthd.core.model import Credential, CredentialRef, Evidence, Verdict, VerdictKind
from reauthd.cpa.client import CPAClient
from reauthd.cpa.errors import CPAError, FeatureMissing, KeyProblem, ManagementNotEnabled
from reauthd.cpa.errorstream import ErrorStream
from reauthd.cpa.models import ErrorEvent
from reauthd.detect.cpamp import CPAMPFinding, CPAMPRead, CPAMPSource, current_evidence
from reauthd.detect.evidence import (
    ListingFingerprint,
    credential_from_event,
    error_event_evidence,
    listing_evidence,
)
from reauthd.detect.listing import fetch_listing
from reauthd.detect.probes import ProbeTable, probe
from reauthd.detect.schedule import SWEEP_SHARE, IdleSchedule, ProbeGate, human_duration, sweep_period

log = structlog.get_logger(__name__)

Key = tuple[str, str]  # (cpa name, auth_index)
Clock = Callable[[], datetime]
OnConfirmed = Callable[[ConfirmedRevocation], Awaitable[None]]
_NO_CONFIRMATION = Confirmation()
_POLL_JITTER_LOW = 0.9  # the poll loop sleeps 90-100 % of the interval
_YIELD_EVERY = 2000  # credentials taken in between two turns of the event loop


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class CredentialVerdict:
    """The latest verdict for one credential, with the listing entry it was made for."""

    ref: CredentialRef
    credential: Credential | None
    verdict: Verdict
    at: datetime

    @property
    def retirable(self) -> bool:
        return self.credential is not None and not self.credential.runtime_only


@dataclass(slots=True)
class _Record:
    ref: CredentialRef
    credential: Credential | None = None
    listed: bool = False  # seen in a listing (an `errors` event alone never pages)
    listing: Evidence | None = None
    listing_fp: ListingFingerprint | None = None
    listing_digest: bytes | None = None  # what `credential` was built from (`Listing.digests`)
    stream: Evidence | None = None
    probe: Evidence | None = None
    # CPAMP (detect/cpamp.py): every current finding, candidates and inspection kept apart so a failed
    # read of one part keeps that part's previous findings; `cpamp` is what still counts of them.
    cpamp_candidates: tuple[CPAMPFinding, ...] = ()
    cpamp_inspection: tuple[CPAMPFinding, ...] = ()
    cpamp: tuple[Evidence, ...] = ()
    cpamp_auto_disabled: bool = False  # CPAMP disabled the file itself (not a person)
    confirmation: Confirmation = field(default_factory=Confirmation)
    verdict: Verdict | None = None
    at: datetime | None = None
    seq: int = 0  # creation order: views come out in the order credentials were first seen

    def evidence(self) -> list[Evidence]:
        found = [e for e in (self.listing, self.stream, self.probe) if e is not None]
        return [*found, *self.cpamp] if self.cpamp else found


class DetectionEngine:
    """One per daemon (or per `reauthd scan`). Not thread-safe; all methods run on one event loop."""

    def __init__(
        self,
        clients: Mapping[str, CPAClient],
        detect: DetectConfig | None = None,
        *,
        cpamp: Sequence[CPAMPSource] = (),
        clock: Clock = _utcnow,
        on_confirmed: OnConfirmed | None = None,
        probes_enabled: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        self.clients = dict(clients)
        self.config = detect or DetectConfig()
        self.cpamp_sources = list(cpamp)
        self.clock = clock
        self.on_confirmed = on_confirmed
        self.probes_enabled = probes_enabled
        self.table = ProbeTable(self.config.probes)
        self.confirmed: asyncio.Queue[ConfirmedRevocation] = asyncio.Queue()
        self.cpa_problems: dict[str, str] = {}  # cpa -> one sentence, while its last poll failed
        # cpa -> one sentence while its last listing had entries that broke the contract next to usable
        # ones: those credentials were not checked (scan exits 2), but CPA itself answered.
        self.unchecked: dict[str, str] = {}
        self.last_poll_ok: dict[str, datetime] = {}  # cpa -> when its auth-file list last answered
        self.cycles = 0
        self._rng = rng or random.Random()
        self._records: dict[Key, _Record] = {}
        self._created = 0
        # Credentials whose latest verdict is not healthy: at 50,000 mostly healthy credentials the task
        # layer's reconcile and the metrics must not walk every record (issue 3, performance).
        self._unhealthy: set[Key] = set()
        # Kept as verdicts change, for the same reason: the daemon reads them on every reconcile and after
        # every confirmation (issue 12: nothing on the live path walks every credential).
        self._counts: dict[str, Counter[VerdictKind]] = {}
        self._confirming: set[Key] = set()  # records whose confirmation is not the empty one
        #: Bumped whenever a confirmation state changes, so the daemon persists only when it did.
        self.state_version = 0
        self._idle = IdleSchedule(self.config.probe_interval_s, rng=self._rng)
        #: The idle sweep's effective period: `probe_interval_s`, stretched when the probe rate cannot probe
        #: every credential once per interval (gauge `reauthd_sweep_period_seconds`, a /readyz note).
        self.sweep_period_s = self.config.probe_interval_s
        self._sweep_logged = self.sweep_period_s
        self._sweeping = False  # the idle loop runs (`run`): changes of its period are logged
        # Two observations of one failure count as two only this far apart: one poll interval, less the
        # poll loop's downward jitter (`_poll_loop`), so two consecutive poll cycles always count.
        self._observation_gap_s = self.config.poll_interval_s * _POLL_JITTER_LOW
        # Probes confirming live evidence go before the idle sweep, which gets what is left (issue 12).
        self._gate = ProbeGate(self.config.probe_rate_per_s, self.config.probe_concurrency)
        self._in_flight: dict[Key, asyncio.Task[None]] = {}
        self._idle_in_flight: set[Key] = set()  # idle probes started and not finished
        self._idle_queued: set[Key] = set()  # idle probes still waiting for the gate (may be promoted)
        self._background: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------------------------ views

    def latest(self) -> list[CredentialVerdict]:
        """The latest verdict of every known credential (scan, metrics, the operator page)."""
        return [v for r in self._records.values() if (v := self._view(r)) is not None]

    def latest_unhealthy_and(
        self, auth_indexes: Collection[Key] = (), names: Collection[tuple[str, str]] = ()
    ) -> list[CredentialVerdict]:
        """The latest verdicts that are not healthy, plus those of the credentials named by (cpa,
        auth_index) or (cpa, file name), in `latest()` order: what task reconcile can act on, without
        building a view of every healthy credential."""
        keys = set(self._unhealthy)
        keys.update(k for k in auth_indexes if k in self._records)
        if names:
            keys.update(k for k, r in self._records.items() if (k[0], r.ref.name) in names)
        records = sorted((r for k in keys if (r := self._records.get(k)) is not None), key=lambda r: r.seq)
        return [v for r in records if (v := self._view(r)) is not None]

    def listed_credentials(self) -> Iterator[Credential]:
        """Every credential the latest listings showed, as listed (the tasks' search for a login made
        through another tool reads them; a generator, so 50,000 entries are not copied)."""
        for record in self._records.values():
            if record.listed and record.credential is not None:
                yield record.credential

    def verdict_counts(self) -> dict[str, Counter[VerdictKind]]:
        """cpa → verdict kind → number of credentials with a verdict (the same set `latest()` shows)."""
        return {cpa: +counts for cpa, counts in self._counts.items() if +counts}

    def verdict_cause_counts(self) -> dict[str, Counter[tuple[VerdictKind, Cause]]]:
        """cpa → (verdict kind, cause) → number of credentials (the `cause` label of the credentials gauge).
        Healthy verdicts cost nothing: their cause is `none`."""
        counts: dict[str, Counter[tuple[VerdictKind, Cause]]] = {}
        for (cpa, _), record in self._records.items():
            verdict = record.verdict
            if verdict is not None and record.at is not None:
                provider = record.credential.provider if record.credential is not None else ""
                cause = Cause.NONE if verdict.kind is VerdictKind.HEALTHY else cause_of(verdict, provider)
                counts.setdefault(cpa, Counter())[(verdict.kind, cause)] += 1
        return counts

    def summary(self) -> dict[tuple[str, str], int]:
        """(cpa, verdict kind) → number of credentials, for metrics."""
        counts: dict[tuple[str, str], int] = {}
        for (cpa, _), record in self._records.items():
            if record.verdict is not None and record.listed:
                key = (cpa, record.verdict.kind.value)
                counts[key] = counts.get(key, 0) + 1
        return counts

    def verdict_for(self, cpa: str, auth_index: str) -> CredentialVerdict | None:
        record = self._records.get((cpa, auth_index))
        return self._view(record) if record is not None else None

    def _record(self, key: Key, ref: CredentialRef, credential: Credential | None = None) -> _Record:
        self._created += 1
        record = self._records[key] = _Record(ref, credential=credential, seq=self._created)
        return record

    def _known(self, cpa: str, auth_index: str) -> Credential | None:
        record = self._records.get((cpa, auth_index))
        return record.credential if record is not None else None

    def _digest_of(self, cpa: str, auth_index: str) -> bytes | None:
        record = self._records.get((cpa, auth_index))
        return record.listing_digest if record is not None else None

    def _forget(self, key: Key) -> None:
        record = self._records.pop(key, None)
        self._unhealthy.discard(key)
        self._confirming.discard(key)
        if record is not None and record.verdict is not None:
            self._counts[key[0]][record.verdict.kind] -= 1
        if record is not None and record.confirmation != _NO_CONFIRMATION:
            self.state_version += 1

    def _view(self, record: _Record) -> CredentialVerdict | None:
        if record.verdict is None or record.at is None:
            return None
        return CredentialVerdict(record.ref, record.credential, record.verdict, record.at)

    # ------------------------------------------------------------------------------------ state

    def export_state(self) -> dict[str, Any]:
        """Confirmation state per credential, JSON-ready, for the daemon to persist."""
        return {
            f"{cpa}\x1f{index}": r.confirmation.to_dict()
            for (cpa, index) in self._confirming
            if (r := self._records.get((cpa, index))) is not None and r.confirmation != _NO_CONFIRMATION
        }

    def restore_state(self, data: Mapping[str, Any]) -> None:
        for joined, value in data.items():
            cpa, sep, index = str(joined).partition("\x1f")
            if not sep or not isinstance(value, Mapping):
                continue
            record = self._records.get((cpa, index)) or self._record(
                (cpa, index), CredentialRef(cpa, "", index)
            )
            record.confirmation = Confirmation.from_dict(value)
            self._track_confirmation((cpa, index), record)
            self.state_version += 1

    # ------------------------------------------------------------------------------------ cycle

    async def cycle(
        self, now: datetime | None = None, *, wait_for_probes: bool = False, views: bool = True
    ) -> list[CredentialVerdict]:
        """One poll cycle: one `GET /auth-files` per CPA, classify, confirm. Confirming probes start at
        once; with `wait_for_probes` the cycle returns only after they answered (scan --probe).
        Returns the listed credentials' verdicts; `views=False` (the poll loop) skips building them."""
        now = now or self.clock()
        self.cycles += 1
        wall, cpu = time.perf_counter(), time.process_time()
        results = await asyncio.gather(*(self._poll_cpa(cpa, now) for cpa in self.clients))
        self._retune_sweep()
        log.debug(
            "detect.cycle",
            cycle=self.cycles,
            known=len(self._records),
            seconds=round(time.perf_counter() - wall, 3),
            # The process's CPU over the cycle's span (the listing is read between other work).
            cpu_s=round(time.process_time() - cpu, 3),
        )
        to_probe = [key for keys in results for key in keys]
        tasks = [self._start_probe(key) for key in to_probe]
        if wait_for_probes:
            await asyncio.gather(*(t for t in tasks if t is not None), return_exceptions=True)
        if not views:
            return []
        return [v for cpa in self.clients for v in self._views_of(cpa)]

    def _views_of(self, cpa: str) -> Iterable[CredentialVerdict]:
        for (owner, _), record in self._records.items():
            if owner == cpa and record.listed and (view := self._view(record)) is not None:
                yield view

    async def _poll_cpa(self, cpa: str, now: datetime) -> list[Key]:
        client = self.clients[cpa]
        try:
            listing = await fetch_listing(
                client,
                known=lambda index: self._known(cpa, index),
                max_entries=self.config.max_listing_entries,
                digest_of=lambda index: self._digest_of(cpa, index),
            )
        except CPAError as exc:
            # One clear line; the previous verdicts stay, the next cycle tries again (the key gate
            # makes sure a refused key is not tried again).
            if self.cpa_problems.get(cpa) != exc.sentence:
                log.warning("detect.poll.failed", cpa=cpa, problem=exc.sentence)
            self.cpa_problems[cpa] = exc.sentence
            return []
        if listing.skipped and not listing.credentials:
            # Every entry broke the contract (missing status or auth_index, e.g. CPA's disk-fallback
            # listing when its auth manager is down): nothing was checked, and no verdict is built on
            # it. The previous verdicts stay and nothing is forgotten, as for a failed poll.
            sentence = (
                f"CPA listed {listing.skipped} auth {_entries(listing.skipped)} and none was usable "
                "(required fields missing or of the wrong type), so nothing was checked"
            )
            if self.cpa_problems.get(cpa) != sentence:
                log.warning("detect.poll.unusable", cpa=cpa, problem=sentence)
            self.cpa_problems[cpa] = sentence
            self.unchecked.pop(cpa, None)
            return []
        self.last_poll_ok[cpa] = now
        if cpa in self.cpa_problems:
            log.info("detect.poll.recovered", cpa=cpa)
            del self.cpa_problems[cpa]
        if listing.skipped:
            kept = len(listing.credentials)
            self.unchecked[cpa] = (
                f"{listing.skipped} of {listing.skipped + kept} auth entries in CPA's list "
                f"{'was' if listing.skipped == 1 else 'were'} unusable (required fields missing or of the "
                "wrong type), so those credentials were not checked"
            )
        else:
            self.unchecked.pop(cpa, None)
        if not self._idle:
            # The first listing: new credentials take their spread position over a period that fits
            # (an estimate: not every listed credential has a probe; the cycle's end sets it exactly).
            self._retune_sweep(len(listing.credentials), report=False)
        seen: set[Key] = set()
        to_probe: list[Key] = []
        digests = listing.digests
        for number, credential in enumerate(listing.credentials, 1):
            if number % _YIELD_EVERY == 0:
                # Let the `errors` stream, probes and deliveries run: at 100,000 credentials this loop
                # would otherwise hold the event loop for a large part of a second (issue 12).
                await asyncio.sleep(0)
            key = (cpa, credential.auth_index)
            seen.add(key)
            record = self._records.get(key)
            if record is None:
                record = self._record(key, credential.ref)
            record.listing_digest = digests[number - 1] if len(digests) >= number else None
            if record.credential is credential and record.listed and record.listing is not None:
                # The very object of the last cycle (the listing reader reuses equal entries): same
                # fingerprint, same evidence. Skipping the rebuild matters at 50,000 credentials.
                changed = False
            else:
                record.ref = credential.ref
                record.credential = credential
                record.listed = True
                evidence, fingerprint = listing_evidence(credential, record.listing, record.listing_fp, now)
                changed = evidence is not record.listing
                record.listing, record.listing_fp = evidence, fingerprint
                if record.cpamp_candidates or record.cpamp_inspection:
                    # A new login (last_refresh) or a first "active" changes what of CPAMP still counts.
                    changed = self._cpamp_recompute(record) or changed
            if self.table.has_probe(credential.provider) and (
                not credential.disabled or self.config.include_disabled
            ):
                self._idle.add(key, f"{cpa}/{credential.auth_index}", now)
            else:
                self._idle.discard(key)
            # Fast path: an unchanged entry with no open failure needs no work (10,000 mostly healthy
            # credentials per cycle). A failure is re-observed every cycle: that is what "two
            # consecutive observations" counts.
            needs_work = changed or record.verdict is None or record.confirmation.failure is not None
            if needs_work and self._decide(record, now, counts_as_observation=True):
                to_probe.append(key)
        if listing.skipped or listing.registering:
            # Entries that broke the contract were skipped (and logged by the client), entries of a login
            # CPA is registering were left out: their credentials still exist, so nothing is forgotten on
            # a listing with holes in it.
            return to_probe
        for key in [k for k in self._records if k[0] == cpa and k not in seen]:
            # Deleted or retired in CPA: forget it (its task, if any, lives in the store).
            self._forget(key)
            self._idle.discard(key)
        return to_probe

    # ------------------------------------------------------------------------------------ decide

    def _decide(self, record: _Record, now: datetime, *, counts_as_observation: bool) -> bool:
        """Classify and advance confirmation; emit a confirmed event. True if a confirming probe is wanted."""
        credential = record.credential
        verdict = classify(credential, record.evidence(), now)
        provider = credential.provider if credential is not None else ""
        if credential is not None and credential.disabled and record.cpamp_auto_disabled:
            # CPAMP's auto-disable, not a person, disabled it: exactly these accounts must be raised.
            credential = replace(credential, disabled=False)
        if not record.listed:
            # Known only from an `errors` event: show it, but wait for the listing before confirming
            # (the event lacks the file's generation, so an event id made now could repeat later).
            self._set_verdict(record, verdict, now)
            return self.probes_enabled and is_failure(verdict.kind) and self.table.has_probe(provider)
        policy = ConfirmPolicy(
            has_probe=self.probes_enabled and self.table.has_probe(provider),
            include_disabled=self.config.include_disabled,
            min_observation_gap_s=self._observation_gap_s,
        )
        confirmation, decision = observe(
            record.confirmation,
            record.ref,
            credential,
            verdict,
            now,
            policy,
            counts_as_observation=counts_as_observation,
        )
        if confirmation != record.confirmation:
            self.state_version += 1
            record.confirmation = confirmation
            self._track_confirmation((record.ref.cpa, record.ref.auth_index), record)
        self._set_verdict(record, decision.verdict, now)
        if decision.event is not None:
            self._emit(decision.event)
        return decision.probe

    def _track_confirmation(self, key: Key, record: _Record) -> None:
        if record.confirmation == _NO_CONFIRMATION:
            self._confirming.discard(key)
        else:
            self._confirming.add(key)

    def _set_verdict(self, record: _Record, verdict: Verdict, now: datetime) -> None:
        key = (record.ref.cpa, record.ref.auth_index)
        if record.verdict is None or record.verdict.kind is not verdict.kind:
            counts = self._counts.setdefault(key[0], Counter())
            if record.verdict is not None:
                counts[record.verdict.kind] -= 1
            counts[verdict.kind] += 1
        record.verdict, record.at = verdict, now
        if verdict.kind is VerdictKind.HEALTHY:
            self._unhealthy.discard(key)
        else:
            self._unhealthy.add(key)

    def _emit(self, event: ConfirmedRevocation) -> None:
        log.warning(
            "detect.confirmed",
            event_id=event.id,
            cpa=event.ref.cpa,
            auth_file=event.ref.name,
            auth_index=event.ref.auth_index,
            provider=event.provider,
            account=event.account,
            verdict=event.kind.value,
            reason=event.verdict.reason,
            retirable=event.retirable,
        )
        self.confirmed.put_nowait(event)
        if self.on_confirmed is not None:
            self._spawn(self._deliver(event))

    async def _deliver(self, event: ConfirmedRevocation) -> None:
        assert self.on_confirmed is not None
        try:
            await self.on_confirmed(event)
        except Exception as exc:  # the task layer's failure must not stop detection
            log.error("detect.confirmed.delivery_failed", event_id=event.id, error=type(exc).__name__)

    # ------------------------------------------------------------------------------------ probes

    def _start_probe(self, key: Key, *, urgent: bool = True) -> asyncio.Task[None] | None:
        """Start a probe of `key` unless one is running. `urgent` (the default): it confirms live evidence
        and goes before every idle probe; an idle probe of the same credential still waiting for the gate
        is replaced by it, so live evidence never waits behind the sweep."""
        if not self.probes_enabled:
            return None
        running = self._in_flight.get(key)
        if running is not None and not running.done():
            if not (urgent and key in self._idle_queued):
                return running
            running.cancel()  # not sent yet: the urgent probe below takes its place
            self._idle_queued.discard(key)
            self._idle_in_flight.discard(key)
        task = asyncio.create_task(self._probe_and_decide(key, urgent=urgent))
        self._in_flight[key] = task
        if not urgent:
            self._idle_in_flight.add(key)
            self._idle_queued.add(key)
        task.add_done_callback(self._forget_probe(key))
        return task

    def _forget_probe(self, key: Key) -> Callable[[asyncio.Task[None]], None]:
        def forget(task: asyncio.Task[None]) -> None:
            if self._in_flight.get(key) is task:
                del self._in_flight[key]
                self._idle_in_flight.discard(key)
                self._idle_queued.discard(key)

        return forget

    async def probe_now(self, cpa: str, auth_index: str) -> CredentialVerdict | None:
        """Probe one credential now (rate-limited) and return its new verdict."""
        task = self._start_probe((cpa, auth_index))
        if task is not None:
            await task
        return self.verdict_for(cpa, auth_index)

    async def _probe_and_decide(self, key: Key, *, urgent: bool = True) -> None:
        record = self._records.get(key)
        if record is None or record.credential is None:
            return
        client = self.clients.get(key[0])
        if client is None:
            return
        await self._gate.acquire(urgent=urgent)
        try:
            if not urgent:
                self._idle_queued.discard(key)  # on its way: an urgent need now waits for this answer
            credential = record.credential
            started = self.clock()
            try:
                evidence = await probe(client, credential, started, table=self.table)
            except KeyProblem as exc:
                self.cpa_problems[key[0]] = exc.sentence
                log.warning("detect.probe.key_problem", cpa=key[0], problem=exc.sentence)
                self._idle.probed(key, started)  # stay on the idle schedule; the gate decides when
                return
        finally:
            self._gate.release(urgent=urgent)
        record = self._records.get(key)
        if record is None:
            return
        record.probe = evidence
        self._idle.probed(key, started)
        self._decide(record, self.clock(), counts_as_observation=False)

    def due_idle_probes(self, now: datetime, limit: int | None = None) -> list[Key]:
        return self._idle.pop_due(now, limit)

    async def run_idle_probes(self, now: datetime | None = None) -> int:
        """Start the idle probes that are due; returns how many were started.

        At most `2 × probe_concurrency` idle probes are in flight (waiting for the gate or on the wire):
        a sweep that is behind its schedule stays in the schedule, not in a queue of tasks."""
        now = now or self.clock()
        room = self.config.probe_concurrency * 2 - len(self._idle_in_flight)
        if room <= 0:
            return 0
        keys = self.due_idle_probes(now, limit=room)
        started = 0
        for key in keys:
            if key in self._records and key not in self._in_flight:
                self._start_probe(key, urgent=False)
                started += 1
            elif key not in self._in_flight:
                self._idle.reschedule(key, now)
            # else: a confirming probe of it is running; its answer reschedules it
        return started

    # ------------------------------------------------------------------------------------ sweep

    def _retune_sweep(self, credentials: int | None = None, *, report: bool = True) -> None:
        """Stretch (or restore) the idle sweep's period to what the probe rate allows for the credentials
        on the schedule (`credentials`: an estimate while the first listing is being taken in). Logged
        once when it changes noticeably; the daemon shows it as a gauge and a /readyz note."""
        if not self.probes_enabled:
            return
        count = len(self._idle) if credentials is None else max(credentials, len(self._idle))
        configured = self.config.probe_interval_s
        period = sweep_period(count, configured, self.config.probe_rate_per_s)
        self.sweep_period_s = self._idle.interval_s = period
        logged = self._sweep_logged
        if not self._sweeping or not report:
            return  # a one-shot `scan` has no sweep to report on
        if (period > configured) != (logged > configured) or abs(period - logged) > 0.05 * logged:
            self._sweep_logged = period
            (log.warning if period > configured else log.info)(
                "detect.sweep.period",
                scheduled=count,
                period_s=round(period),
                configured_s=round(configured),
                detail=self._sweep_note(count) or "the idle sweep keeps probe_interval_s",
            )

    @property
    def sweep_note(self) -> str | None:
        """One sentence while the sweep is stretched (for /readyz), else None."""
        return self._sweep_note(len(self._idle))

    def _sweep_note(self, credentials: int) -> str | None:
        configured = self.config.probe_interval_s
        if self.sweep_period_s <= configured:
            return None
        return (
            f"the idle sweep probes each of {credentials:,} credentials every "
            f"{human_duration(self.sweep_period_s)} instead of every {human_duration(configured)} (probe_interval_s): "
            f"probe_rate_per_s = {self.config.probe_rate_per_s:g} leaves it "
            f"{self.config.probe_rate_per_s * SWEEP_SHARE:g} probes/s after live evidence"
        )

    # ------------------------------------------------------------------------------------ errors

    async def on_error_event(self, cpa: str, event: ErrorEvent) -> CredentialVerdict | None:
        """One `errors` message: update the verdict now and start the confirming probe at once."""
        if not event.auth_index:
            log.warning("detect.errors.event_without_auth_index", cpa=cpa)
            return None
        if (event.code or "").strip() in NOT_CREDENTIAL_FAILURE_CODES:
            # CPA itself did not count it against the credential (request or transport at fault): not
            # evidence, and no probe either (a burst of them must not turn into a burst of probes).
            log.debug("detect.errors.not_about_the_credential", cpa=cpa, code=event.code)
            return None
        now = self.clock()
        key = (cpa, event.auth_index)
        record = self._records.get(key)
        if record is None:
            stand_in = credential_from_event(cpa, event)
            record = self._record(key, stand_in.ref, stand_in)
        record.stream = error_event_evidence(event, now)
        if self._decide(record, now, counts_as_observation=True):
            self._start_probe(key)
        return self._view(record)

    async def _consume_errors(self, cpa: str) -> None:
        client = self.clients[cpa]
        stream = ErrorStream(client)
        reported: str | None = None
        while True:
            try:
                async for event in stream.run():
                    try:
                        await self.on_error_event(cpa, event)
                    except Exception as exc:  # one bad event must not end the subscription
                        log.error("detect.errors.event_failed", cpa=cpa, error=type(exc).__name__)
            except (FeatureMissing, ManagementNotEnabled) as exc:
                log.warning("detect.errors.unavailable", cpa=cpa, problem=exc.sentence)
                return
            except KeyProblem as exc:
                # Never fight the key: the gate refuses locally until the key changes or a ban ends.
                if reported != exc.sentence:
                    log.warning("detect.errors.paused", cpa=cpa, problem=exc.sentence)
                    reported = exc.sentence
                await asyncio.sleep(60.0)
            except CPAError as exc:
                log.warning("detect.errors.stopped", cpa=cpa, problem=exc.sentence)
                await asyncio.sleep(30.0)

    # ------------------------------------------------------------------------------------ CPAMP

    async def poll_cpamp(self, source: CPAMPSource) -> int:
        """Fold one CPAMP's pending candidates and inspection results into the evidence; returns how many
        credentials have CPAMP findings that count."""
        now = self.clock()
        read = await source.fetch(now)
        if read is None:
            return 0  # nothing read: every previous finding stays
        return self._fold_cpamp(source.cpa, read)

    def _fold_cpamp(self, cpa: str, read: CPAMPRead) -> int:
        """Only what was re-read replaces findings: a partial candidate list (more pending than returned)
        or a failed inspection read leaves the other credentials' findings as they were."""
        now = self.clock()
        mine = [(k, r) for k, r in self._records.items() if k[0] == cpa and r.listed]
        by_index = {k[1]: k for k, _ in mine}
        by_name = {r.ref.name: k for k, r in mine}

        def owner(finding: CPAMPFinding) -> Key | None:
            if finding.auth_index and finding.auth_index in by_index:
                return by_index[finding.auth_index]
            return by_name.get(finding.file_name or "")

        candidates: dict[Key, list[CPAMPFinding]] = {}
        for finding in read.candidates or ():
            if (key := owner(finding)) is not None:
                candidates.setdefault(key, []).append(finding)
        inspection: dict[Key, list[CPAMPFinding]] = {}
        for finding in read.inspection or ():
            if (key := owner(finding)) is not None:
                inspection.setdefault(key, []).append(finding)
        counted = 0
        for key, record in mine:
            new_candidates = record.cpamp_candidates
            if read.candidates is not None and (key in candidates or read.candidates_complete):
                new_candidates = tuple(candidates.get(key, ()))
            new_inspection = record.cpamp_inspection
            inspected = key[1] in read.inspected or record.ref.name in read.inspected
            if read.inspection is not None and (key in inspection or inspected):
                found = inspection.get(key, [])
                if not new_candidates and all(f.positive for f in found):
                    found = []  # a lone "works" needs no memory (50,000 healthy accounts)
                new_inspection = tuple(found)
            if (new_candidates, new_inspection) == (record.cpamp_candidates, record.cpamp_inspection):
                counted += bool(record.cpamp)
                continue
            record.cpamp_candidates, record.cpamp_inspection = new_candidates, new_inspection
            if self._cpamp_recompute(record) and self._decide(record, now, counts_as_observation=True):
                self._start_probe(key)
            counted += bool(record.cpamp)
        return counted

    def _cpamp_recompute(self, record: _Record) -> bool:
        """Recompute which CPAMP findings still count; True when that changed (re-decide then, not on
        every poll: an unchanged set never re-decides nor probes again)."""
        floor = None
        if record.listing is not None and record.listing.code == "active":
            floor = record.listing.observed_at
        findings = [*record.cpamp_candidates, *record.cpamp_inspection]
        evidence, auto_disabled = current_evidence(findings, record.credential, floor)
        if (evidence, auto_disabled) == (record.cpamp, record.cpamp_auto_disabled):
            return False
        record.cpamp, record.cpamp_auto_disabled = evidence, auto_disabled
        return True

    # ------------------------------------------------------------------------------------ run

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def run(self, *, skip_first_cycle: bool = False) -> None:
        """Run every source until cancelled. `skip_first_cycle`: the caller just ran `cycle()` itself (the
        daemon does, before it declares readiness), so the poll loop starts with a wait."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._poll_loop(skip_first_cycle))
            if self.config.error_stream:
                for cpa in self.clients:
                    group.create_task(self._consume_errors(cpa))
            if self.probes_enabled:
                self._sweeping = True
                group.create_task(self._idle_loop())
            for source in self.cpamp_sources:
                group.create_task(self._cpamp_loop(source))

    async def _poll_loop(self, skip_first_cycle: bool = False) -> None:
        interval = self.config.poll_interval_s
        if skip_first_cycle:
            await asyncio.sleep(interval * self._rng.uniform(_POLL_JITTER_LOW, 1.0))
        while True:
            try:
                await self.cycle(views=False)
            except Exception as exc:  # never let one bad cycle end detection
                log.error("detect.cycle.failed", error=type(exc).__name__)
            # Jitter only downwards (90-100 % of the interval): instances do not poll CPA in lockstep,
            # and a change visible only to polling is still seen within one interval.
            await asyncio.sleep(interval * self._rng.uniform(_POLL_JITTER_LOW, 1.0))

    async def _idle_loop(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                await self.run_idle_probes()
            await asyncio.sleep(1.0)

    async def _cpamp_loop(self, source: CPAMPSource) -> None:
        while True:
            try:
                await self.poll_cpamp(source)
            except Exception as exc:
                log.error("detect.cpamp.failed", cpamp=source.name, error=type(exc).__name__)
            await asyncio.sleep(source.poll_interval_s * self._rng.uniform(0.9, 1.1))

    async def aclose(self) -> None:
        for task in [*self._in_flight.values(), *self._background]:
            task.cancel()
        await asyncio.gather(*self._in_flight.values(), *self._background, return_exceptions=True)


def _entries(count: int) -> str:
    return "entry" if count == 1 else "entries"


def needs_attention(view: CredentialVerdict, include_disabled: bool = False) -> bool:
    """A verdict an operator should look at (scan exit code 1)."""
    if view.credential is not None and view.credential.disabled and not include_disabled:
        return False
    return view.verdict.kind in (VerdictKind.NEEDS_REAUTH, VerdictKind.ACCOUNT_GONE, VerdictKind.SUSPECT)
