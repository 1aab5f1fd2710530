"""A real request's authentication failure plus a probe that found the access token past `expired`: CPA
refreshed once and failed (contract §2.3 A2-3, §5, §8), whatever words the provider used."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from reauthd.core.classify import REFRESH_FAILED, classify, decisive_rule
from reauthd.core.model import Evidence, EvidenceSource, VerdictKind
from tests.core.test_classify import (
    CLAUDE_BAD_BEARER,
    CLAUDE_ORG_403,
    CODEX_RESHAPED,
    KIMI_EXPIRED,
    VERTEX_KEY_DELETED,
    XAI_INCORRECT_KEY,
    cred,
    ev,
)

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
EARLIER, LATER = NOW - timedelta(minutes=1), NOW
K = VerdictKind
L, S, P = EvidenceSource.LISTING, EvidenceSource.ERROR_STREAM, EvidenceSource.PROBE


def expired_probe(text: str, status: int = 401, at: datetime = LATER) -> Evidence:
    return ev(P, text, status, token_expired=True, at=at)


@pytest.mark.parametrize(
    ("provider", "failure", "probe_text"),
    [
        ("kimi", ev(L, KIMI_EXPIRED, code="error", at=EARLIER), KIMI_EXPIRED),
        ("kimi", ev(S, KIMI_EXPIRED, 401, at=EARLIER), KIMI_EXPIRED),
        ("xai", ev(L, XAI_INCORRECT_KEY, code="error", at=EARLIER), XAI_INCORRECT_KEY),
        ("xai", ev(S, XAI_INCORRECT_KEY, 401, at=EARLIER), XAI_INCORRECT_KEY),
        ("claude", ev(S, CLAUDE_BAD_BEARER, 401, at=EARLIER), CLAUDE_BAD_BEARER),
        # the order does not matter: a failure after the probe found the token expired is the same story
        ("kimi", ev(L, KIMI_EXPIRED, code="error", at=LATER + timedelta(seconds=5)), KIMI_EXPIRED),
    ],
)
def test_auth_failure_on_an_expired_token_needs_a_new_login(
    provider: str, failure: Evidence, probe_text: str
) -> None:
    verdict = classify(cred(provider), [failure, expired_probe(probe_text)], NOW)
    assert verdict.kind is K.NEEDS_REAUTH and not verdict.confirmed
    assert verdict.reason.endswith("access token expired and CPA could not refresh it; a new login is needed")
    assert decisive_rule(verdict, provider) == REFRESH_FAILED
    assert verdict.evidence[0].source is failure.source  # the failure names it, the probe supports it
    assert verdict.evidence[1].source is P


@pytest.mark.parametrize(
    ("provider", "evidence"),
    [
        # the probe alone: /api-call never refreshes, CPA may still (§5)
        ("kimi", [expired_probe(KIMI_EXPIRED)]),
        # a 403 is never refreshed by CPA (§2.3 A2): nothing says a refresh failed
        ("claude", [ev(S, CLAUDE_ORG_403, 403, at=EARLIER), expired_probe(CLAUDE_ORG_403, 403)]),
        ("claude", [ev(L, CLAUDE_ORG_403, code="error", at=EARLIER), expired_probe(CLAUDE_ORG_403, 403)]),
        # a 500 with an auth word in it is not an authentication failure
        ("kimi", [ev(S, "upstream auth service failed", 500, at=EARLIER), expired_probe(KIMI_EXPIRED)]),
    ],
)
def test_no_refresh_failure_without_both_halves(provider: str, evidence: list[Evidence]) -> None:
    verdict = classify(cred(provider), evidence, NOW)
    assert verdict.kind is not K.NEEDS_REAUTH


def test_a_newer_success_still_wins() -> None:
    ok = ev(P, "{}", 200, at=LATER + timedelta(minutes=1))
    verdict = classify(
        cred("kimi"), [ev(L, KIMI_EXPIRED, code="error", at=EARLIER), expired_probe(KIMI_EXPIRED), ok], NOW
    )
    assert verdict.kind is K.HEALTHY


def test_stronger_wording_keeps_its_own_rule() -> None:
    verdict = classify(cred("codex"), [ev(S, CODEX_RESHAPED, 401, at=EARLIER), expired_probe("")], NOW)
    assert verdict.kind is K.NEEDS_REAUTH
    assert decisive_rule(verdict, "codex") == "invalidated"


def test_vertex_reason_speaks_of_the_service_account_key() -> None:
    verdict = classify(cred("vertex"), [ev(L, VERTEX_KEY_DELETED, code="error")], NOW)
    assert verdict.kind is K.NEEDS_REAUTH
    assert "service-account key" in verdict.reason and "refresh token" not in verdict.reason
    codex = classify(cred("codex"), [ev(L, "invalid_grant", code="error")], NOW)
    assert "refresh token" in codex.reason
