"""The engine's cheap views for a large fleet: the failing credentials plus named ones (task reconcile),
verdict counts (metrics) and a state version (persistence) — each equal to what walking `latest()` or
comparing `export_state()` gives."""

from __future__ import annotations

from collections import Counter

from reauthd.core.confirm import Confirmation
from reauthd.core.model import VerdictKind
from reauthd.cpa.client import CPAClient
from reauthd.detect.engine import DetectionEngine
from reauthd.sim import SimServer, scenarios


async def test_unhealthy_and_named_views_match_a_walk_over_latest(sim: SimServer, client: CPAClient) -> None:
    scenarios.bulk_generate(sim.state, 200, failing_fraction=0.1, seed=5)
    engine = DetectionEngine({"main": client})
    try:
        await engine.cycle(wait_for_probes=True)
        latest = engine.latest()
        healthy = [v for v in latest if v.verdict.kind is VerdictKind.HEALTHY]
        failing = [v for v in latest if v.verdict.kind is not VerdictKind.HEALTHY]
        assert failing and len(healthy) > 100

        assert engine.latest_unhealthy_and() == failing
        by_index = {("main", healthy[3].ref.auth_index), ("main", "no-such-index"), ("other", "x")}
        by_name = {("main", healthy[50].ref.name)}
        wanted = {healthy[3].ref, healthy[50].ref}
        expected = [v for v in latest if v.verdict.kind is not VerdictKind.HEALTHY or v.ref in wanted]
        assert engine.latest_unhealthy_and(by_index, by_name) == expected  # same order as latest()

        counts = Counter(v.verdict.kind for v in latest)
        assert engine.verdict_counts() == {"main": counts}

        # A credential joins the failing set when it fails and leaves it once it works again.
        victim = healthy[10]
        scenarios.set_condition(sim.state, victim.ref.name, "quota", live=True)
        await engine.cycle(wait_for_probes=True)
        assert victim.ref in {v.ref for v in engine.latest_unhealthy_and()}
        scenarios.set_condition(sim.state, victim.ref.name, "ok", live=True)
        await engine.cycle(wait_for_probes=True)
        assert victim.ref not in {v.ref for v in engine.latest_unhealthy_and()}
    finally:
        await engine.aclose()


async def test_state_version_moves_exactly_when_the_exported_state_can_change(
    sim: SimServer, client: CPAClient
) -> None:
    scenarios.bulk_generate(sim.state, 60, failing_fraction=0.0, seed=1)
    engine = DetectionEngine({"main": client}, probes_enabled=False)
    try:
        await engine.cycle()
        version, state = engine.state_version, engine.export_state()
        await engine.cycle()
        assert engine.state_version == version and engine.export_state() == state  # all healthy, unchanged

        victim = engine.latest()[7]
        scenarios.revoke(sim.state, victim.ref.name, live=True)
        await engine.cycle()
        assert engine.state_version > version and engine.export_state() != state

        version, state = engine.state_version, engine.export_state()
        sim.state.remove_auth(victim.ref.name)
        await engine.cycle()
        assert engine.state_version > version and engine.export_state() != state  # forgotten

        restored = DetectionEngine({"main": client})
        restored.restore_state(state)
        assert restored.state_version > 0 and restored.export_state() == state
    finally:
        await engine.aclose()


async def test_listed_credentials_are_the_latest_listing(sim: SimServer, client: CPAClient) -> None:
    kept = scenarios.add_credential(sim.state, "codex")
    gone = scenarios.add_credential(sim.state, "claude")
    engine = DetectionEngine({"main": client})
    try:
        await engine.cycle()
        assert {c.name for c in engine.listed_credentials()} == {kept.name, gone.name}
        sim.state.remove_auth(gone.name)
        await engine.cycle()
        assert [c.name for c in engine.listed_credentials()] == [kept.name]
    finally:
        await engine.aclose()


class CountingDict(dict):  # type: ignore[type-arg]
    """The engine's record table, counting walks over it (iteration, keys, values, items)."""

    walks = 0

    def __iter__(self):  # type: ignore[no-untyped-def]
        CountingDict.walks += 1
        return super().__iter__()

    def items(self):  # type: ignore[no-untyped-def]
        CountingDict.walks += 1
        return super().items()

    def values(self):  # type: ignore[no-untyped-def]
        CountingDict.walks += 1
        return super().values()

    def keys(self):  # type: ignore[no-untyped-def]
        CountingDict.walks += 1
        return super().keys()


async def test_counts_and_exported_state_do_not_walk_every_credential(
    sim: SimServer, client: CPAClient
) -> None:
    """The daemon reads verdict counts on every reconcile and exports the confirmation state after every
    change: at 100,000 credentials neither may walk the whole table (issue 12), and both still equal the
    walk they replace, through failures, recoveries, deletions and a restore."""
    names = scenarios.bulk_generate(sim.state, 120, failing_fraction=0.1, seed=9)
    engine = DetectionEngine({"main": client})
    engine._records = CountingDict()
    try:
        await engine.cycle(wait_for_probes=True)
        victim = next(v for v in engine.latest() if v.verdict.kind is VerdictKind.HEALTHY)
        scenarios.revoke(sim.state, victim.ref.name, live=True)
        await engine.cycle(wait_for_probes=True)
        sim.state.remove_auth(names[3])
        await engine.cycle(wait_for_probes=True)

        CountingDict.walks = 0
        counts = engine.verdict_counts()
        state = engine.export_state()
        assert CountingDict.walks == 0

        latest = engine.latest()
        assert counts == {"main": Counter(v.verdict.kind for v in latest)}
        walked = {
            f"main\x1f{index}": record.confirmation.to_dict()
            for (_, index), record in dict.items(engine._records)
            if record.confirmation != Confirmation()
        }
        assert state == walked and state

        restored = DetectionEngine({"main": client})
        restored.restore_state(state)
        assert restored.export_state() == state
    finally:
        await engine.aclose()


async def test_credentials_first_seen_in_one_state_share_their_listing_evidence(
    sim: SimServer, client: CPAClient
) -> None:
    """Memory at 100,000 credentials (issue 12): every healthy entry of one cycle holds the same listing
    Evidence and fingerprint; a credential whose state changes gets its own, and is re-decided."""
    scenarios.bulk_generate(sim.state, 300, failing_fraction=0.0, seed=3)
    engine = DetectionEngine({"main": client}, probes_enabled=False)
    try:
        await engine.cycle()
        records = list(dict.values(engine._records))
        assert len({id(r.listing) for r in records}) == 1
        assert len({id(r.listing_fp) for r in records}) == 1
        victim = engine.latest()[5]
        scenarios.revoke(sim.state, victim.ref.name, live=True)
        await engine.cycle()
        changed = engine._records[("main", victim.ref.auth_index)]
        assert changed.listing is not records[0].listing and changed.listing is not None
        assert changed.listing.code == "error"
        assert engine.verdict_for("main", victim.ref.auth_index).verdict.kind is not VerdictKind.HEALTHY
    finally:
        await engine.aclose()
