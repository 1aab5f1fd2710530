"""Confirmation before paging: agreeing probe or two observations, one event per failure, state round-trips."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from reauthd.core.classify import PROBE_NO_TOKEN, classify
from reauthd.core.confirm import Confirmation, ConfirmPolicy, Decision, generation, observe
from reauthd.core.model import Credential, Evidence, EvidenceSource, VerdictKind

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
REVOKED = '{"error":{"message":"Your authentication token has been invalidated.","type":"authentication_error","code":"auth_unavailable"}}'
S, L, P = EvidenceSource.ERROR_STREAM, EvidenceSource.LISTING, EvidenceSource.PROBE


def cred(provider: str = "codex", **kw: object) -> Credential:
    base: dict[str, object] = {
        "cpa": "main",
        "name": f"{provider}-alice.json",
        "auth_index": "0123456789abcdef",
        "provider": provider,
        "status": "error",
        "email": "alice@example.com",
        "last_refresh": T0 - timedelta(days=1),
        "modtime": T0 - timedelta(days=3),
    }
    base.update(kw)
    return Credential(**base)  # type: ignore[arg-type]


def ev(
    source: EvidenceSource, text: str = "", status: int | None = None, at: datetime = T0, **kw: object
) -> Evidence:
    return Evidence(source=source, observed_at=at, http_status=status, text=text, **kw)  # type: ignore[arg-type]


class Run:
    """Feeds verdicts through `observe`, collecting decisions, like the engine does."""

    def __init__(self, credential: Credential, policy: ConfirmPolicy) -> None:
        self.credential = credential
        self.policy = policy
        self.state = Confirmation()
        self.events: list[str] = []

    def step(self, evidence: list[Evidence], now: datetime, *, counts: bool = True) -> Decision:
        verdict = classify(self.credential, evidence, now)
        self.state, decision = observe(
            self.state,
            self.credential.ref,
            self.credential,
            verdict,
            now,
            self.policy,
            counts_as_observation=counts,
        )
        if decision.event is not None:
            self.events.append(decision.event.id)
        # The state survives a restart of the daemon at every step.
        self.state = Confirmation.from_dict(json.loads(json.dumps(self.state.to_dict())))
        return decision


def test_needs_reauth_waits_for_an_agreeing_probe() -> None:
    run = Run(cred("codex"), ConfirmPolicy(has_probe=True))
    stream = ev(S, REVOKED, 401)
    first = run.step([stream], T0)
    assert first.verdict.kind is VerdictKind.NEEDS_REAUTH and not first.verdict.confirmed
    assert first.probe and first.event is None
    # Repetition does not confirm where a probe exists.
    again = run.step([stream], T0 + timedelta(seconds=60))
    assert not again.verdict.confirmed and not again.probe  # probe already asked for
    probe = ev(P, '{"detail":"Unauthorized"}', 401, at=T0 + timedelta(seconds=61), token_expired=False)
    done = run.step([stream, probe], T0 + timedelta(seconds=61), counts=False)
    assert done.verdict.confirmed and done.event is not None
    assert done.event.kind is VerdictKind.NEEDS_REAUTH
    assert done.event.account == "a***@example.com"
    assert done.event.retirable
    assert run.events == [done.event.id]


def test_a_healthy_probe_clears_the_suspicion() -> None:
    run = Run(cred("claude"), ConfirmPolicy(has_probe=True))
    stream = ev(S, "", 401)
    assert run.step([stream], T0).probe
    ok = run.step(
        [stream, ev(P, "{}", 200, at=T0 + timedelta(seconds=1))], T0 + timedelta(seconds=1), counts=False
    )
    assert ok.verdict.kind is VerdictKind.HEALTHY
    assert run.state.failure is None and run.events == []


def test_a_bare_401_without_a_probe_pages_once_after_two_polls() -> None:
    # Session 1 left a bare 401 a suspect forever where no probe exists; then an Antigravity or plugin
    # credential whose refresh token died (CPA records the upstream's 401 body after its one refresh,
    # contract §2.3 A2-4) was never raised. Issue 3: no probe -> two consecutive observations confirm.
    run = Run(cred("vertex"), ConfirmPolicy(has_probe=False))
    decisions = [run.step([ev(S, "", 401)], T0 + timedelta(minutes=minute)) for minute in range(5)]
    assert decisions[0].verdict.kind is VerdictKind.SUSPECT and not decisions[0].verdict.confirmed
    assert all(d.verdict.kind is VerdictKind.NEEDS_REAUTH and d.verdict.confirmed for d in decisions[1:])
    assert len(run.events) == 1 and not any(d.probe for d in decisions)


def test_without_a_probe_two_consecutive_observations_confirm() -> None:
    run = Run(cred("vertex"), ConfirmPolicy(has_probe=False))
    listing = ev(L, "invalid_grant", code="error")
    first = run.step([listing], T0)
    assert not first.verdict.confirmed and first.event is None
    # Re-classifying without a new observation does not count.
    assert run.step([listing], T0 + timedelta(seconds=1), counts=False).event is None
    second = run.step([listing], T0 + timedelta(seconds=60))
    assert second.verdict.confirmed and second.event is not None
    third = run.step([listing], T0 + timedelta(seconds=120))
    assert third.verdict.confirmed and third.event is None
    assert len(run.events) == 1


def test_an_inconclusive_probe_falls_back_to_repetition() -> None:
    run = Run(cred("codex"), ConfirmPolicy(has_probe=True, probe_retry_s=300))
    listing = ev(L, "unauthorized", code="error")
    assert run.step([listing], T0).probe
    expired = ev(P, "", 401, at=T0 + timedelta(seconds=2), token_expired=True)
    after_probe = run.step([listing, expired], T0 + timedelta(seconds=2), counts=False)
    assert not after_probe.verdict.confirmed
    second = run.step([listing, expired], T0 + timedelta(seconds=60))
    assert second.verdict.confirmed and second.event is not None


def test_not_probeable_falls_back_to_repetition() -> None:
    run = Run(cred("vertex"), ConfirmPolicy(has_probe=True))
    listing = ev(L, "invalid_grant", code="error")
    nothing = ev(P, "auth token not found", 400, at=T0 + timedelta(seconds=1), code=PROBE_NO_TOKEN)
    run.step([listing], T0)
    assert run.step([listing, nothing], T0 + timedelta(seconds=60)).event is not None


def test_flapping_never_pages_twice_for_the_same_failure() -> None:
    run = Run(cred("vertex"), ConfirmPolicy(has_probe=False))
    bad = ev(L, "invalid_grant", code="error")
    for cycle in range(6):
        now = T0 + timedelta(minutes=3 * cycle)
        run.step([bad], now)
        run.step([bad], now + timedelta(seconds=60))
        healthy = run.step(
            [ev(L, "", code="active", at=now + timedelta(seconds=120))], now + timedelta(seconds=120)
        )
        assert healthy.verdict.kind is VerdictKind.HEALTHY
    assert len(run.events) == 1


def test_a_new_login_that_fails_again_is_a_new_failure() -> None:
    run = Run(cred("vertex"), ConfirmPolicy(has_probe=False))
    bad = ev(L, "invalid_grant", code="error")
    run.step([bad], T0)
    run.step([bad], T0 + timedelta(minutes=1))
    # §13: the re-login rewrites the file (modtime) but the reload copies the old last_refresh
    run.credential = cred("vertex", modtime=T0 + timedelta(hours=1))
    run.step([ev(L, "", code="active", at=T0 + timedelta(hours=1))], T0 + timedelta(hours=1))
    run.step([bad], T0 + timedelta(hours=2))
    run.step([bad], T0 + timedelta(hours=2, minutes=1))
    assert len(run.events) == 2 and run.events[0] != run.events[1]


def test_a_cpa_restart_is_not_a_new_failure() -> None:
    """§13: after a CPA restart no entry has last_refresh (runtime state); the file is the same, so the
    same failure seen again after the restart is the failure already paged."""
    run = Run(cred("vertex"), ConfirmPolicy(has_probe=False))
    bad = ev(L, "invalid_grant", code="error")
    run.step([bad], T0)
    run.step([bad], T0 + timedelta(minutes=1))
    assert len(run.events) == 1
    run.credential = cred("vertex", last_refresh=None, status="active")
    run.step([ev(L, "", code="active", at=T0 + timedelta(minutes=2))], T0 + timedelta(minutes=2))
    run.credential = cred("vertex", last_refresh=None)
    run.step([bad], T0 + timedelta(minutes=3))
    run.step([bad], T0 + timedelta(minutes=4))
    assert len(run.events) == 1


def test_a_background_refresh_time_is_not_a_new_login() -> None:
    """generation() reads the file's write, never the runtime refresh time."""
    a = cred("claude", last_refresh=T0 - timedelta(hours=4))
    assert generation(a) == generation(replace(a, last_refresh=None)) != generation(replace(a, modtime=T0))


