"""`reauthd scan` exits 2 whenever something could not be checked, and builds no verdict on a listing
whose entries break the contract (issues 2 and 3; contract §2 for CPA's disk-fallback listing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reauthd.cpa.client import CPAClient
from reauthd.detect.engine import DetectionEngine
from reauthd.detect.scan import ScanProblem, ScanReport, ScanRow, exit_code, render_table, scan
from reauthd.sim import SimServer, scenarios
from tests.detect.test_scan import dead_url, settings_for


@pytest.mark.parametrize("fault", ["missing_fields", "disk_fallback"])
async def test_a_listing_with_no_usable_entry_is_not_all_healthy(
    sim: SimServer, tmp_path: Path, key: str, fault: str
) -> None:
    victim = scenarios.add_credential(sim.state, "codex")
    scenarios.add_credential(sim.state, "claude")
    scenarios.revoke(sim.state, victim.name, live=True)
    scenarios.inject_fault(sim.state, fault, path="/auth-files", method="GET", count=None)
    report = await scan(settings_for(tmp_path, ("main", sim.base_url, key)), probe=False)
    assert report.rows == []
    assert [p.cpa for p in report.problems] == ["main"]
    assert "2 auth entries and none was usable" in report.problems[0].message
    assert exit_code(report) == 2
    assert "could not check" in render_table(report)


async def test_some_unusable_entries_mean_some_credentials_were_not_checked(
    sim: SimServer, tmp_path: Path, key: str
) -> None:
    good = scenarios.add_credential(sim.state, "codex")
    broken = scenarios.add_credential(sim.state, "claude")
    files = json.loads(sim.state.listing())["files"]
    for entry in files:
        if entry["name"] == broken.name:
            del entry["auth_index"]
    body = json.dumps({"files": files})
    scenarios.inject_fault(sim.state, "status", path="/auth-files", method="GET", status=200, body=body)
    report = await scan(settings_for(tmp_path, ("main", sim.base_url, key)), probe=False)
    assert [r.name for r in report.rows] == [good.name]
    assert [r.verdict for r in report.rows] == ["healthy"]
    assert len(report.problems) == 1
    assert "1 of 2 auth entries in CPA's list was unusable" in report.problems[0].message
    assert exit_code(report) == 2


async def test_an_unchecked_cpa_wins_over_attention(sim: SimServer, tmp_path: Path, key: str) -> None:
    victim = scenarios.add_credential(sim.state, "codex")
    scenarios.revoke(sim.state, victim.name, live=True)
    settings = settings_for(tmp_path, ("main", sim.base_url, key), ("gone", dead_url(), "whatever-key"))
    report = await scan(settings, probe=False)
    assert any(r.attention for r in report.rows)
    assert [p.cpa for p in report.problems] == ["gone"]
    assert exit_code(report) == 2


def _row(attention: bool) -> ScanRow:
    verdict = "needs_reauth" if attention else "healthy"
    return ScanRow(
        "m", "codex", "a.json", "0" * 16, "", "active", "", False, False, verdict, "", attention=attention
    )


@pytest.mark.parametrize(
    ("rows", "problems", "code"),
    [
        ([_row(False)], [], 0),
        ([_row(False), _row(True)], [], 1),
        ([_row(False)], [ScanProblem("x", "down")], 2),
        ([_row(True)], [ScanProblem("x", "down")], 2),
        ([], [ScanProblem("x", "down")], 2),
    ],
)
def test_exit_codes(rows: list[ScanRow], problems: list[ScanProblem], code: int) -> None:
    assert exit_code(ScanReport(rows, problems)) == code


async def test_the_engine_keeps_its_verdicts_and_recovers(sim: SimServer, client: CPAClient) -> None:
    auth = scenarios.add_credential(sim.state, "xai")
    engine = DetectionEngine({"main": client})
    try:
        (view,) = await engine.cycle()
        polled = engine.last_poll_ok["main"]
        scenarios.inject_fault(sim.state, "disk_fallback", path="/auth-files", method="GET", count=1)
        assert [v.ref.auth_index for v in await engine.cycle()] == [auth.auth_index]  # nothing forgotten
        assert "none was usable" in engine.cpa_problems["main"]
        assert engine.last_poll_ok["main"] == polled  # an unusable listing is not a successful poll
        await engine.cycle()
        assert "main" not in engine.cpa_problems and engine.last_poll_ok["main"] > polled
    finally:
        await engine.aclose()
    assert view.verdict.kind.value == "healthy"
