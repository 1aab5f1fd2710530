"""Classifying evidence about one credential into one verdict with a plain-language reason.

Pure: no I/O, no clock. Rules come from CPA's own behaviour (shared/cpa-contract.md §2.3, §5, §9) and
from how CPAMP reads the same signals (shared/cpamp-signals.md §3.3, §4.3, §5.2).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from reauthd.core.model import Credential, Evidence, EvidenceSource, Verdict, VerdictKind
from reauthd.core.sanitize import sanitize_text

# Listing `status` values CPA ever assigns (contract §2.2); anything else is bad input.
KNOWN_LISTING_STATUSES = frozenset({"active", "error", "disabled"})
#: `errors` events whose `code` says CPA did not hold the failure against the credential
#: (sdk/cliproxy/auth/errors.go; conductor_cooldown.go resultErrorFromError/shouldSkipCredentialCooldown):
#: the request was at fault (including some 401s since 2026-08-15 and the operator's
#: oauth-request-scoped-errors rules), or the transport/session ended. No evidence against the credential,
#: for any provider (contract §7, §13). `force_cooldown` is not among them: CPA enforces the cooldown.
NOT_CREDENTIAL_FAILURE_CODES = frozenset({"request_scoped", "connection_lifecycle"})

# Probe outcomes that are not an upstream HTTP status (detect/probes.py sets these codes).
PROBE_REFRESH_FAILED = "auth_token_refresh_failed"  # antigravity: /api-call 400 (contract §12)
PROBE_NO_TOKEN = "auth_token_not_found"  # noqa: S105 — /api-call 400: nothing to substitute (Vertex, contract §12)
PROBE_TRANSPORT = "request_failed"  # /api-call 502 request failed / failed to read response
PROBE_UNAVAILABLE = "probe_unavailable"  # CPA itself could not be asked (timeout, 5xx, key refused)

# Rules of a probe that answered but cannot decide about the login (core/confirm.py falls back to
# repeated observations for these).
PROBE_EXPIRED = "expired_access_token"  # 401/403 on a token already past `expired` (contract §5)
PROBE_NOT_PROBEABLE = "not_probeable"
PROBE_FORBIDDEN = "probe_403"  # a 403 without revoked/invalid-credential wording
INCONCLUSIVE_PROBE_RULES = frozenset({PROBE_EXPIRED, PROBE_NOT_PROBEABLE, PROBE_FORBIDDEN})
# The combined rule: a real request's auth failure (CPA refreshed once and failed, contract §2.3 A2-3)
# while the access token is past `expired`.
REFRESH_FAILED = "expired_refresh_failed"

_NEGATIVE_AUTH = (VerdictKind.ACCOUNT_GONE, VerdictKind.NEEDS_REAUTH, VerdictKind.SUSPECT)
_POSITIVE = (VerdictKind.HEALTHY, VerdictKind.QUOTA)
_STRENGTH = {VerdictKind.ACCOUNT_GONE: 3, VerdictKind.NEEDS_REAUTH: 2, VerdictKind.SUSPECT: 1}


@dataclass(frozen=True, slots=True)
class Signal:
    """What one piece of evidence says on its own. `rule` names the matched rule (stable: used to tell
    "the same failure" apart from a new one)."""

    kind: VerdictKind
    rule: str
    reason: str


# ---------------------------------------------------------------------------------------------- patterns

_ACCOUNT_GONE = re.compile(
    r"deactivated_workspace|workspace[_ ](?:has been |was |is )?deactivated|account_deactivated"
    r"|account (?:has been |was |is )?(?:deactivated|disabled|suspended|banned|deleted)"
    r"|organization (?:has been |was |is )?(?:disabled|deactivated)"
)
# Revoked or invalidated: a new login is the only fix (CPAMP rule 3, contract §9 upstream bodies).
# Not "please sign in again" / "obtain a new token": providers say that about merely expired tokens too.
_REVOKED = re.compile(
    r"token_revoked|token_invalidated|invalidated[_ ]oauth[_ ]token|oauth token (?:has been )?revoked"
    r"|token has been (?:revoked|invalidated)|authentication token has been invalidated"
    r"|refresh_token_(?:reused|expired|invalidated|revoked)"
    r"|refresh token (?:has been |was )?(?:revoked|reused)"
    r"|invalid_refresh_token|invalid_grant"
    r"|requires re-?authori[sz]ation|requires re-?authentication"
    r"|token refresh failed with status 40[13]|no[_ ]auth[_ ]context"
)
# xAI's answer for a token it cannot validate (contract §9: a 403 CPA remaps to 401, then refreshes).
# Conclusive after CPA's refresh failed (listing, stream) or on a live token; a probe of a token already
# past `expired` gets the same words, and that is not a revocation yet (contract §5).
_BAD_CREDENTIALS = re.compile(r"bad[-_]credentials|access token could not be validated")
# Expired credentials: strong once CPA's refresh-on-401 has failed (listing, stream), not in a probe of a
# token already past `expired` (contract §5).
_EXPIRED = re.compile(
    r"invalid or expired (?:token|credentials)|(?:authentication |oauth |access )?token (?:is|has) expired"
    r"|provided authentication token is expired|token_expired|expired_token"
)
_CLOUDFLARE = re.compile(r"cloudflare|cf-ray|just a moment\.\.\.|attention required!|cf_chl")
_QUOTA = re.compile(
    r"quota exhausted|quota_exhausted|insufficient_quota|usage_limit_reached|usage limit|limit reached"
    r"|rate[_ ]limit|too many requests|resource_exhausted|exceeded your current quota|spending[_ ]limit"
    r"|free_quota_exhausted|credit balance is too low|billing_hard_limit|payment_required|overloaded_error"
)
_TRANSIENT = re.compile(
    r"transient upstream error|request failed|failed to read response|timeout|timed out|deadline exceeded"
    r"|connection (?:refused|reset|closed)|broken pipe|no such host|eof\b|tls handshake|bad gateway"
    r"|service unavailable|gateway time-?out|internal server error|server_error|temporarily unavailable"
    r"|upstream connect error"
)
# CPAMP's OBSERVED_AUTH_ERROR_PATTERNS (cpamp-signals.md §3.3): auth-like but not conclusive.
_AUTH_LIKE = re.compile(
    r"\b(?:o?auth|authentication|authorization)\b"
    r"(?:[ _-]?(?:error|failed|failure|invalid|required|expired|revoked))?"
    r"|unauthenticated|unauthorized|authentication_error|permission_error|permission_denied|forbidden"
    r"|invalid_(?:api_key|token|credentials)|(?:api_key|token|credentials)_(?:invalid|revoked)"
    r"|auth_unavailable|(?:invalid|incorrect) api key|invalid bearer token|invalid x-api-key"
)
# A 403 on the no-model path is written as the fixed code `payment_required` (contract §2.3-5), so that
# code alone does not say quota: only a known 402 does.
_PAYMENT_REQUIRED = "payment_required"


# ---------------------------------------------------------------------------------------------- parsing


def _json_fields(text: str) -> tuple[str | None, str | None]:
    """(type, code) of a JSON error body: `{"error":{"type","code"}}`, `{"type","code"}`, `{"error":"x"}`."""
    stripped = text.strip()
    if not stripped.startswith("{"):
        return None, None
    try:
        body = json.loads(stripped)
    except ValueError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    error = body.get("error")
    if isinstance(error, dict):
        kind, code = error.get("type"), error.get("code")
    elif isinstance(error, str):
        kind, code = None, error
    else:
        kind, code = body.get("type"), body.get("code")
    return (kind if isinstance(kind, str) else None), (code if isinstance(code, str) else None)


# ---------------------------------------------------------------------------------------------- one piece


def interpret(evidence: Evidence, provider: str = "") -> Signal | None:
    """What one piece of evidence says on its own; None when it says nothing about the credential."""
    source = evidence.source
    status = evidence.http_status
    code = (evidence.code or "").strip().lower()
    text = evidence.text or ""
    if source is EvidenceSource.MANUAL:
        return Signal(VerdictKind.NEEDS_REAUTH, "manual", "An operator asked for a new login")
    if source is EvidenceSource.CPAMP:
        return _interpret_cpamp(code, text)
    if source is EvidenceSource.LISTING:
        if code == "disabled":
            return None  # a person's decision, not a health signal
        if code == "active":
            return Signal(VerdictKind.HEALTHY, "listing_active", "CPA lists it as active")
        if code not in KNOWN_LISTING_STATUSES:
            return None
    if status == 499:  # client went away; CPAMP ignores it too (cpamp-signals.md §3.3)
        return None
    if source is EvidenceSource.PROBE:
        probe_signal = _interpret_probe_outcome(code, text)
        if probe_signal is not None:
            return probe_signal
    if status is not None and 200 <= status < 400:
        # Checked before any text rule: a healthy usage body talks about "rate_limit" windows.
        if source is EvidenceSource.PROBE and _usage_limit_reached(text):
            return Signal(
                VerdictKind.QUOTA,
                "quota",
                f"{provider_name(provider)} accepted the credential but its usage limit is reached",
            )
        return Signal(VerdictKind.HEALTHY, "ok", f"{provider_name(provider)} accepted the credential")

    body_type, body_code = _json_fields(text)
    machine_code = code if source is not EvidenceSource.LISTING else ""
    haystack = " ".join(filter(None, (text, body_type, body_code, machine_code))).lower()
    exact = text.strip().lower()
    who = provider_name(provider)

    if _ACCOUNT_GONE.search(haystack):
        return Signal(
            VerdictKind.ACCOUNT_GONE,
            "account_deactivated",
            f"{who} says the account or workspace was deactivated; a new login will not help",
        )
    if _REVOKED.search(haystack):
        return _revoked_signal(haystack, who, provider)
    expired_probe = source is EvidenceSource.PROBE and evidence.token_expired is True
    if _BAD_CREDENTIALS.search(haystack) and not expired_probe:
        return Signal(
            VerdictKind.NEEDS_REAUTH,
            "bad_credentials",
            f"{who} rejects the credentials; a new login is needed",
        )
    if expired_probe and (status in (401, 403) or _EXPIRED.search(haystack)):
        # /api-call never refreshes (contract §5): an expired access token says nothing about the login yet.
        return Signal(
            VerdictKind.SUSPECT,
            PROBE_EXPIRED,
            f"{who}'s access token had expired and CPA has not refreshed it yet; not a revocation so far",
        )
    if _EXPIRED.search(haystack) and source is not EvidenceSource.PROBE:
        return Signal(
            VerdictKind.NEEDS_REAUTH,
            "expired_after_refresh",
            f"{who} says the sign-in expired and CPA could not refresh it; a new login is needed",
        )
    if "auth_unavailable" in haystack and source is not EvidenceSource.PROBE:
        # Codex rewrites every 401 into this shape, after CPA's one refresh attempt failed (contract §9).
        return Signal(
            VerdictKind.NEEDS_REAUTH,
            "auth_unavailable",
            f"{who} refused the credential and CPA could not refresh it; a new login is needed",
        )
    if _CLOUDFLARE.search(haystack):
        return Signal(
            VerdictKind.TRANSIENT,
            "cloudflare",
            f"{who} answered with a Cloudflare challenge; not a login problem",
        )
    # Fixed codes CPA writes on the no-model path (contract §2.3 step 5) and after a failed 401 refresh.
    if exact == "unauthorized" or code == "unauthorized":
        return Signal(
            VerdictKind.NEEDS_REAUTH,
            "unauthorized_after_refresh",
            f"{who} refused the credential and CPA's token refresh failed too; a new login is needed",
        )
    if exact == _PAYMENT_REQUIRED and status == 403:
        return Signal(VerdictKind.SUSPECT, "forbidden", f"{who} refused the credential (403); checking")
    if exact == _PAYMENT_REQUIRED and status != 402:
        # CPA writes this code for a 402 *or* a 403 (Claude's revoked 403 on the no-model path among
        # them): a probe decides between quota and a dead login.
        return Signal(
            VerdictKind.SUSPECT,
            "payment_required",
            f"{who} refused the credential (CPA recorded payment_required: a 402 or a 403); checking",
        )
    if exact == "not_found" or status == 404:
        return Signal(VerdictKind.UNKNOWN, "not_found", f"{who} answered 404 (model or endpoint not found)")
    if status in (402, 429) or _QUOTA.search(haystack):
        return Signal(
            VerdictKind.QUOTA, "quota", f"{who} reports a quota or usage limit; no new login needed"
        )
    if (status is not None and (status == 408 or status >= 500)) or _TRANSIENT.search(haystack):
        return Signal(VerdictKind.TRANSIENT, "transient", f"{who} or the network had a temporary error")
    if source is EvidenceSource.PROBE and status == 401:
        # The probes are read-only identity/usage calls: a 401 on a token not yet expired means the token
        # is dead (contract §5).
        return Signal(
            VerdictKind.NEEDS_REAUTH,
            "probe_401",
            f"{who} refused the credential on a test request (401); a new login is needed",
        )
    if source is EvidenceSource.PROBE and status == 403:
        # A 403 without revoked/invalid-credential wording (matched above) is not about the login: a
        # region block (Codex unsupported_country_region_territory, contract §2.3 A3 names it), an
        # organisation without access to the usage endpoint. The probe cannot decide.
        return Signal(
            VerdictKind.SUSPECT,
            PROBE_FORBIDDEN,
            f"{who} refused the test request (403) without saying the sign-in is dead; not a revocation so far",
        )
    if status == 401 or status == 403 or _AUTH_LIKE.search(haystack):
        what = f"an HTTP {status}" if status in (401, 403) else "an authentication error"
        return Signal(
            VerdictKind.SUSPECT, "auth_like", f"{who} returned {what}; checking before anyone is asked"
        )
    if source is EvidenceSource.LISTING and code == "error" and not text.strip():
        return Signal(
            VerdictKind.UNKNOWN, "error_without_message", "CPA marks it as failing without a message"
        )
    return Signal(VerdictKind.UNKNOWN, "unrecognised", "CPA reports an error reauthd does not recognise")


def _usage_limit_reached(text: str) -> bool:
    """Codex `wham/usage`: `rate_limit.limit_reached` / `allowed:false` (cpamp-signals.md §5.2 isQuota)."""
    if '"rate_limit"' not in text:
        return False
    try:
        body = json.loads(text)
    except ValueError:
        return False
    limit = body.get("rate_limit") if isinstance(body, dict) else None
    if not isinstance(limit, dict):
        return False
    return limit.get("limit_reached") is True or limit.get("allowed") is False


def _revoked_signal(haystack: str, who: str, provider: str) -> Signal:
    if provider.lower() == "vertex" and "invalid_grant" in haystack:
        # Vertex holds a service-account key, not a refresh token: Google refuses the key's signed JWT
        # ("Invalid JWT Signature") when the key was deleted or disabled (contract §12).
        return Signal(
            VerdictKind.NEEDS_REAUTH,
            "service_account_key_rejected",
            f"{who} no longer accepts the service-account key (deleted or disabled in Google Cloud); "
            "a new key must be imported",
        )
    if "invalid_grant" in haystack or "refresh_token_" in haystack or "refresh token" in haystack:
        return Signal(
            VerdictKind.NEEDS_REAUTH,
            "refresh_token_dead",
            f"{who} no longer accepts the refresh token; a new login is needed",
        )
    if "revoked" in haystack:
        return Signal(
            VerdictKind.NEEDS_REAUTH, "revoked", f"{who} says the sign-in was revoked; a new login is needed"
        )
    return Signal(
        VerdictKind.NEEDS_REAUTH,
        "invalidated",
        f"{who} says the sign-in was invalidated; a new login is needed",
    )


def _interpret_probe_outcome(code: str, text: str) -> Signal | None:
    if code == PROBE_REFRESH_FAILED:
        return Signal(
            VerdictKind.NEEDS_REAUTH,
            "refresh_token_dead",
            "CPA could not refresh the token before the test request; a new login is needed",
        )
    if code == PROBE_NO_TOKEN:
        return Signal(
            VerdictKind.UNKNOWN, PROBE_NOT_PROBEABLE, "This credential has no token CPA can test with"
        )
    if code == PROBE_TRANSPORT:
        return Signal(VerdictKind.TRANSIENT, "transient", "The test request did not reach the provider")
    if code == PROBE_UNAVAILABLE:
        return Signal(VerdictKind.TRANSIENT, "transient", "CPA could not run the test request")
    return None


_CPAMP_RULES = {
    "token_revoked": (
        VerdictKind.NEEDS_REAUTH,
        "CPAMP saw the sign-in revoked or invalidated; a new login is needed",
    ),
    "invalid_credentials": (
        VerdictKind.NEEDS_REAUTH,
        "CPAMP saw the login expire or fail; a new login is needed",
    ),
    "reauth": (VerdictKind.NEEDS_REAUTH, "CPAMP's inspection recommends a new login"),
    "workspace_deactivated": (
        VerdictKind.ACCOUNT_GONE,
        "CPAMP saw the workspace deactivated; a new login will not help",
    ),
    "account_deactivated": (
        VerdictKind.ACCOUNT_GONE,
        "CPAMP saw the account deactivated; a new login will not help",
    ),
}


def _interpret_cpamp(code: str, text: str) -> Signal:
    rule = _CPAMP_RULES.get(code)
    if rule is not None:
        return Signal(rule[0], f"cpamp_{code}", rule[1])
    return Signal(VerdictKind.SUSPECT, "cpamp_review", "CPAMP flagged an authentication problem for review")


_PROVIDER_NAMES = {
    "codex": "Codex",
    "claude": "Claude",
    "anthropic": "Claude",
    "kimi": "Kimi",
    "xai": "xAI",
    "antigravity": "Antigravity",
    "vertex": "Vertex",
    "gemini": "Gemini",
}


def provider_name(provider: str) -> str:
    return _PROVIDER_NAMES.get(provider.lower(), provider or "The provider")


# ---------------------------------------------------------------------------------------------- combining


def classify(credential: Credential | None, evidence: Sequence[Evidence], now: datetime) -> Verdict:
    """One verdict from all current evidence. Newer evidence wins: an authentication failure counts unless
    a positive signal (success, or a quota answer, which proves the login works) is strictly newer
    (cpamp-signals.md §3.3). `now` is accepted for time-based rules; the decision never reads a clock.
    """
    del now  # decisions today depend only on the evidence's own timestamps
    provider = credential.provider if credential is not None else ""
    signals = [(e, s) for e in evidence if (s := interpret(e, provider)) is not None]
    if not signals:
        if credential is not None and credential.disabled:
            return Verdict(VerdictKind.UNKNOWN, "Disabled in CPA by a person; not checked")
        return Verdict(VerdictKind.UNKNOWN, "No usable evidence yet")

    newest_positive = max((e.observed_at for e, s in signals if s.kind in _POSITIVE), default=None)
    negatives = [
        (e, s)
        for e, s in signals
        if s.kind in _NEGATIVE_AUTH and (newest_positive is None or e.observed_at >= newest_positive)
    ]
    if negatives:
        negatives.sort(key=lambda pair: (_STRENGTH[pair[1].kind], pair[0].observed_at), reverse=True)
        top_event, top = negatives[0]
        # A probe that could not test this credential travels along: confirmation then falls back to
        # repeated observations (core/confirm.py).
        unprobeable = [e for e, s in signals if s.rule == PROBE_NOT_PROBEABLE][-1:]
        if top.kind is VerdictKind.SUSPECT and (pair := _refresh_failed(negatives)) is not None:
            failure, expired_probe = pair
            rest_of = tuple(
                _sanitised(e) for e, _ in negatives if e is not failure and e is not expired_probe
            )
            who = provider_name(provider)
            return Verdict(
                VerdictKind.NEEDS_REAUTH,
                f"{who}'s access token expired and CPA could not refresh it; a new login is needed",
                (_sanitised(failure), _sanitised(expired_probe), *rest_of, *unprobeable),
            )
        supporting = tuple(_sanitised(e) for e, _ in negatives) + tuple(unprobeable)
        return Verdict(top.kind, top.reason, supporting)

    # No current authentication failure: the newest remaining signal decides. At equal times a problem
    # beats "healthy" (a 429 and a 200 at the same instant: report the quota).
    order = {VerdictKind.QUOTA: 3, VerdictKind.TRANSIENT: 2, VerdictKind.UNKNOWN: 1, VerdictKind.HEALTHY: 0}
    rest = [(e, s) for e, s in signals if s.kind not in _NEGATIVE_AUTH]
    rest.sort(key=lambda pair: (pair[0].observed_at, order.get(pair[1].kind, 0)), reverse=True)
    top_event, top = rest[0]
    if top.kind is VerdictKind.UNKNOWN and top.rule == PROBE_NOT_PROBEABLE:
        # "Cannot be probed" is no news: fall back to the next signal when there is one.
        others = [pair for pair in rest[1:] if pair[1].rule != PROBE_NOT_PROBEABLE]
        if others:
            top_event, top = others[0]
    return Verdict(top.kind, top.reason, (_sanitised(top_event),))


# Bodies of a 403: CPA refreshes on a 401 only (contract §2.3 A2), so these say nothing about a refresh.
_FORBIDDEN_BODY = re.compile(r"permission_error|permission_denied|forbidden|\b403\b")


def _refresh_failed(negatives: Sequence[tuple[Evidence, Signal]]) -> tuple[Evidence, Evidence] | None:
    """(failure, probe) when a real request's authentication failure meets a probe that found the access
    token already past `expired`. CPA refreshes once on a 401 before it records the failure (contract
    §2.3 A2-3) and a successful refresh moves `expired` into the future (§8), so the two together mean
    CPA's refresh failed. A transient refresh failure records the same status (§2.3 A3): confirmation
    waits for the evidence to persist across poll cycles (core/confirm.py)."""
    probe = next(
        (e for e, s in negatives if e.source is EvidenceSource.PROBE and s.rule == PROBE_EXPIRED), None
    )
    if probe is None:
        return None
    for event, signal in negatives:
        if signal.rule != "auth_like":
            continue
        if event.source is EvidenceSource.ERROR_STREAM and event.http_status == 401:
            return event, probe
        if (
            event.source is EvidenceSource.LISTING
            and event.code == "error"
            and not _FORBIDDEN_BODY.search(event.text.lower())
        ):
            return event, probe
    return None


def decisive_rule(verdict: Verdict, provider: str) -> str:
    """The rule that decided `verdict`: names "the same failure" across observations (core/confirm.py)."""
    if not verdict.evidence:
        return "none"
    signal = interpret(verdict.evidence[0], provider)
    if signal is None:
        return "none"
    if verdict.kind is VerdictKind.NEEDS_REAUTH and signal.kind is VerdictKind.SUSPECT:
        return REFRESH_FAILED  # made by combining (classify: `_refresh_failed`)
    return signal.rule


def _sanitised(evidence: Evidence) -> Evidence:
    # Adapters sanitise on the way in; this is the belt to their braces, and cheap on clean text.
    clean = sanitize_text(evidence.text)
    if clean == evidence.text:
        return evidence
    return Evidence(
        source=evidence.source,
        observed_at=evidence.observed_at,
        http_status=evidence.http_status,
        text=clean,
        code=evidence.code,
        token_expired=evidence.token_expired,
    )


def is_failure(kind: VerdictKind) -> bool:
    """Verdicts that a login could be about (raise, probe, or tell the operator)."""
    return kind in _NEGATIVE_AUTH
