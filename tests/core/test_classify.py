"""The classifier, table-driven from real bodies (contract §2.3, §5, §9; cpamp-signals.md §3.3, §4.3, §5.2)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from reauthd.core.classify import PROBE_NO_TOKEN, PROBE_REFRESH_FAILED, PROBE_TRANSPORT, classify, interpret
from reauthd.core.model import Credential, Evidence, EvidenceSource, VerdictKind

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
K = VerdictKind
L, S, P, C = EvidenceSource.LISTING, EvidenceSource.ERROR_STREAM, EvidenceSource.PROBE, EvidenceSource.CPAMP

CODEX_RESHAPED = json.dumps(
    {
        "error": {
            "message": "Your authentication token has been invalidated. Please try signing in again.",
            "type": "authentication_error",
            "code": "auth_unavailable",
        }
    }
)
CODEX_RAW_INVALIDATED = (
    '{"error":{"message":"Your authentication token has been invalidated. Please try signing in again.",'
    '"type":"invalid_request_error","code":"token_invalidated","param":null},"status":401}'
)
CODEX_AUTH_UNAVAILABLE_BLAND = (
    '{"error":{"message":"Unauthorized","type":"authentication_error","code":"auth_unavailable"}}'
)
CLAUDE_REVOKED = (
    '{"type":"error","error":{"type":"permission_error","message":"OAuth token has been revoked. '
    'Please obtain a new token."},"request_id":"req_011CSHt"}'
)
CLAUDE_EXPIRED = (
    '{"type":"error","error":{"type":"authentication_error","message":"OAuth token has expired."}}'
)
CLAUDE_BAD_BEARER = (
    '{"type":"error","error":{"type":"authentication_error","message":"Invalid bearer token"}}'
)
CODEX_USAGE_LIMIT = (
    '{"error":{"type":"usage_limit_reached","message":"The usage limit has been reached","plan_type":"plus",'
    '"resets_in_seconds":3600}}'
)
CODEX_DEACTIVATED = '{"detail":{"code":"deactivated_workspace"}}'
OPENAI_ACCOUNT_DEACTIVATED = (
    '{"error":{"message":"Your OpenAI account has been deactivated.","type":"invalid_request_error",'
    '"code":"account_deactivated"}}'
)
REFRESH_REUSED = (
    'token refresh failed with status 401: {"error":{"message":"Your refresh token has already been used to '
    'generate a new access token.","type":"invalid_request_error","code":"refresh_token_reused"}}'
)
XAI_BAD_CREDENTIALS = '{"code":"bad-credentials","error":"access token could not be validated"}'
CLOUDFLARE_PAGE = (
    "<!DOCTYPE html><html><head><title>Just a moment...</title></head><body>cf-ray</body></html>"
)
WHAM_USAGE_OK = (
    '{"plan_type":"plus","rate_limit":{"allowed":true,"limit_reached":false,"primary_window":'
    '{"used_percent":12,"limit_window_seconds":18000}}}'
)
CODEX_EXPIRED = (
    '{"error":{"message":"Provided authentication token is expired. Please try signing in again.",'
    '"type":"invalid_request_error","code":"token_expired","param":null},"status":401}'
)
CLAUDE_EXPIRED_FULL = (
    '{"type":"error","error":{"type":"authentication_error","message":"OAuth token has expired. Please obtain a '
    'new token or refresh your existing token."},"request_id":"req_1"}'
)
ANTHROPIC_OVERLOADED = '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
# 403s that are not about the login (contract §2.3 A3 names the region block)
CODEX_REGION_403 = (
    '{"error":{"code":"unsupported_country_region_territory","message":"Country, region, or territory not '
    'supported","param":null,"type":"request_forbidden"}}'
)
CLAUDE_ORG_403 = (
    '{"type":"error","error":{"type":"permission_error","message":"This organization does not have access '
    'to this resource."}}'
)
# Expired-access-token bodies of Kimi and xAI (what a real request records after CPA's refresh failed)
KIMI_EXPIRED = (
    '{"error":{"message":"The API Key appears to be invalid or may have expired. Please verify your '
    'credentials and try again.","type":"invalid_authentication_error"}}'
)
XAI_INCORRECT_KEY = (
    '{"code":"Client specified an invalid argument","error":"Incorrect API key provided: xa***. You can '
    'obtain an API key from https://console.x.ai."}'
)
VERTEX_KEY_DELETED = 'failed to get vertex access token: oauth2: "invalid_grant" "Invalid JWT Signature."'


def ev(
    source: EvidenceSource, text: str = "", status: int | None = None, code: str | None = None, **kw: object
):
    at = kw.pop("at", NOW)
    return Evidence(source=source, observed_at=at, http_status=status, text=text, code=code, **kw)  # type: ignore[arg-type]


def cred(provider: str = "codex", **kw: object) -> Credential:
    base: dict[str, object] = {
        "cpa": "main",
        "name": f"{provider}-a.json",
        "auth_index": "0123456789abcdef",
        "provider": provider,
        "status": "active",
    }
    base.update(kw)
    return Credential(**base)  # type: ignore[arg-type]


# (provider, evidence, expected kind, rule)
CASES = [
    # Listing: status fields (contract §2.2/§2.3)
    ("codex", ev(L, "", code="active"), K.HEALTHY, "listing_active"),
    ("codex", ev(L, CODEX_RESHAPED, code="error"), K.NEEDS_REAUTH, "invalidated"),
    ("codex", ev(L, CODEX_AUTH_UNAVAILABLE_BLAND, code="error"), K.NEEDS_REAUTH, "auth_unavailable"),
    ("claude", ev(L, CLAUDE_REVOKED, code="error"), K.NEEDS_REAUTH, "revoked"),
    ("claude", ev(L, CLAUDE_EXPIRED, code="error"), K.NEEDS_REAUTH, "expired_after_refresh"),
    ("claude", ev(L, CLAUDE_BAD_BEARER, code="error"), K.SUSPECT, "auth_like"),
    ("codex", ev(L, "unauthorized", code="error"), K.NEEDS_REAUTH, "unauthorized_after_refresh"),
    ("codex", ev(L, "invalid_grant", code="error"), K.NEEDS_REAUTH, "refresh_token_dead"),
    # CPA writes payment_required for a 402 or a 403 on the no-model path (§2.3-5): a probe decides.
    ("codex", ev(L, "payment_required", code="error"), K.SUSPECT, "payment_required"),
    ("claude", ev(L, "payment_required", code="error"), K.SUSPECT, "payment_required"),
    ("codex", ev(S, "payment_required", 402), K.QUOTA, "quota"),
    ("codex", ev(L, "quota exhausted", code="error"), K.QUOTA, "quota"),
    ("codex", ev(L, "transient upstream error", code="error"), K.TRANSIENT, "transient"),
    ("codex", ev(L, "request failed", code="error"), K.TRANSIENT, "transient"),
    ("codex", ev(L, "cloudflare challenge", code="error"), K.TRANSIENT, "cloudflare"),
    ("codex", ev(L, "not_found", code="error"), K.UNKNOWN, "not_found"),
    ("codex", ev(L, CODEX_USAGE_LIMIT, code="error"), K.QUOTA, "quota"),
    ("codex", ev(L, CODEX_DEACTIVATED, code="error"), K.ACCOUNT_GONE, "account_deactivated"),
    ("codex", ev(L, OPENAI_ACCOUNT_DEACTIVATED, code="error"), K.ACCOUNT_GONE, "account_deactivated"),
    ("xai", ev(L, XAI_BAD_CREDENTIALS, code="error"), K.NEEDS_REAUTH, "bad_credentials"),
    ("codex", ev(L, "something odd happened", code="error"), K.UNKNOWN, "unrecognised"),
    # Error stream events carry the HTTP status (contract §7)
    ("codex", ev(S, CODEX_RESHAPED, 401), K.NEEDS_REAUTH, "invalidated"),
    ("codex", ev(S, CODEX_RAW_INVALIDATED, 401), K.NEEDS_REAUTH, "invalidated"),
    ("codex", ev(S, REFRESH_REUSED, 401), K.NEEDS_REAUTH, "refresh_token_dead"),
    ("claude", ev(S, CLAUDE_REVOKED, 403), K.NEEDS_REAUTH, "revoked"),
    ("claude", ev(S, "", 401), K.SUSPECT, "auth_like"),
    ("claude", ev(S, "", 403), K.SUSPECT, "auth_like"),
    ("codex", ev(S, CODEX_USAGE_LIMIT, 429), K.QUOTA, "quota"),
    ("codex", ev(S, '{"detail":"deactivated_workspace"}', 402), K.ACCOUNT_GONE, "account_deactivated"),
    ("codex", ev(S, '{"detail":"Payment Required"}', 402), K.QUOTA, "quota"),
    ("claude", ev(S, ANTHROPIC_OVERLOADED, 529), K.QUOTA, "quota"),
    ("codex", ev(S, "upstream stream error: EOF", 500), K.TRANSIENT, "transient"),
    ("codex", ev(S, "context deadline exceeded", 408), K.TRANSIENT, "transient"),
    ("codex", ev(S, CLOUDFLARE_PAGE, 403), K.TRANSIENT, "cloudflare"),
    ("codex", ev(S, "payment_required", 403), K.SUSPECT, "forbidden"),
    ("codex", ev(S, "client gone", 499), None, None),
    ("codex", ev(S, "unauthorized", 401, code="unauthorized"), K.NEEDS_REAUTH, "unauthorized_after_refresh"),
    # Probes through /api-call (contract §5, §12)
    ("codex", ev(P, WHAM_USAGE_OK, 200), K.HEALTHY, "ok"),
    (
        "codex",
        ev(P, WHAM_USAGE_OK.replace("false", "true").replace("true,", "false,", 1), 200),
        K.QUOTA,
        "quota",
    ),
    ("codex", ev(P, '{"rate_limit":{"allowed":false}}', 200), K.QUOTA, "quota"),
    ("codex", ev(P, "{not json rate_limit", 200), K.HEALTHY, "ok"),
    ("codex", ev(P, '{"detail":"Unauthorized"}', 401, token_expired=False), K.NEEDS_REAUTH, "probe_401"),
    ("codex", ev(P, '{"detail":"Unauthorized"}', 401), K.NEEDS_REAUTH, "probe_401"),
    ("codex", ev(P, '{"detail":"Unauthorized"}', 401, token_expired=True), K.SUSPECT, "expired_access_token"),
    ("claude", ev(P, CLAUDE_EXPIRED, 401, token_expired=True), K.SUSPECT, "expired_access_token"),
    ("claude", ev(P, CLAUDE_REVOKED, 403, token_expired=True), K.NEEDS_REAUTH, "revoked"),
    ("codex", ev(P, CODEX_EXPIRED, 401, token_expired=True), K.SUSPECT, "expired_access_token"),
    ("claude", ev(P, CLAUDE_EXPIRED_FULL, 401, token_expired=True), K.SUSPECT, "expired_access_token"),
    ("codex", ev(L, CODEX_EXPIRED, code="error"), K.NEEDS_REAUTH, "expired_after_refresh"),
    ("claude", ev(S, CLAUDE_EXPIRED_FULL, 401), K.NEEDS_REAUTH, "expired_after_refresh"),
    ("claude", ev(P, CLAUDE_REVOKED, 403), K.NEEDS_REAUTH, "revoked"),
    ("xai", ev(P, XAI_BAD_CREDENTIALS, 403), K.NEEDS_REAUTH, "bad_credentials"),
    ("xai", ev(P, XAI_BAD_CREDENTIALS, 401, token_expired=False), K.NEEDS_REAUTH, "bad_credentials"),
    # xAI says the same about a token that is merely past `expired`: not a revocation yet (§5)
    ("xai", ev(P, XAI_BAD_CREDENTIALS, 403, token_expired=True), K.SUSPECT, "expired_access_token"),
    # A probe 403 is a revocation only with revoked/invalid-credential wording
    ("codex", ev(P, CODEX_REGION_403, 403, token_expired=False), K.SUSPECT, "probe_403"),
    ("claude", ev(P, CLAUDE_ORG_403, 403, token_expired=False), K.SUSPECT, "probe_403"),
    ("codex", ev(P, "<html><body>403 Forbidden</body></html>", 403), K.SUSPECT, "probe_403"),
    ("claude", ev(P, CLAUDE_REVOKED, 403, token_expired=False), K.NEEDS_REAUTH, "revoked"),
    ("codex", ev(P, CODEX_RAW_INVALIDATED, 403, token_expired=False), K.NEEDS_REAUTH, "invalidated"),
    # Kimi and xAI bodies for an expired or unknown token are authentication failures, not "unknown"
    ("kimi", ev(L, KIMI_EXPIRED, code="error"), K.SUSPECT, "auth_like"),
    ("xai", ev(L, XAI_INCORRECT_KEY, code="error"), K.SUSPECT, "auth_like"),
    ("xai", ev(S, XAI_INCORRECT_KEY, 401), K.SUSPECT, "auth_like"),
    ("kimi", ev(P, KIMI_EXPIRED, 401, token_expired=True), K.SUSPECT, "expired_access_token"),
    ("xai", ev(P, XAI_INCORRECT_KEY, 401, token_expired=True), K.SUSPECT, "expired_access_token"),
    # Vertex holds a service-account key: its invalid_grant is about the key, not a refresh token
    ("vertex", ev(L, VERTEX_KEY_DELETED, code="error"), K.NEEDS_REAUTH, "service_account_key_rejected"),
    ("vertex", ev(S, VERTEX_KEY_DELETED, 500), K.NEEDS_REAUTH, "service_account_key_rejected"),
    ("kimi", ev(P, '{"error":"rate limited"}', 429), K.QUOTA, "quota"),
    ("codex", ev(P, "request failed", 502, code=PROBE_TRANSPORT), K.TRANSIENT, "transient"),
    ("codex", ev(P, "<html>502 Bad Gateway</html>", 502), K.TRANSIENT, "transient"),
    (
        "antigravity",
        ev(P, "auth token refresh failed", 400, code=PROBE_REFRESH_FAILED),
        K.NEEDS_REAUTH,
        "refresh_token_dead",
    ),
    ("vertex", ev(P, "auth token not found", 400, code=PROBE_NO_TOKEN), K.UNKNOWN, "not_probeable"),
    # CPAMP (cpamp-signals.md §4.3, §5.2)
    ("codex", ev(C, "OAuth token was revoked", code="token_revoked"), K.NEEDS_REAUTH, "cpamp_token_revoked"),
    (
        "codex",
        ev(C, "login expired", code="invalid_credentials"),
        K.NEEDS_REAUTH,
        "cpamp_invalid_credentials",
    ),
    ("codex", ev(C, "", code="workspace_deactivated"), K.ACCOUNT_GONE, "cpamp_workspace_deactivated"),
    ("codex", ev(C, "", code="authentication_review"), K.SUSPECT, "cpamp_review"),
    ("codex", ev(EvidenceSource.MANUAL, "operator"), K.NEEDS_REAUTH, "manual"),
    # Listing values that carry no signal
    ("codex", ev(L, "disabled via management API", code="disabled"), None, None),
    ("codex", ev(L, "", code="ready"), None, None),
]


@pytest.mark.parametrize(("provider", "evidence", "kind", "rule"), CASES)
def test_interpret_one_piece_of_evidence(
    provider: str, evidence: Evidence, kind: VerdictKind | None, rule: str | None
) -> None:
    signal = interpret(evidence, provider)
    if kind is None:
        assert signal is None
        return
    assert signal is not None
    assert (signal.kind, signal.rule) == (kind, rule)
    assert signal.reason and "{" not in signal.reason


def test_reason_is_plain_language() -> None:
    verdict = classify(cred("codex"), [ev(L, CODEX_RESHAPED, code="error")], NOW)
    assert verdict.kind is K.NEEDS_REAUTH
    assert verdict.reason == "Codex says the sign-in was invalidated; a new login is needed"
    assert not verdict.confirmed
    gone = classify(cred("codex"), [ev(S, CODEX_DEACTIVATED, 402)], NOW)
    assert gone.kind is K.ACCOUNT_GONE
    assert "will not help" in gone.reason


T0, T1, T2 = NOW - timedelta(minutes=10), NOW - timedelta(minutes=5), NOW


@pytest.mark.parametrize(
    ("evidence", "kind"),
    [
        # newer success beats an older failure
        ([ev(L, CODEX_RESHAPED, code="error", at=T0), ev(P, WHAM_USAGE_OK, 200, at=T1)], K.HEALTHY),
        # a newer failure beats an older success
        ([ev(P, WHAM_USAGE_OK, 200, at=T0), ev(S, CODEX_RESHAPED, 401, at=T1)], K.NEEDS_REAUTH),
        # equal times: the negative counts (a positive must be strictly newer)
        ([ev(P, WHAM_USAGE_OK, 200, at=T1), ev(S, CODEX_RESHAPED, 401, at=T1)], K.NEEDS_REAUTH),
        # a quota answer proves the login works
        ([ev(S, "", 401, at=T0), ev(S, CODEX_USAGE_LIMIT, 429, at=T1)], K.QUOTA),
        # a transient error does not clear an authentication failure
        (
            [ev(S, CODEX_RESHAPED, 401, at=T0), ev(P, "request failed", 502, code=PROBE_TRANSPORT, at=T1)],
            K.NEEDS_REAUTH,
        ),
        # the strongest current failure wins: deactivated over invalidated
        ([ev(S, CODEX_DEACTIVATED, 402, at=T1), ev(S, CODEX_RESHAPED, 401, at=T0)], K.ACCOUNT_GONE),
        # a suspect plus an agreeing probe is needs_reauth
        ([ev(S, "", 401, at=T0), ev(P, "", 401, token_expired=False, at=T1)], K.NEEDS_REAUTH),
        # an expired token's 401 alone is no revocation (§5) ...
        ([ev(P, "", 401, token_expired=True, at=T1)], K.SUSPECT),
        # ... nor next to a 403, which CPA does not refresh on (§2.3 A2)
        ([ev(S, "", 403, at=T0), ev(P, "", 401, token_expired=True, at=T1)], K.SUSPECT),
        # but a real request's 401 (CPA refreshed once and failed) on a token still past `expired` is
        # (confirmation then waits for it to persist: core/confirm.py)
        ([ev(S, "", 401, at=T0), ev(P, "", 401, token_expired=True, at=T1)], K.NEEDS_REAUTH),
        # transient newest, nothing else failing
        (
            [ev(L, "", code="active", at=T0), ev(P, "request failed", 502, code=PROBE_TRANSPORT, at=T1)],
            K.TRANSIENT,
        ),
        # "cannot be probed" is no news
        ([ev(L, "", code="active", at=T0), ev(P, "", 400, code=PROBE_NO_TOKEN, at=T1)], K.HEALTHY),
        ([], K.UNKNOWN),
        ([ev(L, "", code="ready")], K.UNKNOWN),
    ],
)
def test_newer_evidence_wins(evidence: list[Evidence], kind: VerdictKind) -> None:
    assert classify(cred("codex"), evidence, NOW).kind is kind


def test_verdict_evidence_is_sanitised_and_supporting() -> None:
    dirty = CLAUDE_REVOKED + " for alice@example.com Bearer sk-ant-secret-value-123"
    verdict = classify(cred("claude"), [ev(S, dirty, 403, at=T1), ev(L, "", code="active", at=T0)], NOW)
    assert verdict.kind is K.NEEDS_REAUTH
    assert len(verdict.evidence) == 1
    text = verdict.evidence[0].text
    assert "alice@example.com" not in text and "sk-ant-secret-value-123" not in text
    assert "a***@example.com" in text


def test_disabled_credential_without_evidence() -> None:
    verdict = classify(
        cred(disabled=True, status="disabled"), [ev(L, "disabled via management API", code="disabled")], NOW
    )
    assert verdict.kind is K.UNKNOWN
    assert "Disabled" in verdict.reason


def test_no_credential_still_classifies() -> None:
    assert classify(None, [ev(S, CODEX_RESHAPED, 401)], NOW).kind is K.NEEDS_REAUTH
