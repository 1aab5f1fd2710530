"""`errors` events CPA itself does not hold against the credential (contract §7, §13): `code`
`request_scoped` or `connection_lifecycle` are no evidence, for any provider, and never page anyone."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reauthd.config import DetectConfig
from reauthd.core.model import VerdictKind
from reauthd.cpa.client import CPAClient
from reauthd.cpa.models import ErrorEvent
from reauthd.detect.engine import DetectionEngine
from reauthd.sim import SimServer, scenarios
from reauthd.store import Store
from reauthd.tasks.service import TaskService
from tests.tasks.test_service import settings_for

POLL = 60.0


@pytest.mark.parametrize("code", ["request_scoped", "connection_lifecycle"])
async def test_request_scoped_noise_for_antigravity_over_three_polls_raises_nothing(
    sim: SimServer, client: CPAClient, tmp_path: Path, code: str
) -> None:
    """Antigravity has no probe, so a bare 401 seen on two polls a poll interval apart confirms a revocation
    (issue 3's rule). A request-scoped 401 must not count: CPA left the credential alone."""
    victim = scenarios.add_credential(sim.state, "antigravity", email="ag@example.com")
    published: list[bytes] = []
    sim.state.subscribers["errors"].add(published.append)
    skew = timedelta()
    engine = DetectionEngine(
        {"main": client}, DetectConfig(poll_interval_s=POLL), clock=lambda: datetime.now(UTC) + skew
    )
    store = Store.open(tmp_path / "state.db")
    service = TaskService(store, settings_for(tmp_path))
    try:
        for poll in range(4):  # three poll intervals
            skew = timedelta(seconds=POLL * poll)
            await engine.cycle()
            for _ in range(3):
                sim.state.neutral_failure(victim.name, code=code, status=401, model="gemini-3-pro-preview")
            for raw in published:
                await engine.on_error_event("main", ErrorEvent.model_validate(json.loads(raw)))
            published.clear()
            service.reconcile_from(
                lambda w: engine.latest_unhealthy_and(w.auth_indexes, w.unindexed_names),
                datetime.now(UTC) + skew,
            )
        view = engine.verdict_for("main", victim.auth_index)
        assert view is not None and view.verdict.kind is VerdictKind.HEALTHY
        assert engine.confirmed.empty()
        assert store.list_tasks() == []
        assert sim.state.auths[victim.name].status == "active"  # CPA did not hold it against it either
    finally:
        await engine.aclose()
        store.close()


async def test_the_same_401_without_that_code_still_counts(sim: SimServer, client: CPAClient) -> None:
    """The filter is the `code`, not the status: a plain 401 event is still evidence (a suspect)."""
    victim = scenarios.add_credential(sim.state, "antigravity", email="ag@example.com")
    engine = DetectionEngine({"main": client})
    try:
        await engine.cycle()
        event = sim.state.neutral_failure(victim.name, status=401)
        del event["code"]
        view = await engine.on_error_event("main", ErrorEvent.model_validate(event))
        assert view is not None and view.verdict.kind is not VerdictKind.HEALTHY
    finally:
        await engine.aclose()
