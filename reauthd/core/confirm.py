"""Confirming a failure before a person is paged: a small per-credential state machine, clock injected.

A `needs_reauth` (or `account_gone`) verdict is *confirmed* only by a probe that agrees, or — where the
provider has no usable probe, or the probe cannot decide — by the same evidence on two consecutive
observations (issue 3). Observations count only when at least `min_observation_gap_s` apart (one poll
interval): a burst of `errors` events about one failure is one observation, not two. Each
failure yields at most one `ConfirmedRevocation`, identified by a fingerprint of the credential, the
file's generation and the verdict kind, so flapping evidence never pages twice for the same failure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from reauthd.core.classify import INCONCLUSIVE_PROBE_RULES, decisive_rule, interpret, provider_name
from reauthd.core.model import Credential, CredentialRef, EvidenceSource, Verdict, VerdictKind
from reauthd.core.sanitize import mask_email

CONFIRMABLE = (VerdictKind.NEEDS_REAUTH, VerdictKind.ACCOUNT_GONE)
_FAILURES = (*CONFIRMABLE, VerdictKind.SUSPECT)
_AGREEING_SOURCES = (EvidenceSource.PROBE, EvidenceSource.MANUAL)
# Fingerprints of past events kept per credential; a handful is enough to stop flapping.
_EMITTED_KEEP = 8


@dataclass(frozen=True, slots=True)
class ConfirmPolicy:
    has_probe: bool  # the provider has a management-side probe (detect/probes.py)
    include_disabled: bool = False  # [detect] include_disabled
    probe_retry_s: float = 300.0  # ask again for a confirming probe after an inconclusive one
    observations_needed: int = 2
    # Observations closer together than this count once. The engine passes its poll interval (less the
    # poll loop's jitter): "two consecutive observations" are two poll cycles, not two `errors` events
    # of one burst of failing requests (a transient refresh failure records the same status as a dead
    # refresh token, contract §2.3 A3; only time tells them apart). The default matches the default
    # 60 s poll interval.
    min_observation_gap_s: float = 54.0


@dataclass(frozen=True, slots=True)
class ConfirmedRevocation:
    """One confirmed failure, emitted once. `kind` is needs_reauth or account_gone (a login will not help)."""

    id: str
    ref: CredentialRef
    provider: str
    kind: VerdictKind
    verdict: Verdict
    account: str  # masked email, or "" when unknown
    retirable: bool  # False for runtime_only credentials: there is no file to retire
    confirmed_at: datetime


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict  # `confirmed` set when the failure is confirmed
    probe: bool = False  # run a confirming probe now
    event: ConfirmedRevocation | None = None  # new: hand to the task layer


@dataclass(frozen=True, slots=True)
class Confirmation:
    """The state of one credential between observations. Serialisable with to_dict/from_dict."""

    failure: str | None = None  # "<kind>:<rule>" of the current failure, None when healthy
    observations: int = 0  # consecutive observations of that failure, at least the policy's gap apart
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    counted_at: datetime | None = None  # the last observation that counted
    probe_requested_at: datetime | None = None
    confirmed_at: datetime | None = None
    emitted: tuple[str, ...] = field(default_factory=tuple)
    previous_failure: str | None = None  # the failure that cleared last (flap detection)

    def to_dict(self) -> dict[str, Any]:
        return {
            "failure": self.failure,
            "observations": self.observations,
            "first_seen": _iso(self.first_seen),
            "last_seen": _iso(self.last_seen),
            "counted_at": _iso(self.counted_at),
            "probe_requested_at": _iso(self.probe_requested_at),
            "confirmed_at": _iso(self.confirmed_at),
            "emitted": list(self.emitted),
            "previous_failure": self.previous_failure,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Confirmation:
        failure = data.get("failure")
        emitted = data.get("emitted") or []
        previous = data.get("previous_failure")
        return cls(
            failure=failure if isinstance(failure, str) else None,
            observations=int(data.get("observations") or 0),
            first_seen=_parse(data.get("first_seen")),
            last_seen=_parse(data.get("last_seen")),
            # State saved before `counted_at` existed: its last observation is the best estimate.
            counted_at=_parse(data.get("counted_at")) or _parse(data.get("last_seen")),
            probe_requested_at=_parse(data.get("probe_requested_at")),
            confirmed_at=_parse(data.get("confirmed_at")),
            emitted=tuple(str(x) for x in emitted if isinstance(x, str))[-_EMITTED_KEEP:],
            previous_failure=previous if isinstance(previous, str) else None,
        )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def failure_key(verdict: Verdict, provider: str) -> str | None:
    """Names "this failure": the verdict kind plus the rule that decided it (same rule = same evidence)."""
    if verdict.kind not in _FAILURES:
        return None
    return f"{verdict.kind.value}:{decisive_rule(verdict, provider)}"


def generation(credential: Credential | None) -> str:
    """Which write of the file this is: its `modtime` (os.Stat, auth_files.go buildAuthFileEntryLocked).

    A new login rewrites the file, so a failure after a re-login is a new failure (a new event, a new
    task). A flap of the same failure does not write it, and neither does a CPA restart. Never
    `last_refresh`: it is runtime state (contract §13), absent after a restart (the same failure would page
    again) and copied unchanged by an in-place re-login (a new failure would look like the old one).
    A successful refresh also rewrites the file, but a credential that refreshed worked in between."""
    if credential is None or credential.modtime is None:
        return ""
    return credential.modtime.isoformat()


def event_id(ref: CredentialRef, credential: Credential | None, kind: VerdictKind) -> str:
    seed = "\x1f".join((ref.cpa, ref.auth_index, ref.name, generation(credential), kind.value))
    return hashlib.sha256(seed.encode()).hexdigest()[:16]


def _probe_agrees(verdict: Verdict, provider: str) -> bool:
    for evidence in verdict.evidence:
        if evidence.source in _AGREEING_SOURCES:
            signal = interpret(evidence, provider)
            if signal is not None and signal.kind in CONFIRMABLE:
                return True
    return False


def _persistent_auth_failure(verdict: Verdict, provider: str) -> bool:
    """A bare authentication failure CPA recorded from real traffic (not a 403: CPA refreshes only on a
    401, and a 403 may be a region block). For a provider without a probe, this seen on two consecutive
    observations is the confirmation issue 3 asks for: CPA already refreshed once before recording it
    (contract §2.3 A2-3), and nothing else can test the credential."""
    if verdict.kind is not VerdictKind.SUSPECT or decisive_rule(verdict, provider) != "auth_like":
        return False
    first = verdict.evidence[0]
    return first.source in (EvidenceSource.LISTING, EvidenceSource.ERROR_STREAM) and first.http_status != 403


def _refused_twice(verdict: Verdict, provider: str) -> Verdict:
    who = provider_name(provider)
    return Verdict(
        VerdictKind.NEEDS_REAUTH,
        f"{who} kept refusing the credential on two checks a poll cycle apart, after CPA's own refresh "
        "attempt; a new login is needed",
        verdict.evidence,
    )


def _probe_inconclusive(verdict: Verdict, provider: str) -> bool:
    """The probe answered but could not decide (expired access token, nothing to probe with, a 403 that
    is not about the login)."""
    for evidence in verdict.evidence:
        if evidence.source is EvidenceSource.PROBE:
            signal = interpret(evidence, provider)
            if signal is not None and signal.rule in INCONCLUSIVE_PROBE_RULES:
                return True
    return False


def observe(
    state: Confirmation,
    ref: CredentialRef,
    credential: Credential | None,
    verdict: Verdict,
    now: datetime,
    policy: ConfirmPolicy,
    *,
    counts_as_observation: bool = True,
) -> tuple[Confirmation, Decision]:
    """Advance one credential's confirmation by one verdict.

    `counts_as_observation` is True for a poll cycle or an error-stream event, False when the caller only
    re-classifies (e.g. after a probe answered): only fresh observations count toward "two in a row",
    and only when `policy.min_observation_gap_s` after the last one that counted.
    """
    provider = credential.provider if credential is not None else ""
    key = failure_key(verdict, provider)
    if key is None:
        # Healthy, quota, transient or unknown: the failure is over. Keep the fingerprints of past events
        # so a flap back to the same failure of the same login does not page again.
        # The last probe time is kept too: a flapping failure does not earn a probe per flap.
        if state.failure is None:
            return state, Decision(verdict)
        cleared = Confirmation(
            emitted=state.emitted,
            previous_failure=state.failure,
            probe_requested_at=state.probe_requested_at,
        )
        return cleared, Decision(verdict)

    if credential is not None and credential.disabled and not policy.include_disabled:
        # A person disabled it on purpose: not raised, not probed (issue 3).
        return state, Decision(verdict)

    if key != state.failure and not counts_as_observation and state.failure is not None:
        # A probe (or other re-classification) named the failure already being observed more precisely:
        # the observations of it so far still count, and the probe just asked for is not asked again.
        state = replace(state, failure=key)
    elif key != state.failure:
        state = Confirmation(
            failure=key,
            observations=1 if counts_as_observation else 0,
            first_seen=now,
            last_seen=now,
            counted_at=now if counts_as_observation else None,
            emitted=state.emitted,
            probe_requested_at=state.probe_requested_at if key == state.previous_failure else None,
        )
    elif counts_as_observation:
        spaced = (
            state.counted_at is None
            or (now - state.counted_at).total_seconds() >= policy.min_observation_gap_s
        )
        if spaced:
            state = replace(state, observations=state.observations + 1, last_seen=now, counted_at=now)
        else:
            state = replace(state, last_seen=now)

    # Confirmed by an agreeing probe, or by repetition where no probe can decide.
    repeated = state.observations >= policy.observations_needed
    no_probe_can_decide = not policy.has_probe or _probe_inconclusive(verdict, provider)
    if repeated and not policy.has_probe and _persistent_auth_failure(verdict, provider):
        verdict = _refused_twice(verdict, provider)
    confirmed = verdict.kind in CONFIRMABLE and (
        _probe_agrees(verdict, provider) or (no_probe_can_decide and repeated)
    )

    if not confirmed:
        want_probe = policy.has_probe and (
            state.probe_requested_at is None
            or (now - state.probe_requested_at).total_seconds() >= policy.probe_retry_s
        )
        if want_probe:
            state = replace(state, probe_requested_at=now)
        return state, Decision(verdict, probe=want_probe)

    confirmed_verdict = replace(verdict, confirmed=True)
    ident = event_id(ref, credential, verdict.kind)
    if ident in state.emitted:
        return replace(state, confirmed_at=state.confirmed_at or now), Decision(confirmed_verdict)
    state = replace(state, confirmed_at=now, emitted=(*state.emitted, ident)[-_EMITTED_KEEP:])
    event = ConfirmedRevocation(
        id=ident,
        ref=ref,
        provider=provider,
        kind=verdict.kind,
        verdict=confirmed_verdict,
        account=mask_email(credential.email) if credential is not None else "",
        retirable=credential is not None and not credential.runtime_only,
        confirmed_at=now,
    )
    return state, Decision(confirmed_verdict, event=event)
