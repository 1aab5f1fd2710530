"""Causes beside the verdict (issue 14 item 1): real upstream bodies → classify → cause → advice."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from reauthd.core.causes import (
    HINT_TOKEN_INVALIDATED,
    OPERATOR_CAUSES,
    RELOGIN_CAUSES,
    Cause,
    advice,
    cause_of,
    explain,
    hint_of,
    task_advice,
)
from reauthd.core.classify import classify
from reauthd.core.model import Evidence, EvidenceSource, ReauthTask, TaskState, Verdict, VerdictKind
from tests.core.test_classify import (
    CLAUDE_EXPIRED,
    CLAUDE_REVOKED,
    CLOUDFLARE_PAGE,
    CODEX_DEACTIVATED,
    CODEX_REGION_403,
    CODEX_USAGE_LIMIT,
    OPENAI_ACCOUNT_DEACTIVATED,
    REFRESH_REUSED,
    VERTEX_KEY_DELETED,
    XAI_BAD_CREDENTIALS,
    cred,
)

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
L, S, P = EvidenceSource.LISTING, EvidenceSource.ERROR_STREAM, EvidenceSource.PROBE

# Codex's 401 after CPA's reshaping (contract §2.3 A1, §9): the upstream code token_invalidated is dropped.
CODEX_RESHAPED = (
    '{"error":{"message":"Your authentication token has been invalidated. Please try signing in again.",'
    '"type":"authentication_error","code":"auth_unavailable"}}'
)
# The raw upstream body (CPA issue #3654).
CODEX_RAW_INVALIDATED = (
    '{"error":{"message":"Your authentication token has been invalidated. Please try signing in again.",'
    '"type":"invalid_request_error","code":"token_invalidated","param":null},"status":401}'
)
# CPA's refresh error for a reused refresh token (internal/auth/codex/openai_auth.go: non-retryable).
CODEX_REFRESH_REUSED_AFTER_3 = (
    'token refresh failed with status 401: {"error":{"message":"Your refresh token has already been used to '
    'generate a new access token. Please try signing in again.","type":"invalid_request_error","param":null,'
    '"code":"refresh_token_reused"}}'
)
ANTHROPIC_ORG_DISABLED = (
    '{"type":"error","error":{"type":"permission_error","message":"This organization has been disabled."}}'
)
ANTHROPIC_CREDIT = (
    '{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to '
    'access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."}}'
)
GEMINI_LOCATION = (
    '{"error":{"code":400,"message":"User location is not supported for the API use.",'
    '"status":"FAILED_PRECONDITION"}}'
)


def ev(source: EvidenceSource, text: str, status: int | None = None, code: str | None = None) -> Evidence:
    return Evidence(source=source, observed_at=NOW, http_status=status, text=text, code=code)


# (provider, evidence, cause, re-login link?, operator message?)
CASES = [
    ("codex", ev(L, CODEX_RESHAPED, code="error"), Cause.REVOKED, True, False),
    ("codex", ev(S, CODEX_RAW_INVALIDATED, 401), Cause.REVOKED, True, False),
    ("claude", ev(L, CLAUDE_REVOKED, code="error"), Cause.REVOKED, True, False),
    ("claude", ev(L, CLAUDE_EXPIRED, code="error"), Cause.REVOKED, True, False),
    ("codex", ev(L, "invalid_grant", code="error"), Cause.REVOKED, True, False),
    ("xai", ev(L, XAI_BAD_CREDENTIALS, code="error"), Cause.REVOKED, True, False),
    ("vertex", ev(S, VERTEX_KEY_DELETED, 500), Cause.REVOKED, True, False),
    ("codex", ev(S, REFRESH_REUSED, 401), Cause.REFRESH_TOKEN_REUSED, True, False),
    ("codex", ev(L, CODEX_REFRESH_REUSED_AFTER_3, code="error"), Cause.REFRESH_TOKEN_REUSED, True, False),
    ("codex", ev(L, CODEX_DEACTIVATED, code="error"), Cause.ACCOUNT_DEACTIVATED, False, True),
    ("codex", ev(S, OPENAI_ACCOUNT_DEACTIVATED, 401), Cause.ACCOUNT_DEACTIVATED, False, True),
    ("claude", ev(S, ANTHROPIC_ORG_DISABLED, 403), Cause.ACCOUNT_DEACTIVATED, False, True),
    ("codex", ev(S, CODEX_REGION_403, 403), Cause.REGION_BLOCKED, False, True),
    ("codex", ev(P, CODEX_REGION_403, 403), Cause.REGION_BLOCKED, False, True),
    ("codex", ev(L, "cloudflare challenge", code="error"), Cause.REGION_BLOCKED, False, True),
    ("codex", ev(S, CLOUDFLARE_PAGE, 403), Cause.REGION_BLOCKED, False, True),
    ("antigravity", ev(S, GEMINI_LOCATION, 400), Cause.REGION_BLOCKED, False, True),
    ("codex", ev(S, "payment_required", 402), Cause.PAYMENT, False, True),
    ("claude", ev(S, ANTHROPIC_CREDIT, 400), Cause.PAYMENT, False, True),
    ("codex", ev(L, CODEX_USAGE_LIMIT, code="error"), Cause.QUOTA, False, False),
    ("codex", ev(L, "quota exhausted", code="error"), Cause.QUOTA, False, False),
    ("codex", ev(L, "transient upstream error", code="error"), Cause.TRANSIENT, False, False),
    # CPA writes payment_required for a 402 *or* a 403 on the no-model path (§2.3-5): not yet a payment.
    ("claude", ev(L, "payment_required", code="error"), Cause.CHECKING, False, False),
    ("codex", ev(L, "something odd happened", code="error"), Cause.UNKNOWN, False, False),
    ("codex", ev(L, "", code="active"), Cause.NONE, False, False),
]


@pytest.mark.parametrize(("provider", "evidence", "cause", "relogin", "operator"), CASES)
def test_cause_from_real_bodies(
    provider: str, evidence: Evidence, cause: Cause, relogin: bool, operator: bool
) -> None:
    verdict = classify(cred(provider), [evidence], NOW)
    got = explain(verdict, provider)
    assert got.cause is cause, (verdict.kind, verdict.reason)
    assert got.relogin is relogin
    assert got.operator is operator
    assert (cause in RELOGIN_CAUSES) is relogin
    assert (cause in OPERATOR_CAUSES) is operator


def test_every_cause_has_its_own_sentence_and_step() -> None:
    seen = set()
    for cause in Cause:
        a = advice(cause, "codex")
        assert a.cause is cause
        assert a.why.endswith(".") and a.next_step.endswith(".")
        seen.add((a.why, a.next_step))
    assert len(seen) == len(Cause)


def test_codex_invalidated_mentions_phone_verification() -> None:
    verdict = classify(cred("codex"), [ev(L, CODEX_RESHAPED, code="error")], NOW)
    assert hint_of(verdict, "codex") == HINT_TOKEN_INVALIDATED
    assert "phone verification" in explain(verdict, "codex").next_step
    claude = classify(cred("claude"), [ev(L, CLAUDE_REVOKED, code="error")], NOW)
    assert hint_of(claude, "claude") is None
    assert "phone" not in explain(claude, "claude").next_step


def test_reused_names_the_other_holder_when_known() -> None:
    a = advice(Cause.REFRESH_TOKEN_REUSED, "codex", other_holders=["codex-x.json on CPA b"])
    assert "stop the other holder (codex-x.json on CPA b)" in a.next_step
    assert "two holders of one refresh token revoke each other" in a.why


def test_deactivated_suggests_retirement_without_relogin() -> None:
    a = advice(Cause.ACCOUNT_DEACTIVATED, "codex")
    assert not a.relogin and a.operator
    assert "retire" in a.next_step


def test_region_blames_the_egress_ip() -> None:
    assert "egress IP" in advice(Cause.REGION_BLOCKED, "codex").next_step


def test_manual_evidence_is_manual() -> None:
    verdict = Verdict(VerdictKind.NEEDS_REAUTH, "x", (ev(EvidenceSource.MANUAL, ""),), confirmed=True)
    assert cause_of(verdict) is Cause.MANUAL


def _task(**details: object) -> ReauthTask:
    return ReauthTask(
        id="t1",
        cpa="main",
        auth_name="codex-a.json",
        auth_index="0123456789abcdef",
        provider="codex",
        account_masked="a***@example.com",
        state=TaskState.NOTIFIED,
        reason="r",
        created_at=NOW,
        updated_at=NOW,
        deadline=NOW,
        details=dict(details),
    )


def test_task_advice_from_stored_cause_and_from_old_evidence() -> None:
    assert task_advice(_task(cause="refresh_token_reused")).cause is Cause.REFRESH_TOKEN_REUSED
    old = _task(evidence=[{"source": "listing", "text": CODEX_REFRESH_REUSED_AFTER_3}])
    assert task_advice(old).cause is Cause.REFRESH_TOKEN_REUSED
    invalidated = task_advice(_task(evidence=[{"source": "listing", "text": CODEX_RESHAPED}]))
    assert invalidated.cause is Cause.REVOKED and "phone" in invalidated.next_step
    assert task_advice(_task(cause="not-a-cause")).cause is Cause.REVOKED
    holders = task_advice(_task(cause="refresh_token_reused", other_holders=["f.json on CPA b"]))
    assert "(f.json on CPA b)" in holders.next_step


def test_vertex_is_a_new_key_not_a_login() -> None:
    verdict = classify(cred("vertex"), [ev(S, VERTEX_KEY_DELETED, 500)], NOW)
    assert explain(verdict, "vertex").next_step == "Upload a new service-account key with the link."
