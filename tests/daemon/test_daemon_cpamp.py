"""End to end (issue 16): the daemon against the CPA simulator and the CPAMP simulator together.

A stale CPAMP candidate does not page; a fresh one is confirmed with one probe; an account CPAMP disabled
itself (auto-disable) is raised; a deactivated workspace found by CPAMP's inspection reaches the operator
(confirmed account_gone: logged, counted on /metrics) and nobody gets a login link for it."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

import reauthd.detect.engine as engine_module
from reauthd.config import load_config
from reauthd.core.model import Credential, TaskState
from reauthd.daemon import Daemon
from reauthd.sim import SimServer, scenarios
from reauthd.sim.cpamp import CPAMPSimServer, Policy
from tests.daemon.inprocess import KEY, running, wait_until
from tests.support.inbox import serve_inbox
from tests.support.servers import free_port

ADMIN = "cpamp-e2e-admin-CANARY"
DAY_MS = 86_400_000


def config(tmp_path: Path, cpa_url: str, cpamp_url: str, inbox_url: str, port: int) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[state]
path = "{tmp_path / "state.db"}"
[[cpa]]
name = "sim"
base_url = "{cpa_url}"
management_key = "{KEY}"
[[cpamp]]
name = "panel"
base_url = "{cpamp_url}"
admin_key = "{ADMIN}"
cpa = "sim"
poll_interval_s = 10
[detect]
poll_interval_s = 5
probe_interval_s = 100000000
[notify]
urls = ["{inbox_url}"]
group_window_s = 0
[web]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
""",
        encoding="utf-8",
    )
    return path


async def test_daemon_reads_cpamp_as_it_really_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    probes: Counter[str] = Counter()
    real_probe = engine_module.probe

    async def counting_probe(client: Any, credential: Credential, *args: Any, **kwargs: Any) -> Any:
        probes[credential.name] += 1
        return await real_probe(client, credential, *args, **kwargs)

    monkeypatch.setattr(engine_module, "probe", counting_probe)
    async with SimServer(KEY, watcher_delay=0.2) as sim:
        state = sim.state
        stale = scenarios.add_credential(state, "antigravity", email="stale@example.com")
        scenarios.refresh(state, stale)  # CPA's refresh loop keeps a healthy credential's last_refresh
        fresh = scenarios.add_credential(state, "codex", email="fresh@example.com")
        auto = scenarios.add_credential(state, "codex", email="auto@example.com")
        gone = scenarios.add_credential(state, "codex", email="gone@example.com")
        scenarios.revoke(state, fresh.name)  # silent: only CPAMP noticed
        scenarios.revoke(state, auto.name)
        state.deactivate_workspace(gone.name)
        await asyncio.sleep(0.01)  # CPAMP saw them after the last refresh

        async with CPAMPSimServer(ADMIN, cpa=state, policy=Policy(queue_enabled=True)) as panel:
            cpamp = panel.sim
            month_ago = cpamp.now_ms() - 30 * DAY_MS
            cpamp.add_candidate(
                stale.name, "invalid_credentials", auth_index=stale.auth_index, provider="antigravity",
                seen_at_ms=month_ago, stored_at_ms=month_ago,
            )  # fmt: skip
            # Stored 30 days ago, before CPAMP's auto-disable was switched on: the file stayed enabled.
            cpamp.add_candidate(fresh.name, "token_revoked", auth_index=fresh.auth_index)
            cpamp.policy.auto_disable = True
            item = cpamp.add_candidate(auto.name, "token_revoked", auth_index=auto.auth_index)
            assert item["autoDisabledAtMs"] > 0 and state.auth_by_name(auto.name).disabled  # type: ignore[union-attr]
            cpamp.add_run(
                [cpamp.inspection_result(gone.name, "deactivated_workspace", auth_index=gone.auth_index)]
            )

            port = free_port()
            with serve_inbox() as inbox, capture_logs() as logs:
                path = config(tmp_path, sim.base_url, panel.base_url, inbox.url(), port)
                daemon = Daemon(load_config(path), config_path=path)
                async with running(daemon):
                    store = daemon.store
                    assert store is not None

                    def raised() -> set[str]:
                        return {t.auth_name for t in store.list_tasks()}

                    await wait_until(lambda: raised() >= {fresh.name, auto.name}, 30, "both tasks")
                    await wait_until(lambda: len(inbox.messages("new")) >= 1, 30, "the message")
                    polls = lambda: sum(1 for r in cpamp.requests if "account-action-candidates" in r)  # noqa: E731
                    seen = polls()
                    await wait_until(lambda: polls() >= seen + 1, 30, "another CPAMP poll")
                    await asyncio.sleep(1.0)  # anything that poll would start has started

                    assert raised() == {fresh.name, auto.name}  # the stale candidate paged nobody
                    assert probes[fresh.name] == 1  # confirmed with one probe, not re-probed per poll
                    assert probes[stale.name] == 0
                    tasks = {t.auth_name: t for t in store.list_tasks()}
                    assert tasks[auto.name].state in (TaskState.NOTIFIED, TaskState.OPEN)
                    graph = daemon.graph
                    assert graph is not None
                    view = graph.engine.verdict_for("sim", gone.auth_index)
                    assert (
                        view is not None
                        and view.verdict.kind.value == "account_gone"
                        and view.verdict.confirmed
                    )
                    assert graph.engine.verdict_for("sim", stale.auth_index).verdict.kind.value == "healthy"  # type: ignore[union-attr]
                    base = f"http://127.0.0.1:{port}"
                    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
                        metrics = (await client.get("/metrics")).text
                        health = (await client.get("/healthz")).json()
                    assert 'reauthd_cpamp_state{cpamp="panel",state="ok"} 1.0' in metrics
                    assert health["cpamp"] == {"panel": {"state": "ok", "reason": ""}}
                    assert any(
                        line.startswith("reauthd_credentials{") and 'verdict="account_gone"' in line
                        and line.endswith(" 1.0")
                        for line in metrics.splitlines()
                    ), metrics  # fmt: skip
            everything = inbox.everything()
            links = everything.count(f"http://127.0.0.1:{port}/r/")
            assert links == 2, everything  # one login link each for fresh and auto, none for gone
            # The deactivated workspace reaches the operator as a notice (issue 14), without a login link.
            gone_notices = [line for line in everything.splitlines() if "g***@example.com" in line]
            assert gone_notices and all("deactivated" in line and "/r/" not in line for line in gone_notices)
            assert ADMIN not in everything
            gone_logs = [
                e for e in logs if e.get("event") == "task.not_raised" and e.get("auth_name") == gone.name
            ]
            assert gone_logs and "account_gone" in str(gone_logs[0].get("kind"))
            assert not any(ADMIN in str(e) for e in logs)