def test_flapping_suspect_gets_one_probe_per_retry_window() -> None:
    run = Run(cred("claude"), ConfirmPolicy(has_probe=True, probe_retry_s=300))
    probes = 0
    for second in range(0, 240, 20):
        now = T0 + timedelta(seconds=second)
        probes += run.step([ev(S, "", 401, at=now)], now).probe
        run.step([ev(S, "", 200, at=now + timedelta(seconds=5))], now + timedelta(seconds=5))
    assert probes == 1


@pytest.mark.parametrize("include_disabled", [False, True])
def test_disabled_credentials_are_raised_only_when_configured(include_disabled: bool) -> None:
    run = Run(
        cred("vertex", disabled=True, status="disabled"),
        ConfirmPolicy(False, include_disabled=include_disabled),
    )
    bad = ev(S, "invalid_grant", 400)
    run.step([bad], T0)
    run.step([bad], T0 + timedelta(minutes=1))
    assert len(run.events) == (1 if include_disabled else 0)


def test_runtime_only_is_reported_but_not_retirable() -> None:
    run = Run(cred("codex", runtime_only=True), ConfirmPolicy(has_probe=True))
    decision = run.step([ev(S, REVOKED, 401), ev(P, "", 401, token_expired=False)], T0)
    assert decision.event is not None and decision.event.retirable is False


