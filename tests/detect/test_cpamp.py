"""CPAMP as a source, against the CPAMP simulator (reauthd/sim/cpamp.py) wired to the CPA simulator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from reauthd.config import CPAMPConfig
from reauthd.core.model import VerdictKind
from reauthd.cpa.client import CPAClient
from reauthd.detect.cpamp import CANDIDATES_PATH, RUNS_PATH, CPAMPSource, SourceState
from reauthd.detect.engine import DetectionEngine
from reauthd.sim import SimServer, scenarios
from reauthd.sim.cpamp import CPAMPSimServer, Policy

ADMIN = "cpamp-admin-key-SECRET"
DAY_MS = 86_400_000


@pytest.fixture
async def cpamp(sim: SimServer) -> AsyncIterator[CPAMPSimServer]:
    async with CPAMPSimServer(ADMIN, cpa=sim.state, policy=Policy(queue_enabled=True)) as server:
        yield server


def source(url: str, key: str = ADMIN) -> CPAMPSource:
    return CPAMPSource(CPAMPConfig(name="cpamp", base_url=url, admin_key=SecretStr(key), cpa="main"))


@pytest.fixture
async def src(cpamp: CPAMPSimServer) -> AsyncIterator[CPAMPSource]:
    s = source(cpamp.base_url)
    yield s
    await s.aclose()


@pytest.fixture
async def engine(client: CPAClient, src: CPAMPSource) -> AsyncIterator[DetectionEngine]:
    eng = DetectionEngine({"main": client}, cpamp=[src])
    yield eng
    await eng.aclose()


def ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


async def settle(engine: DetectionEngine) -> None:
    for _ in range(100):
        if not engine._in_flight:
            return
        await asyncio.sleep(0.02)


async def test_pending_reauth_candidate_is_evidence_confirmed_by_one_probe(
    sim: SimServer, cpamp: CPAMPSimServer, src: CPAMPSource, engine: DetectionEngine
) -> None:
    victim = scenarios.add_credential(sim.state, "codex")
    other = scenarios.add_credential(sim.state, "claude")
    scenarios.revoke(sim.state, victim.name)  # silent: only CPAMP noticed
    await asyncio.sleep(0.005)  # CPAMP saw it after the last refresh
    cpamp.sim.add_candidate(victim.name, "token_revoked")  # matched by file name (no authIndex)
    cpamp.sim.add_candidate(other.name, "authentication_review", auth_index=other.auth_index)
    done = cpamp.sim.add_candidate(other.name, "token_revoked", auth_index=other.auth_index)
    cpamp.sim.set_status(done["id"], "resolved")
    await engine.cycle()
    before = sim.state.counters.api_calls
    assert await engine.poll_cpamp(src) == 1
    event = await asyncio.wait_for(engine.confirmed.get(), 5)
    assert event.ref.name == victim.name and event.kind is VerdictKind.NEEDS_REAUTH
    assert sim.state.counters.api_calls - before == 1
    view = engine.verdict_for("main", other.auth_index)
    assert view is not None and view.verdict.kind is VerdictKind.HEALTHY
    assert any("status=pending" in r for r in cpamp.sim.requests)
    assert not any(r.split()[0] != "GET" for r in cpamp.sim.requests)  # read-only


async def test_deactivated_workspace_decided_on_action_and_status_not_text(
    sim: SimServer, cpamp: CPAMPSimServer, src: CPAMPSource, engine: DetectionEngine
) -> None:
    """CPAMP's only inspection delete: 402 with a Chinese reason (service.go
    resolveDeactivatedWorkspaceProbeAction). No English word 'deactivated' anywhere in the reason."""
    gone = scenarios.add_credential(sim.state, "codex")
    dead = scenarios.add_credential(sim.state, "codex")
    fine = scenarios.add_credential(sim.state, "codex")
    await asyncio.sleep(0.005)
    cpamp.sim.add_run(
        [
            cpamp.sim.inspection_result(gone.name, "deactivated_workspace", auth_index=gone.auth_index),
            cpamp.sim.inspection_result(dead.name, "token_revoked", auth_index=dead.auth_index),
            cpamp.sim.inspection_result(fine.name, "healthy", auth_index=fine.auth_index),
        ]
    )
    read = await src.fetch(datetime.now(UTC))
    assert read is not None and read.inspection is not None
    codes = {f.auth_index: f.evidence.code for f in read.inspection if not f.positive}
    assert codes == {gone.auth_index: "workspace_deactivated", dead.auth_index: "reauth"}
    sim.state.deactivate_workspace(gone.name)
    await engine.cycle()
    await engine.poll_cpamp(src)
    view = engine.verdict_for("main", gone.auth_index)
    assert view is not None and view.verdict.kind is VerdictKind.ACCOUNT_GONE


async def test_a_delete_candidate_is_account_gone(
    sim: SimServer, cpamp: CPAMPSimServer, src: CPAMPSource, engine: DetectionEngine
) -> None:
    auth = scenarios.add_credential(sim.state, "codex")
    await asyncio.sleep(0.005)
    cpamp.sim.add_candidate(auth.name, "workspace_deactivated", auth_index=auth.auth_index)
    await engine.cycle()
    await engine.poll_cpamp(src)
    view = engine.verdict_for("main", auth.auth_index)
    assert view is not None and view.verdict.kind is VerdictKind.ACCOUNT_GONE


async def test_asks_at_most_500_and_keeps_evidence_it_did_not_re_read(
    sim: SimServer, cpamp: CPAMPSimServer, src: CPAMPSource, engine: DetectionEngine
) -> None:
    """repository.go List serves a limit above 500 as 100; CPAMP sorts by lastSeenAtMs desc, so an old
    candidate drops off the page once newer ones pile up. It must keep its evidence."""
    auth = scenarios.add_credential(sim.state, "antigravity")
    now_ms = cpamp.sim.now_ms()
    cpamp.sim.add_candidate(
        auth.name, "invalid_credentials", auth_index=auth.auth_index, seen_at_ms=now_ms + 1
    )
    await engine.cycle()
    await engine.poll_cpamp(src)
    view = engine.verdict_for("main", auth.auth_index)
    assert view is not None and view.verdict.kind is VerdictKind.NEEDS_REAUTH
    for n in range(600):
        cpamp.sim.add_candidate(f"codex-gone-{n}.json", "token_revoked", seen_at_ms=now_ms + 10 + n)
    await engine.poll_cpamp(src)
    assert src.pending_count == 601
    assert all("limit=500" in r for r in cpamp.sim.requests if CANDIDATES_PATH in r)
    view = engine.verdict_for("main", auth.auth_index)
    assert view is not None and view.verdict.kind is VerdictKind.NEEDS_REAUTH
    # Once the list is complete again, a candidate a person resolved in CPAMP clears.
    for item in cpamp.sim.candidates:
        cpamp.sim.set_status(item["id"], "resolved")
    await engine.poll_cpamp(src)
    view = engine.verdict_for("main", auth.auth_index)
    assert view is not None and view.verdict.kind is not VerdictKind.NEEDS_REAUTH


async def test_a_candidate_older_than_the_last_refresh_does_not_count(
    sim: SimServer, cpamp: CPAMPSimServer, src: CPAMPSource, engine: DetectionEngine
) -> None:
    """AccountsPage.tsx hides a candidate at or before the credential's last refresh; a 30-day-old one for
    a healthy Antigravity credential must not become needs_reauth (it used to, stamped 'now')."""
    stale = scenarios.add_credential(sim.state, "antigravity")
    fresh = scenarios.add_credential(sim.state, "antigravity")
    for auth in (stale, fresh):
        scenarios.refresh(sim.state, auth)  # CPA's refresh loop keeps a healthy credential's last_refresh
    await asyncio.sleep(0.005)
    month_ago = cpamp.sim.now_ms() - 30 * DAY_MS
    cpamp.sim.add_candidate(
        stale.name,
        "invalid_credentials",
        auth_index=stale.auth_index,
        seen_at_ms=month_ago,
        stored_at_ms=month_ago,
    )
    item = cpamp.sim.add_candidate(fresh.name, "invalid_credentials", auth_index=fresh.auth_index)
    assert item["lastSeenAtMs"] > ms(fresh.last_refreshed_at or datetime.min.replace(tzinfo=UTC))
    for _ in range(3):
        await engine.cycle()
        await engine.poll_cpamp(src)
    stale_view = engine.verdict_for("main", stale.auth_index)
    fresh_view = engine.verdict_for("main", fresh.auth_index)
    assert stale_view is not None and stale_view.verdict.kind is VerdictKind.HEALTHY
    assert fresh_view is not None and fresh_view.verdict.kind is VerdictKind.NEEDS_REAUTH
    (evidence,) = [e for e in fresh_view.verdict.evidence if e.source.value == "cpamp"]
    assert evidence.observed_at <= datetime.now(UTC)


async def test_a_new_login_after_the_candidate_clears_it(
    sim: SimServer, cpamp: CPAMPSimServer, src: CPAMPSource, engine: DetectionEngine
) -> None:
    auth = scenarios.add_credential(sim.state, "antigravity")
    cpamp.sim.add_candidate(auth.name, "invalid_credentials", auth_index=auth.auth_index)
    await engine.cycle()
    await engine.poll_cpamp(src)
    assert engine.verdict_for("main", auth.auth_index).verdict.kind is VerdictKind.NEEDS_REAUTH  # type: ignore[union-attr]
    sim.state.advance(5)
    scenarios.refresh(sim.state, auth)  # last_refresh moves past the candidate
    await engine.cycle()
    assert engine.verdict_for("main", auth.auth_index).verdict.kind is VerdictKind.HEALTHY  # type: ignore[union-attr]


async def test_candidate_and_inspection_together_do_not_flap(
    sim: SimServer, cpamp: CPAMPSimServer, src: CPAMPSource, engine: DetectionEngine
) -> None:
    """Two findings for one credential used to swap the single slot twice per poll, re-deciding and
    probing every time. A healthy probe answers; four polls later there was still one probe."""
    auth = scenarios.add_credential(sim.state, "codex")
    await asyncio.sleep(0.005)
    cpamp.sim.add_candidate(auth.name, "token_revoked", auth_index=auth.auth_index)
    cpamp.sim.add_candidate(auth.name, "invalid_credentials", auth_index=auth.auth_index)
    cpamp.sim.add_run([cpamp.sim.inspection_result(auth.name, "token_revoked", auth_index=auth.auth_index)])
    await engine.cycle()
    before = sim.state.counters.api_calls
    for _ in range(4):
        await engine.poll_cpamp(src)
        await settle(engine)
        await engine.cycle()
        await settle(engine)
    assert sim.state.counters.api_calls - before == 1
    view = engine.verdict_for("main", auth.auth_index)
    assert view is not None and view.verdict.kind is VerdictKind.HEALTHY  # the newer probe wins
    assert engine.confirmed.empty()


async def test_cpamp_auto_disabled_revoked_account_is_raised(
    sim: SimServer, cpamp: CPAMPSimServer, src: CPAMPSource, engine: DetectionEngine
) -> None:
    """USAGE_ACCOUNT_ACTIONS_AUTO_DISABLE: CPAMP disables the file when it stores the candidate
    (worker/account_action_candidate.go). That is not a person's decision: raise it."""
    cpamp.sim.policy.auto_disable = True
    auth = scenarios.add_credential(sim.state, "codex")
    by_person = scenarios.add_credential(sim.state, "codex", disabled=True)
    scenarios.revoke(sim.state, auth.name)
    scenarios.revoke(sim.state, by_person.name)
    await asyncio.sleep(0.005)
    item = cpamp.sim.add_candidate(auth.name, "token_revoked", auth_index=auth.auth_index)
    cpamp.sim.add_candidate(by_person.name, "token_revoked", auth_index=by_person.auth_index)
    assert item["autoDisabledAtMs"] > 0 and sim.state.auth_by_name(auth.name).disabled  # type: ignore[union-attr]
    await engine.cycle()
    await engine.poll_cpamp(src)
    event = await asyncio.wait_for(engine.confirmed.get(), 5)
    assert event.ref.name == auth.name and event.kind is VerdictKind.NEEDS_REAUTH
    await settle(engine)
    assert engine.confirmed.empty()  # the file a person disabled stays theirs


