"""The detection engine against the simulator: real sockets, real CPA client, real RESP stream."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from reauthd.config import DetectConfig
from reauthd.core.model import EvidenceSource, VerdictKind
from reauthd.cpa.client import CPAClient
from reauthd.cpa.models import ErrorEvent
from reauthd.detect.engine import DetectionEngine
from reauthd.sim import SimServer, scenarios

STREAM_ONLY = DetectConfig(poll_interval_s=3600, error_stream=True)


async def next_event(engine: DetectionEngine, timeout: float = 5.0):
    return await asyncio.wait_for(engine.confirmed.get(), timeout)


async def test_errors_event_is_confirmed_within_seconds(sim: SimServer, client: CPAClient) -> None:
    victim = scenarios.add_credential(sim.state, "claude", email="carol@example.com")
    scenarios.add_credential(sim.state, "codex")
    engine = DetectionEngine({"main": client}, STREAM_ONLY)
    runner = asyncio.create_task(engine.run())
    try:
        for _ in range(200):  # the first cycle and the subscription
            if engine.cycles and sim.state.subscribers["errors"]:
                break
            await asyncio.sleep(0.02)
        started = time.monotonic()
        scenarios.revoke(sim.state, victim.name, live=True)  # one real request fails: CPA publishes it
        event = await next_event(engine)
        elapsed = time.monotonic() - started
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await engine.aclose()
    assert elapsed < 2.0
    assert event.ref.auth_index == victim.auth_index
    assert event.kind is VerdictKind.NEEDS_REAUTH
    assert event.account == "c***@example.com"
    assert "revoked" in event.verdict.reason
    assert any(e.source is EvidenceSource.PROBE for e in event.verdict.evidence)
    assert engine.cycles == 1  # confirmed by the stream and a probe, not by the next poll


async def test_silent_revocation_is_found_by_the_idle_probe(sim: SimServer, client: CPAClient) -> None:
    victim = scenarios.add_credential(sim.state, "codex")
    engine = DetectionEngine({"main": client}, DetectConfig(probe_interval_s=600))
    try:
        views = await engine.cycle()
        assert [v.verdict.kind for v in views] == [VerdictKind.HEALTHY]
        scenarios.revoke(sim.state, victim.name)  # nothing visible in the listing
        (view,) = await engine.cycle()
        assert view.verdict.kind is VerdictKind.HEALTHY and engine.confirmed.empty()
        later = engine.clock() + timedelta(seconds=700)
        assert await engine.run_idle_probes(later) == 1
        event = await next_event(engine)
    finally:
        await engine.aclose()
    assert event.ref.name == victim.name
    assert "invalidated" in event.verdict.reason


async def test_bare_401_needs_a_probe(sim: SimServer, client: CPAClient) -> None:
    healthy = scenarios.add_credential(sim.state, "claude")
    skew = timedelta()
    engine = DetectionEngine({"main": client}, clock=lambda: datetime.now(UTC) + skew)
    try:
        await engine.cycle()
        bare = ErrorEvent.model_validate(
            {
                "timestamp": "2026-11-27T10:00:00Z",
                "provider": "claude",
                "auth_index": healthy.auth_index,
                "auth_id": healthy.name,
                "status_code": 401,
                "body": "",
            }
        )
        view = await engine.on_error_event("main", bare)
        assert view is not None and view.verdict.kind is VerdictKind.SUSPECT and not view.verdict.confirmed
        await asyncio.sleep(0.5)  # the confirming probe answers 200: the token works
        after = engine.verdict_for("main", healthy.auth_index)
        assert after is not None and after.verdict.kind is VerdictKind.HEALTHY
        assert engine.confirmed.empty()
        # The same bare 401 later (a flap within minutes earns no new probe), now the probe agrees.
        skew = timedelta(minutes=10)
        scenarios.set_probe(
            sim.state, healthy.name, 401, '{"type":"error","error":{"type":"authentication_error"}}'
        )
        await engine.on_error_event("main", bare)
        event = await next_event(engine)
    finally:
        await engine.aclose()
    assert event.kind is VerdictKind.NEEDS_REAUTH


async def test_quota_is_never_a_reauth(sim: SimServer, client: CPAClient) -> None:
    busy = scenarios.add_credential(sim.state, "codex")
    scenarios.set_condition(sim.state, busy.name, "quota", live=True)
    engine = DetectionEngine({"main": client})
    try:
        for _ in range(3):
            views = await engine.cycle(wait_for_probes=True)
        probed = await engine.probe_now("main", busy.auth_index)
    finally:
        await engine.aclose()
    assert [v.verdict.kind for v in views] == [VerdictKind.QUOTA]
    assert probed is not None and probed.verdict.kind is VerdictKind.QUOTA  # wham/usage: limit reached
    assert engine.confirmed.empty()


async def test_one_list_request_per_cycle_and_state_round_trip(sim: SimServer, client: CPAClient) -> None:
    scenarios.bulk_generate(sim.state, 50, failing_fraction=0.1, seed=3)
    engine = DetectionEngine({"main": client})
    try:
        before = sim.state.counters.list_requests
        for _ in range(3):
            await engine.cycle(wait_for_probes=True)
        assert sim.state.counters.list_requests - before == 3
        first = engine.confirmed.qsize()
        assert first > 0
        # A restarted daemon with the persisted state does not page again for the same failures.
        again = DetectionEngine({"main": client})
        again.restore_state(engine.export_state())
        for _ in range(2):
            await again.cycle(wait_for_probes=True)
        assert again.confirmed.empty()
    finally:
        await engine.aclose()


@pytest.mark.parametrize("fault", ["malformed_json", "missing_fields", "unknown_status"])
async def test_bad_listing_is_survived(sim: SimServer, client: CPAClient, fault: str) -> None:
    good = scenarios.add_credential(sim.state, "xai")
    engine = DetectionEngine({"main": client})
    try:
        await engine.cycle()
        scenarios.revoke(sim.state, good.name, live=True)
        scenarios.inject_fault(sim.state, fault, path="/auth-files", method="GET", count=1)
        views = await engine.cycle(wait_for_probes=True)
        # No verdict was built on the bad answer: the credential keeps its last verdict.
        assert [v.verdict.kind for v in views] == [VerdictKind.HEALTHY]
        assert engine.confirmed.empty()
        views = await engine.cycle(wait_for_probes=True)
        event = await next_event(engine)
    finally:
        await engine.aclose()
    assert event.ref.auth_index == good.auth_index
    assert "main" not in engine.cpa_problems


async def test_refused_key_is_one_problem_and_one_attempt(sim: SimServer) -> None:
    scenarios.add_credential(sim.state, "codex")
    async with CPAClient("main", sim.base_url, "wrong-key") as bad:
        engine = DetectionEngine({"main": bad})
        for _ in range(3):
            assert await engine.cycle() == []
        await engine.aclose()
    assert "rejected the management key" in engine.cpa_problems["main"]
    assert "wrong-key" not in engine.cpa_problems["main"]
    assert sum(sim.state.counters.failed_key_attempts.values()) == 1


async def test_a_50mb_listing_is_read_and_used(sim: SimServer, client: CPAClient) -> None:
    victim = scenarios.add_credential(sim.state, "xai")
    scenarios.revoke(sim.state, victim.name, live=True)
    scenarios.inject_fault(sim.state, "huge_body", path="/auth-files", method="GET", count=1)
    engine = DetectionEngine({"main": client})
    try:
        (view,) = await engine.cycle(wait_for_probes=True)
    finally:
        await engine.aclose()
    assert view.verdict.kind is VerdictKind.NEEDS_REAUTH and view.verdict.confirmed
    assert len(view.verdict.evidence[0].text) <= 2048


async def test_secrets_in_upstream_bodies_never_leave_detection(
    sim: SimServer, client: CPAClient, capsys: pytest.CaptureFixture[str]
) -> None:
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjYW5hcnkifQ.c2lnbmF0dXJlY2FuYXJ5"
    leaky = (
        '{"error":{"message":"token_revoked for dave@example.com, Authorization: Bearer sk-CANARY-123456 '
        f'id_token={jwt} http://localhost:1455/auth/callback?code=CANARYCODE&state=CANARYSTATE"}}}}'
    )
    victim = scenarios.add_credential(sim.state, "codex", email="dave@example.com")
    scenarios.set_probe(sim.state, victim.name, 401, leaky)
    engine = DetectionEngine({"main": client})
    try:
        await engine.cycle()
        await engine.probe_now("main", victim.auth_index)
        event = await next_event(engine)
    finally:
        await engine.aclose()
    # The Credential itself carries the email (it is CPA's listing); everything detection *made* must not.
    made = [repr(event.verdict), event.account, repr([v.verdict for v in engine.latest()])]
    shown = "".join(made) + repr(engine.export_state()) + capsys.readouterr().out.replace(victim.name, "")
    for secret in ("sk-CANARY-123456", jwt, "CANARYCODE", "CANARYSTATE", "dave@example.com"):
        assert secret not in shown
    assert "d***@example.com" in shown