def test_account_gone_is_confirmed_and_says_so() -> None:
    run = Run(cred("codex"), ConfirmPolicy(has_probe=True))
    decision = run.step([ev(P, '{"detail":{"code":"deactivated_workspace"}}', 402)], T0)
    assert decision.event is not None and decision.event.kind is VerdictKind.ACCOUNT_GONE
    assert "will not help" in decision.event.verdict.reason


def test_from_dict_tolerates_garbage() -> None:
    state = Confirmation.from_dict({"failure": 3, "first_seen": "not a date", "emitted": ["a", 5, None]})
    assert state == Confirmation(emitted=("a",))


GOOGLE_401 = '{"error":{"code":401,"message":"Request had invalid authentication credentials.","status":"UNAUTHENTICATED"}}'


@pytest.mark.parametrize(
    ("provider", "has_probe", "status", "gap_s", "pages"),
    [
        ("antigravity", False, 401, 60, True),  # no probe: the same failure two polls in a row
        ("antigravity", False, None, 60, True),  # auth-like text without a status
        ("antigravity", False, 401, 10, False),  # one burst is one observation
        ("antigravity", False, 403, 60, False),  # CPA refreshes only on a 401; a 403 may be a region block
        ("antigravity", True, 401, 60, False),  # a configured probe decides instead
    ],
)
def test_a_bare_auth_failure_without_a_probe_is_confirmed_by_two_polls(
    provider: str, has_probe: bool, status: int | None, gap_s: float, pages: bool
) -> None:
    run = Run(cred(provider), ConfirmPolicy(has_probe=has_probe))
    first = run.step([ev(L, GOOGLE_401, status, code="error")], T0)
    assert first.verdict.kind is VerdictKind.SUSPECT and not first.verdict.confirmed
    later = T0 + timedelta(seconds=gap_s)
    second = run.step([ev(L, GOOGLE_401, status, at=later, code="error")], later)
    assert (second.event is not None) is pages
    if pages:
        assert second.verdict.kind is VerdictKind.NEEDS_REAUTH and second.verdict.confirmed
        assert "Antigravity kept refusing the credential" in second.verdict.reason
        third = T0 + timedelta(seconds=2 * gap_s)
        again = run.step([ev(L, GOOGLE_401, status, at=third, code="error")], third)
        assert again.event is None  # once per failure