async def test_failed_inspection_read_keeps_previous_evidence(
    sim: SimServer, cpamp: CPAMPSimServer, src: CPAMPSource, engine: DetectionEngine
) -> None:
    gone = scenarios.add_credential(sim.state, "codex")
    sim.state.deactivate_workspace(gone.name)
    await asyncio.sleep(0.005)
    cpamp.sim.add_run(
        [cpamp.sim.inspection_result(gone.name, "deactivated_workspace", auth_index=gone.auth_index)]
    )
    await engine.cycle()
    await engine.poll_cpamp(src)
    assert engine.verdict_for("main", gone.auth_index).verdict.kind is VerdictKind.ACCOUNT_GONE  # type: ignore[union-attr]
    run_id = cpamp.sim.runs[-1]["id"]
    for path, status, body in (
        (RUNS_PATH, 503, b"busy"),
        (f"{RUNS_PATH}/{run_id}", 200, b'{"run":{},"results":[{"a"'),
        (f"{RUNS_PATH}/{run_id}", 500, b"{}"),
    ):
        cpamp.sim.fail_next(path, status, body)
        await engine.poll_cpamp(src)
        assert src.state == SourceState.FAILING and src.problem
        view = engine.verdict_for("main", gone.auth_index)
        assert view is not None and view.verdict.kind is VerdictKind.ACCOUNT_GONE, path
    await engine.poll_cpamp(src)
    assert src.state == SourceState.OK and src.problem is None


