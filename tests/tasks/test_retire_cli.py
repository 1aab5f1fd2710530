"""`reauthd retire`: the operator's confirmation for a deactivated account (issue 14). Nothing changes
without `--yes`; with it `[retire] policy` is applied and audited; `tasks show` prints the cause."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reauthd.sim import scenarios
from reauthd.sim.server import SimThread
from reauthd.store import Store
from tests.tasks.test_tasks_cli import run, sim, write_config  # noqa: F401 — the fixture too


def _deactivated(sim: SimThread) -> str:  # noqa: F811
    def make(state: object) -> str:
        auth = scenarios.add_credential(state, "codex", email="hal@example.com")  # type: ignore[arg-type]
        scenarios.set_condition(state, auth.name, "deactivated", live=True)  # type: ignore[arg-type]
        return auth.name

    return sim.call(make)


def test_nothing_without_yes_then_policy_with_it(
    sim: SimThread,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = _deactivated(sim)
    config = str(write_config(tmp_path, sim.base_url))
    (tmp_path / "state").mkdir()
    code, out, _ = run(capsys, "retire", "--config", config, "--cpa", "main", name)
    assert code == 0 and "Would disable then delete" in out and "cause account_deactivated" in out
    assert "--yes" in out
    assert name in sim.call(lambda st: list(st.auths))  # untouched
    code, out, err = run(capsys, "retire", "--config", config, "--cpa", "main", name, "--yes", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert (result["done"], result["cause"], result["account"]) == (
        ["disable", "delete"],
        "account_deactivated",
        "h***@example.com",
    )
    assert name not in sim.call(lambda st: list(st.auths))
    store = Store.open(tmp_path / "state" / "state.db", lock=False)
    try:
        actions = [(a.action, a.target_name, a.outcome) for a in store.audit_for(None)]
    finally:
        store.close()
    assert actions == [
        ("retire-confirmed patch-status disabled", name, "ok"),
        ("retire-confirmed delete", name, "ok"),
    ]
    code, _, err = run(capsys, "retire", "--config", config, "--cpa", "main", name, "--yes")
    assert code == 1 and "has no auth file named" in err


def test_policy_disable_and_keep(
    sim: SimThread,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = _deactivated(sim)
    path = write_config(tmp_path, sim.base_url)
    (tmp_path / "state").mkdir()
    path.write_text(path.read_text() + '\n[retire]\npolicy = "disable"\n')
    code, out, _ = run(capsys, "retire", "--config", str(path), "--cpa", "main", name, "--yes")
    assert code == 0 and "Retired" in out and "disable" in out
    assert sim.call(lambda st: st.auths[name].disabled) is True
    path.write_text(path.read_text().replace('policy = "disable"', 'policy = "keep"'))
    code, out, _ = run(capsys, "retire", "--config", str(path), "--cpa", "main", name, "--yes")
    assert code == 0 and "policy is keep" in out


def test_tasks_show_prints_cause_and_next_step(
    sim: SimThread,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sim.call(lambda st: st.add_credential("codex", email="ida@example.com", name="codex-ida.json"))
    config = str(write_config(tmp_path, sim.base_url))
    code, out, _ = run(capsys, "reauth", "--config", config, "--cpa", "main", "codex-ida.json", "--json")
    task = json.loads(out)
    assert code == 0 and task["cause"] == "manual" and task["advice"]["relogin"] is True
    code, out, _ = run(capsys, "tasks", "show", "--config", config, task["id"])
    assert "cause:       manual: An operator asked for a new login." in out
    assert "next step:   Log in again with the link." in out
