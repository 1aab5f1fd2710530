"""Judging one test request (tables) and the persisted flow record's round trip."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from reauthd.core.classify import PROBE_NO_TOKEN, PROBE_TRANSPORT, PROBE_UNAVAILABLE
from reauthd.core.model import Evidence, EvidenceSource
from reauthd.core.retire import OldProbe
from reauthd.verify.flow import Candidate, Flow, NewCredential, Phase, PublicCheck, PublicStage, StepState
from reauthd.verify.outcome import CheckResult, judge_old_probe, judge_probe, judge_public_answer

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
R = CheckResult
CLAUDE_REVOKED = (
    '{"type":"error","error":{"type":"permission_error","message":"OAuth token has been revoked. '
    'Please obtain a new token."}}'
)


def ev(status: int | None, text: str = "", code: str | None = None) -> Evidence:
    return Evidence(EvidenceSource.PROBE, NOW, http_status=status, text=text, code=code)


@pytest.mark.parametrize(
    ("evidence", "provider", "expected"),
    [
        (ev(200, '{"plan_type":"plus"}'), "codex", R.OK),
        (ev(204), "claude", R.OK),
        # Only 2xx proves it works: a redirect or a quota answer does not.
        (ev(302), "codex", R.RETRY),
        (ev(429, '{"error":{"type":"usage_limit_reached"}}'), "codex", R.RETRY),
        # 401/403: refused, whatever the body says.
        (ev(401, "nope"), "codex", R.REFUSED),
        (ev(403, CLAUDE_REVOKED), "claude", R.REFUSED),
        (ev(403, "unsupported_country_region_territory"), "codex", R.REFUSED),
        # A body that says the login is dead is a refusal even under another status (Vertex answers 500).
        (ev(500, 'failed to get vertex access token: oauth2: "invalid_grant"'), "vertex", R.REFUSED),
        # Transient: upstream 5xx, /api-call transport failure, CPA unreachable.
        (ev(503, "upstream connect error"), "claude", R.RETRY),
        (ev(502, "request failed", PROBE_TRANSPORT), "codex", R.RETRY),
        (ev(None, "CPA did not answer", PROBE_UNAVAILABLE), "codex", R.RETRY),
        # No token to substitute (Vertex via /api-call): this way cannot test it.
        (ev(400, "auth token not found", PROBE_NO_TOKEN), "vertex", R.NO_PATH),
    ],
)
def test_judge_probe(evidence: Evidence, provider: str, expected: CheckResult) -> None:
    assert judge_probe(evidence, provider).result is expected


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, '{"choices":[{"message":{"content":"ok"}}]}', R.OK),
        # CPA's own refusal of the proxy key is a configuration problem, not the credential's.
        (401, '{"error":"Invalid API key"}', R.PROXY_KEY_REFUSED),
        (401, '{"error":"Missing API key"}', R.PROXY_KEY_REFUSED),
        # The temporary prefix is not routed yet (watcher lag): try again shortly.
        (502, '{"error":{"message":"unknown provider for model p/gemini-2.5-flash"}}', R.NOT_ROUTED),
        # CPA since 2026-08-06 (handlers_routing.go): 400 model_not_found
        (
            400,
            '{"error":{"message":"unknown provider for model p/gemini-2.5-flash","type":"invalid_request_error",'
            '"code":"model_not_found","param":"model"}}',
            R.NOT_ROUTED,
        ),
        # CPA with the example api-keys configured (server_middleware.go): its misconfiguration, not a refusal
        (
            403,
            '{"error":"unsafe_example_api_key","message":"Proxy API endpoints are disabled"}',
            R.PROXY_KEY_REFUSED,
        ),
        (404, '{"error":{"message":"model not found"}}', R.NOT_ROUTED),
        # Upstream refusals passed through by CPA.
        (401, '{"error":{"message":"Request had invalid authentication credentials."}}', R.REFUSED),
        (
            500,
            'failed to get vertex access token: oauth2: "invalid_grant" "Invalid JWT Signature."',
            R.REFUSED,
        ),
        (503, '{"error":{"message":"overloaded"}}', R.RETRY),
    ],
)
def test_judge_public_answer(status: int, body: str, expected: CheckResult) -> None:
    assert judge_public_answer(status, body, "vertex").result is expected


@pytest.mark.parametrize(
    ("evidence", "expected"),
    [
        (ev(200), OldProbe.WORKS),
        (ev(401), OldProbe.DEAD),
        (ev(403), OldProbe.DEAD),
        (ev(502), OldProbe.UNKNOWN),
    ],
)
def test_judge_old_probe(evidence: Evidence, expected: OldProbe) -> None:
    assert judge_old_probe(evidence, "codex") is expected


def test_flow_record_round_trips_through_json() -> None:
    import json

    flow = Flow(attempt="a", since=NOW - timedelta(seconds=30), started=NOW, expected_name="vertex-p.json")
    flow.phase = Phase.RETIRE
    flow.candidate = Candidate("n.json", "idx", "active|...", NOW)
    flow.new = NewCredential("n.json", "idx", "vertex", False)
    flow.verification.method = "public_api"
    flow.verification.result = "ok"
    flow.verification.at = NOW
    flow.verification.public = PublicCheck(
        "reauthd-verify-abc", None, "gemini-2.5-flash", PublicStage.RESTORED
    )
    flow.steps = {"copy_settings": StepState.DONE, "disable_old": StepState.SENT}
    flow.old_modtime = NOW.isoformat()
    flow.note("left alone")
    flow.note("left alone")  # notes are not repeated
    raw = json.loads(json.dumps(flow.to_json()))
    back = Flow.from_json(raw)
    assert back == flow
    assert back.verified
    assert back.notes == ["left alone"]
