"""`reauthd scan` says what answers at every CPA's base_url, and refuses a Home or a node in one sentence
instead of misreading it (issue 15 point 1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reauthd.config import ConfigError, load_config
from reauthd.cpa.kind import NODE_RESP_ANSWER
from reauthd.detect.scan import exit_code, render_json, render_table, scan
from reauthd.sim import SimServer, scenarios
from tests.cpa.test_cpa_kind import raw_port
from tests.detect.test_scan import settings_for


async def test_scan_names_a_plain_cpa_and_refuses_a_node(sim: SimServer, tmp_path: Path, key: str) -> None:
    scenarios.add_credential(sim.state, "codex")
    server, node_url, _ = await raw_port(NODE_RESP_ANSWER)
    async with server:
        report = await scan(
            settings_for(tmp_path, ("main", sim.base_url, key), ("node", node_url, key)), probe=False
        )
    assert report.kinds["main"].startswith("plain CPA ")
    assert report.kinds["node"] == "CPA cluster node (-home-jwt)"
    assert [(p.cpa, p.message) for p in report.problems] == [
        ("node", "CPA 'node': this is a cluster node; point reauthd at its Home")
    ]
    assert exit_code(report) == 2
    table = render_table(report)
    assert "CPA node: CPA cluster node (-home-jwt)" in table
    assert "CPA node: could not check: CPA 'node': this is a cluster node; point reauthd at its Home" in table
    data = json.loads(render_json(report))
    assert data["cpas"]["node"] == {"kind": "CPA cluster node (-home-jwt)"}


def test_kind_defaults_to_auto_and_takes_only_known_values(tmp_path: Path) -> None:
    base = '[[cpa]]\nname = "main"\nbase_url = "http://127.0.0.1:8317"\nmanagement_key = "k"\n'
    path = tmp_path / "config.toml"
    path.write_text(base)
    assert load_config(path, environ={}).cpa[0].kind == "auto"
    path.write_text(base + 'kind = "home"\n')
    assert load_config(path, environ={}).cpa[0].kind == "home"
    path.write_text(base + 'kind = "node"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(info.value).endswith("[[cpa]] #1 kind: Input should be 'auto', 'cpa' or 'home'")


async def test_scan_with_kind_home_lists_a_home_by_uuid_and_reads_its_revocations(tmp_path: Path) -> None:
    """`kind = "home"` selects the Home adapter: the scan lists the Home, Home's own disable of a dead refresh
    token reads as a revocation, a node's 401 is confirmed by a probe through Home; `auto` names the Home
    and asks for `kind = "home"` instead of misreading it."""
    from reauthd.sim.home import HomeSimServer

    async with HomeSimServer("home-key") as home:
        dead = home.state.add_credential("codex", "dead@example.com")
        failing = home.state.add_credential("claude", "failing@example.com")
        fine = home.state.add_credential("codex", "fine@example.com")
        home.state.refresh_failed_terminally(dead)
        failing.upstream_accepts = False
        home.state.record_result(failing, 401, "unauthorized")
        settings = settings_for(tmp_path, ("home", home.base_url, "home-key"), extra="")
        auto = await scan(settings, probe=False)
        path = tmp_path / "config.toml"
        path.write_text(path.read_text().replace("timeout_s = 5\n", 'timeout_s = 5\nkind = "home"\n'))
        report = await scan(load_config(path, environ={}), probe=True)
    assert [p.message for p in auto.problems] == [
        "CPA 'home' is a CLIProxyAPIHome v1.0.67-sim: set kind = \"home\" in its [[cpa]] section for reauthd to "
        "watch it; until then it does not act on it (see the README, 'CPA clusters (Home)')"
    ]
    assert auto.rows == []
    assert report.problems == [] and report.kinds["home"] == "CLIProxyAPIHome v1.0.67-sim"
    verdicts = {r.auth_index: (r.verdict, r.name) for r in report.rows}
    assert verdicts[dead.id] == ("needs_reauth", dead.id)  # identity by UUID
    assert verdicts[failing.id][0] == "needs_reauth"
    assert verdicts[fine.id][0] == "healthy"
    assert exit_code(report) == 1  # attention, not "could not check"
