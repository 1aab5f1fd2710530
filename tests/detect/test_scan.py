"""`reauthd scan` functions: rows per credential, a line per unreachable CPA, exit codes, no secrets."""

from __future__ import annotations

import json
from pathlib import Path

from reauthd.config import Settings, load_config
from reauthd.detect.scan import COLUMNS, exit_code, render_json, render_table, scan
from reauthd.sim import SimServer, scenarios
from tests.support.servers import free_port


def settings_for(tmp_path: Path, *cpas: tuple[str, str, str], extra: str = "") -> Settings:
    blocks = "\n".join(
        f'[[cpa]]\nname = "{name}"\nbase_url = "{url}"\nmanagement_key = "{key}"\ntimeout_s = 5\n'
        for name, url, key in cpas
    )
    path = tmp_path / "config.toml"
    path.write_text(blocks + extra)
    return load_config(path, environ={})


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


async def test_all_healthy_exits_0(sim: SimServer, tmp_path: Path, key: str) -> None:
    scenarios.add_credential(sim.state, "codex", email="alice@example.com")
    scenarios.add_credential(sim.state, "claude")
    report = await scan(settings_for(tmp_path, ("main", sim.base_url, key)), probe=False)
    assert exit_code(report) == 0
    assert {r.verdict for r in report.rows} == {"healthy"}
    table = render_table(report)
    row = next(r for r in report.rows if r.provider == "codex")
    assert row.account == "a***@example.com"  # the file name is CPA's identifier and is shown as is
    assert " a***@example.com " in table
    assert table.splitlines()[0].split() == list(COLUMNS)


async def test_revoked_needs_attention_and_probe_confirms(sim: SimServer, tmp_path: Path, key: str) -> None:
    victim = scenarios.add_credential(sim.state, "codex", email="bob@example.com")
    scenarios.add_credential(sim.state, "kimi")
    scenarios.revoke(sim.state, victim.name, live=True)
    settings = settings_for(tmp_path, ("main", sim.base_url, key))
    plain = await scan(settings, probe=False)
    assert exit_code(plain) == 1
    row = next(r for r in plain.rows if r.name == victim.name)
    assert (row.verdict, row.confirmed) == ("needs_reauth", False)
    assert row.reason == "Codex says the sign-in was invalidated; a new login is needed"
    assert "invalidated" in row.status_message and len(row.status_message) <= 120
    probed = await scan(settings, probe=True)
    data = json.loads(render_json(probed))
    entry = next(c for c in data["credentials"] if c["name"] == victim.name)
    assert entry["verdict"] == "needs_reauth" and entry["confirmed"] is True
    assert set(COLUMNS) <= set(entry)
    assert entry["account"] == "b***@example.com"
    assert data["exit_code"] == 1


async def test_unreachable_and_refused_cpas_are_one_line_each(
    sim: SimServer, tmp_path: Path, key: str
) -> None:
    scenarios.add_credential(sim.state, "xai")
    settings = settings_for(
        tmp_path,
        ("main", sim.base_url, key),
        ("gone", dead_url(), "whatever-key"),
        ("wrongkey", sim.base_url, "not-the-key-SECRET"),
    )
    report = await scan(settings, probe=False)
    assert [p.cpa for p in report.problems] == ["gone", "wrongkey"]
    assert [r.cpa for r in report.rows] == ["main"]
    assert exit_code(report) == 2
    table = render_table(report)
    assert table.count("could not check") == 2
    for text in (table, render_json(report)):
        assert "not-the-key-SECRET" not in text and key not in text
    assert sum(sim.state.counters.failed_key_attempts.values()) == 1


async def test_quota_and_disabled_do_not_need_attention(sim: SimServer, tmp_path: Path, key: str) -> None:
    busy = scenarios.add_credential(sim.state, "codex")
    scenarios.set_condition(sim.state, busy.name, "quota", live=True)
    off = scenarios.add_credential(sim.state, "claude", disabled=True)
    scenarios.revoke(sim.state, off.name)
    report = await scan(settings_for(tmp_path, ("main", sim.base_url, key)), probe=True)
    verdicts = {r.name: r.verdict for r in report.rows}
    assert verdicts[busy.name] == "quota"
    assert exit_code(report) == 0


async def test_probe_all_finds_a_silent_revocation(sim: SimServer, tmp_path: Path, key: str) -> None:
    """`scan --probe-all`: an idle account revoked without any traffic is visible only to a probe."""
    quiet = scenarios.add_credential(sim.state, "claude", email="carol@example.com")
    scenarios.add_credential(sim.state, "codex", email="dan@example.com")
    scenarios.revoke(sim.state, quiet.name, live=False)
    settings = settings_for(tmp_path, ("main", sim.base_url, key), extra="[detect]\nprobe_rate_per_s = 50\n")
    plain = await scan(settings, probe=True)
    assert {r.verdict for r in plain.rows} == {"healthy"}  # nothing in CPA's listing shows it
    report = await scan(settings, probe=False, probe_all=True)
    verdicts = {r.provider: r.verdict for r in report.rows}
    assert verdicts == {"claude": "needs_reauth", "codex": "healthy"}
    assert exit_code(report) == 1