async def test_a_run_of_50000_accounts_is_read(
    sim: SimServer, cpamp: CPAMPSimServer, src: CPAMPSource
) -> None:
    """~20 MiB of results: more than the old 8 MiB cap, read as a stream."""
    results = [
        cpamp.sim.inspection_result(f"codex-{n:05}.json", "healthy", auth_index=f"{n:016x}")
        for n in range(50_000)
    ]
    results[31_337] = cpamp.sim.inspection_result(
        "codex-31337.json", "deactivated_workspace", auth_index="gone"
    )
    cpamp.sim.add_run(results)
    read = await src.fetch(datetime.now(UTC))
    assert read is not None and read.inspection is not None
    assert [f.auth_index for f in read.inspection if not f.positive] == ["gone"]
    assert len(read.inspected) >= 50_000


async def test_refused_admin_key_stops_the_source_and_says_so(cpamp: CPAMPSimServer) -> None:
    bad = source(cpamp.base_url, key="wrong")
    try:
        assert await bad.fetch(datetime.now(UTC)) is None
        assert await bad.fetch(datetime.now(UTC)) is None
    finally:
        await bad.aclose()
    assert cpamp.sim.requests == ["GET /health?", "GET /usage-service/account-processing-policy?"]
    assert bad.state == SourceState.KEY_REFUSED
    assert bad.stopped is not None and "wrong" not in bad.stopped and ADMIN not in bad.stopped


