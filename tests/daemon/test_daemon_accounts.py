"""Issue 14 in the running daemon, against two simulated CPAs: one account held in both (and twice in one)
is told to the operator once with both file names and CPAs and counted in /metrics; a Codex plan about to
lapse is one notice; `scan` lists the holders in its own section."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from reauthd.config import load_config
from reauthd.daemon import Daemon
from reauthd.detect.scan import render_json, render_table, scan
from reauthd.notify import notices
from reauthd.sim.server import SimThread, run_sim_in_thread
from reauthd.store import DeliveryKind
from tests.daemon.inprocess import KEY, running, wait_until
from tests.support.servers import free_port


@pytest.fixture
def backup() -> Iterator[SimThread]:
    thread = run_sim_in_thread(management_key=KEY)
    try:
        yield thread
    finally:
        thread.stop()


def two_cpa_config(tmp_path: Path, main: str, backup: str) -> Path:
    port = free_port()
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[state]
path = "{tmp_path / "state.db"}"
[[cpa]]
name = "main"
base_url = "{main}"
management_key = "{KEY}"
[[cpa]]
name = "backup"
base_url = "{backup}"
management_key = "{KEY}"
[detect]
poll_interval_s = 5
probe_interval_s = 600
[notify]
urls = ["json://127.0.0.1:9/unused"]
group_window_s = 0
[web]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
""",
        encoding="utf-8",
    )
    return path


async def test_one_account_in_two_cpas_is_told_once_and_counted(
    tmp_path: Path, sim: SimThread, backup: SimThread
) -> None:
    same = {"email": "dana@example.com", "plan": "plus", "account_id": "acct-dana"}
    main_file = sim.call(lambda s: s.add_credential("codex", **same).name)
    backup_file = backup.call(lambda s: s.add_credential("codex", **same).name)
    sim.call(lambda s: s.add_credential("claude", email="erin@example.com"))
    backup.call(lambda s: s.add_credential("claude", email="frank@example.com"))
    # a plan that ends in two days: inside the default 3-day warning
    lapse = sim.call(
        lambda s: (
            s.add_credential(
                "codex", email="gil@example.com", subscription_until=s.now() + timedelta(days=2)
            ).name
        )
    )
    settings = load_config(two_cpa_config(tmp_path, sim.base_url, backup.base_url))

    report = await scan(settings, probe=False)  # the scan section, across both CPAs
    assert [[(h["cpa"], h["name"]) for h in d.holders] for d in report.duplicates] == [
        [("backup", backup_file), ("main", main_file)]
    ]
    assert report.duplicates[0].account == "d***@example.com"
    assert json.loads(render_json(report))["duplicates"][0]["provider"] == "codex"
    table = render_table(report)
    assert "Accounts held more than once" in table and f"{main_file} on CPA main" in table

    daemon = Daemon(settings)
    async with running(daemon):
        store = daemon.store
        assert store is not None

        def told() -> list[dict[str, object]]:
            return notices.recent(store.kv_prefix)

        await wait_until(lambda: len(told()) >= 2, 30, "the notices")
        url = settings.web.public_url
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            metrics = (await client.get("/metrics")).text
        assert "reauthd_accounts_held_twice 1.0" in metrics
        assert 'reauthd_credentials{cause="none",cpa="main",verdict="healthy"} 3.0' in metrics
        # more listings, each reviewed again: nothing new is told
        await wait_until(lambda: (daemon._last_adoption_scan or (0, 0))[1] >= 3, 40, "more reviews")
        final = told()
        rows = store.list_deliveries(kinds=[DeliveryKind.NOTICE])
    kinds = sorted(str(n["kind"]) for n in final)
    assert kinds == ["duplicate_holder", "plan_lapse"]  # each once, however many polls
    duplicate = next(n for n in final if n["kind"] == "duplicate_holder")
    text = str(duplicate["text"])
    assert "on CPA main" in text and "on CPA backup" in text and "in two or more CPAs" in text
    assert "dana@" not in text and "d***@example.com" in text
    lapse_notice = next(n for n in final if n["kind"] == "plan_lapse")
    assert "g***@example.com" in str(lapse_notice["title"]) and lapse.startswith("codex-")
    assert len(rows) == 2  # one channel, one row per notice
