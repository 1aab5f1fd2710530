""" "Two consecutive observations" are two poll cycles, not a burst of `errors` events (issue 3; contract
§2.3 A3: a transient refresh failure records the same status as a dead refresh token)."""

from __future__ import annotations

from datetime import timedelta

from reauthd.core.confirm import Confirmation, ConfirmPolicy
from reauthd.core.model import VerdictKind
from tests.core.test_classify import CLAUDE_ORG_403, CODEX_EXPIRED, CODEX_REGION_403, KIMI_EXPIRED
from tests.core.test_confirm import T0, L, P, Run, S, cred, ev

RESHAPED_EXPIRED = (
    '{"error":{"message":"Provided authentication token is expired. Please try signing in again.",'
    '"type":"authentication_error","code":"auth_unavailable"}}'
)


def at(seconds: float):
    return T0 + timedelta(seconds=seconds)


def test_a_burst_of_stream_events_with_an_inconclusive_probe_does_not_page() -> None:
    """Two failing Codex requests 0.3 s apart on an expired token, the probe cannot decide: not yet."""
    run = Run(cred("codex"), ConfirmPolicy(has_probe=True, min_observation_gap_s=54))
    first = ev(S, RESHAPED_EXPIRED, 401, at=at(0))
    assert run.step([first], at(0)).probe
    probe = ev(P, CODEX_EXPIRED, 401, at=at(0.2), token_expired=True)
    assert not run.step([first, probe], at(0.2), counts=False).verdict.confirmed
    second = ev(S, RESHAPED_EXPIRED, 401, at=at(0.3))
    burst = run.step([second, probe], at(0.3))
    assert burst.verdict.kind is VerdictKind.NEEDS_REAUTH and not burst.verdict.confirmed
    assert run.events == []
    # Still failing one poll interval later: CPA had every chance to refresh it.
    polled = run.step([ev(L, RESHAPED_EXPIRED, code="error", at=at(60)), probe], at(60))
    assert polled.verdict.confirmed and polled.event is not None


def test_without_a_probe_a_burst_counts_once() -> None:
    run = Run(cred("vertex"), ConfirmPolicy(has_probe=False, min_observation_gap_s=54))
    bad = ev(S, "invalid_grant", 400)
    for second in (0, 0.5, 1, 20, 53):
        assert run.step([bad], at(second)).event is None
    assert run.step([bad], at(54)).event is not None


def test_kimi_refresh_failure_is_confirmed_on_the_next_poll() -> None:
    """The listing shows Kimi's auth failure, the probe finds the token expired: the probe only names the
    failure more precisely, so the first poll still counts and the second confirms."""
    run = Run(cred("kimi"), ConfirmPolicy(has_probe=True, min_observation_gap_s=54))
    listing = ev(L, KIMI_EXPIRED, code="error", at=at(0))
    first = run.step([listing], at(0))
    assert first.verdict.kind is VerdictKind.SUSPECT and first.probe
    probe = ev(P, KIMI_EXPIRED, 401, at=at(1), token_expired=True)
    named = run.step([listing, probe], at(1), counts=False)
    assert named.verdict.kind is VerdictKind.NEEDS_REAUTH and not named.verdict.confirmed
    assert not named.probe  # the probe just answered: not asked again at once
    done = run.step([listing, probe], at(60))
    assert done.event is not None
    assert "could not refresh" in done.event.verdict.reason


def test_a_probe_403_that_is_not_about_the_login_never_pages_on_its_own() -> None:
    for provider, body in (("codex", CODEX_REGION_403), ("claude", CLAUDE_ORG_403)):
        run = Run(cred(provider), ConfirmPolicy(has_probe=True, min_observation_gap_s=54))
        for minute in range(5):
            now = at(60 * minute)
            run.step([ev(L, "", code="active", at=at(0)), ev(P, body, 403, at=now, token_expired=False)], now)
        assert run.events == []
        assert run.state.failure == "suspect:probe_403"


def test_payment_required_waits_for_the_probe() -> None:
    run = Run(cred("claude"), ConfirmPolicy(has_probe=True, min_observation_gap_s=54))
    listing = ev(L, "payment_required", code="error", at=at(0))
    assert run.step([listing], at(0)).probe
    for minute in range(1, 4):
        assert run.step([listing], at(60 * minute)).event is None
    revoked = (
        '{"type":"error","error":{"type":"permission_error","message":"OAuth token has been revoked. '
        'Please obtain a new token."}}'
    )
    probe = ev(P, revoked, 403, at=at(200), token_expired=False)
    assert run.step([listing, probe], at(200), counts=False).event is not None


def test_saved_state_without_counted_at_uses_last_seen() -> None:
    state = Confirmation.from_dict(
        {"failure": "needs_reauth:x", "observations": 1, "last_seen": at(0).isoformat()}
    )
    assert state.counted_at == at(0)
    assert Confirmation.from_dict(state.to_dict()) == state
