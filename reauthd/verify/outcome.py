"""What one test request says about a credential (pure): verified, refused, or not known yet.

Verification is stricter than detection: only a 2xx answer counts as "the new credential works" (OAuth
success alone is never enough, issue 6). A 401/403 is a refusal. Everything else — 5xx, 429, a transport
failure, an unprobeable answer — says nothing yet and is retried within bounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from reauthd.core.classify import PROBE_NO_TOKEN, interpret
from reauthd.core.model import Evidence, EvidenceSource, VerdictKind
from reauthd.core.retire import OldProbe

# The public answer is judged like probe evidence; its observation time plays no part in the judgement.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


#: The `error` of CPA's 403 while the example API keys are configured (server_middleware.go).
UNSAFE_EXAMPLE_KEYS = "unsafe_example_api_key"


class CheckResult(StrEnum):
    OK = "ok"  # 2xx: the credential answered a test request
    REFUSED = "refused"  # 401/403 (or a body that says revoked/invalid_grant): verification failed
    RETRY = "retry"  # transient: try again within bounds
    NOT_ROUTED = "not_routed"  # public API: CPA does not route the temporary prefix yet (watcher lag)
    NO_PATH = "no_path"  # this way of testing cannot work for this credential (e.g. Vertex via /api-call)
    PROXY_KEY_REFUSED = "proxy_key_refused"  # CPA refused reauthd's proxy API key: configuration


@dataclass(frozen=True, slots=True)
class Judgement:
    result: CheckResult
    detail: str  # plain, sanitised: "HTTP 200", "HTTP 401: refused by the provider"


def _status_text(status: int | None) -> str:
    return f"HTTP {status}" if status is not None else "no answer"


def judge_probe(evidence: Evidence, provider: str) -> Judgement:
    """Judge an `/api-call` probe of the NEW credential (detect/probes.py evidence)."""
    status = evidence.http_status
    if (evidence.code or "") == PROBE_NO_TOKEN:
        return Judgement(CheckResult.NO_PATH, "CPA has no token to test this credential with via /api-call")
    if status is not None and 200 <= status < 300:
        return Judgement(CheckResult.OK, _status_text(status))
    if status in (401, 403):
        return Judgement(CheckResult.REFUSED, f"{_status_text(status)}: the provider refused the new login")
    signal = interpret(evidence, provider)
    if signal is not None and signal.kind in (VerdictKind.NEEDS_REAUTH, VerdictKind.ACCOUNT_GONE):
        return Judgement(CheckResult.REFUSED, f"{_status_text(status)}: {signal.reason}")
    reason = signal.reason if signal is not None else "no usable answer"
    return Judgement(CheckResult.RETRY, f"{_status_text(status)}: {reason}")


def judge_public_answer(status: int, body: str, provider: str) -> Judgement:
    """Judge CPA's answer to the one public `/v1/chat/completions` request for `<prefix>/<model>`.

    CPA answers a wrong proxy key itself with a plain `{"error":"Invalid API key"}` / `Missing API key`
    (a configuration problem, not the credential's), every `/v1` request with 403 `unsafe_example_api_key`
    while its api-keys still hold the example keys (CPA's misconfiguration), an unroutable model with 400
    `model_not_found` "unknown provider for model" (502 before 2026-08-06; the prefix is not registered
    yet, contract §13), and otherwise passes the upstream status and body on.
    """
    lowered = body.lower()
    if status in (401, 403) and ("invalid api key" in lowered or "missing api key" in lowered):
        return Judgement(CheckResult.PROXY_KEY_REFUSED, f"HTTP {status}: CPA refused reauthd's proxy API key")
    if status == 403 and UNSAFE_EXAMPLE_KEYS in lowered:
        # server_middleware.go exampleAPIKeySafeModeMiddleware: CPA's misconfiguration, never the login's.
        return Judgement(CheckResult.PROXY_KEY_REFUSED, f"HTTP 403: {UNSAFE_EXAMPLE_KEYS}")
    if "unknown provider for model" in lowered or (status == 404 and "model" in lowered):
        return Judgement(CheckResult.NOT_ROUTED, f"HTTP {status}: CPA does not route the test model yet")
    evidence = Evidence(source=EvidenceSource.PROBE, observed_at=_EPOCH, http_status=status, text=body)
    return judge_probe(evidence, provider)


def judge_old_probe(evidence: Evidence, provider: str) -> OldProbe:
    """Judge a probe of the OLD credential, made because the listing shows it active (core/retire.py)."""
    judgement = judge_probe(evidence, provider)
    if judgement.result is CheckResult.OK:
        return OldProbe.WORKS
    if judgement.result is CheckResult.REFUSED:
        return OldProbe.DEAD
    return OldProbe.UNKNOWN