async def test_pointing_at_cpa_is_named_not_ignored(sim: SimServer) -> None:
    """A 404 (base_url is CPA's own port, 8317) used to be silently ignored."""
    wrong = source(sim.base_url)
    try:
        assert await wrong.check() is False
        assert wrong.state == SourceState.NOT_CPAMP and "18317" in (wrong.problem or "")
        assert await wrong.fetch(datetime.now(UTC)) is None
        assert wrong.state == SourceState.NOT_CPAMP
    finally:
        await wrong.aclose()


async def test_health_check_and_queue_disabled(cpamp: CPAMPSimServer, src: CPAMPSource) -> None:
    assert await src.check() is True
    assert cpamp.sim.requests == ["GET /health?"] and cpamp.sim.authorized == [False]  # no key sent there
    cpamp.sim.policy = Policy(queue_enabled=False)
    read = await src.fetch(datetime.now(UTC))
    assert read is not None and src.queue_enabled is False
    assert src.state == SourceState.QUEUE_DISABLED and "USAGE_ACCOUNT_ACTIONS_ENABLED" in (src.problem or "")
    cpamp.sim.policy = Policy(queue_enabled=True)
    await src.fetch(datetime.now(UTC))
    assert src.state == SourceState.OK


async def test_garbage_from_cpamp_builds_nothing(cpamp: CPAMPSimServer, src: CPAMPSource) -> None:
    for raw in (b"garbage", b'{"items": 5}', b'{"items": [1, "x", null], "pendingCount": 3}'):
        cpamp.sim.fail_next(CANDIDATES_PATH, 200, raw)
        read = await src.fetch(datetime.now(UTC) + timedelta(seconds=1))
        assert read is None or not read.candidates


async def test_a_newer_healthy_inspection_hides_an_older_candidate(
    sim: SimServer, cpamp: CPAMPSimServer, src: CPAMPSource, engine: DetectionEngine
) -> None:
    """accountCredentialEvidence.ts inspectionProvesAuthentication: a 2xx inspection result is a cutoff
    for older failures of the same credential; an older healthy result is not."""
    hidden = scenarios.add_credential(sim.state, "antigravity")
    shown = scenarios.add_credential(sim.state, "antigravity")
    await asyncio.sleep(0.005)
    now = cpamp.sim.now_ms()
    cpamp.sim.add_candidate(
        hidden.name, "invalid_credentials", auth_index=hidden.auth_index, seen_at_ms=now - 10
    )
    cpamp.sim.add_candidate(shown.name, "invalid_credentials", auth_index=shown.auth_index)
    cpamp.sim.candidates[0]["updatedAtMs"] = cpamp.sim.candidates[0]["createdAtMs"] = now - 10
    cpamp.sim.add_run(
        [
            cpamp.sim.inspection_result(
                hidden.name, "healthy", auth_index=hidden.auth_index, created_at_ms=now
            ),
            cpamp.sim.inspection_result(
                shown.name, "healthy", auth_index=shown.auth_index, created_at_ms=now - 20
            ),
        ]
    )
    await engine.cycle()
    await engine.poll_cpamp(src)
    assert engine.verdict_for("main", hidden.auth_index).verdict.kind is VerdictKind.HEALTHY  # type: ignore[union-attr]
    assert engine.verdict_for("main", shown.auth_index).verdict.kind is VerdictKind.NEEDS_REAUTH  # type: ignore[union-attr]
