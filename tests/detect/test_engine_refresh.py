"""A dead refresh token behind an expired access token, through the engine and the simulator: confirmed
when the failure persists across poll cycles, never from a burst of `errors` events (issue 3)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from reauthd.config import DetectConfig
from reauthd.core.model import VerdictKind
from reauthd.cpa.client import CPAClient
from reauthd.detect.engine import DetectionEngine
from reauthd.sim import SimServer, scenarios


class Clock:
    def __init__(self) -> None:
        self.skew = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.skew


@pytest.mark.parametrize(
    ("provider", "kind", "reason"),
    [
        ("kimi", "invalid_grant", "Kimi's access token expired and CPA could not refresh it"),
        ("kimi", "unauthorized", "Kimi's access token expired and CPA could not refresh it"),
        ("xai", "invalid_grant", "xAI's access token expired and CPA could not refresh it"),
        ("xai", "unauthorized", "xAI's access token expired and CPA could not refresh it"),
        ("codex", "refresh_token_reused", "Codex says the sign-in expired and CPA could not refresh it"),
        ("claude", "invalid_grant", "Claude says the sign-in expired and CPA could not refresh it"),
    ],
)
async def test_dead_refresh_token_is_confirmed_on_the_next_poll(
    sim: SimServer, client: CPAClient, provider: str, kind: str, reason: str
) -> None:
    victim = scenarios.add_credential(sim.state, provider)
    scenarios.revoke(sim.state, victim.name, kind)  # access token expired (file too), refresh token dead
    scenarios.simulate_request(sim.state, victim.name)  # CPA: 401, one refresh, it fails, recorded
    clock = Clock()
    engine = DetectionEngine({"main": client}, DetectConfig(poll_interval_s=60), clock=clock)
    try:
        (first,) = await engine.cycle(wait_for_probes=True)
        view = engine.verdict_for("main", victim.auth_index)
        assert view is not None and view.verdict.kind is VerdictKind.NEEDS_REAUTH
        assert not view.verdict.confirmed and engine.confirmed.empty()  # the probe cannot decide (§5)
        assert any(e.token_expired for e in view.verdict.evidence)
        clock.skew = timedelta(seconds=60)
        await engine.cycle(wait_for_probes=True)
        event = engine.confirmed.get_nowait()
    finally:
        await engine.aclose()
    assert event.ref.auth_index == victim.auth_index
    assert event.verdict.reason.startswith(reason)
    assert first.credential is not None and first.credential.status == "error"


async def test_two_failing_requests_a_moment_apart_do_not_page(sim: SimServer, client: CPAClient) -> None:
    """An expired Codex token whose refresh fails: two requests 0.3 s apart publish two `errors` events,
    the probe cannot decide. That is one observation; the next poll cycle is the second."""
    victim = scenarios.add_credential(sim.state, "codex", expires_in=-600)
    sim.state.upstream.refresh[victim.metadata["refresh_token"]].dead_kind = "invalid_grant"
    clock = Clock()
    engine = DetectionEngine({"main": client}, DetectConfig(poll_interval_s=3600), clock=clock)
    runner = asyncio.create_task(engine.run())
    try:
        for _ in range(200):
            if engine.cycles and sim.state.subscribers["errors"]:
                break
            await asyncio.sleep(0.02)
        scenarios.simulate_request(sim.state, victim.name)
        await asyncio.sleep(0.3)
        scenarios.simulate_request(sim.state, victim.name)
        for _ in range(100):  # both events seen and the confirming probe answered
            view = engine.verdict_for("main", victim.auth_index)
            if view is not None and any(e.token_expired for e in view.verdict.evidence):
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)
        view = engine.verdict_for("main", victim.auth_index)
        assert view is not None and view.verdict.kind is VerdictKind.NEEDS_REAUTH
        assert not view.verdict.confirmed and engine.confirmed.empty()
        clock.skew = timedelta(seconds=3600)
        await engine.cycle(wait_for_probes=True)
        event = await asyncio.wait_for(engine.confirmed.get(), 5)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await engine.aclose()
    assert event.ref.auth_index == victim.auth_index


async def test_antigravity_without_a_probe_is_confirmed_on_the_next_poll(
    sim: SimServer, client: CPAClient
) -> None:
    """No probe is configured for Antigravity: CPA's recorded 401 (after its one refresh attempt) seen on
    two polls is the confirmation. One poll alone, or a burst within one, pages nobody."""
    victim = scenarios.add_credential(sim.state, "antigravity")
    scenarios.revoke(sim.state, victim.name, live=True)
    clock = Clock()
    engine = DetectionEngine({"main": client}, DetectConfig(poll_interval_s=60), clock=clock)
    try:
        await engine.cycle(wait_for_probes=True)
        clock.skew = timedelta(seconds=5)
        await engine.cycle(wait_for_probes=True)
        assert engine.confirmed.empty()
        clock.skew = timedelta(seconds=61)
        await engine.cycle(wait_for_probes=True)
        event = engine.confirmed.get_nowait()
    finally:
        await engine.aclose()
    assert event.kind is VerdictKind.NEEDS_REAUTH and event.ref.auth_index == victim.auth_index
    assert "Antigravity kept refusing the credential" in event.verdict.reason
