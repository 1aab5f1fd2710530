"""CPA down, slow, failing or talking nonsense for a while: reauthd raises no task and pages nobody, says
so on /readyz, and catches a real revocation once CPA is back."""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import httpx
import pytest

from reauthd.sim import scenarios
from reauthd.sim.server import SimThread
from tests.reliability.daemon_process import wait_for
from tests.reliability.staging import DaemonFactory, add_credentials, revoke_live
from tests.support.inbox import Inbox

pytestmark = pytest.mark.slow

# (fault, options) — each held for more than a poll cycle; the sim clock jumps 2 minutes in each.
FAULTS: list[tuple[str, dict[str, Any]]] = [
    ("outage", {}),  # connections reset before any answer
    ("status", {"status": 503}),
    ("status", {"status": 500, "body": "<html>Internal Server Error</html>"}),
    ("malformed_json", {}),
    ("missing_fields", {}),
    ("unknown_status", {}),
    ("slow", {"delay": 2.5}),  # longer than the daemon's CPA timeout
]


def readyz(base: str) -> tuple[int, str]:
    answer = httpx.get(f"{base}/readyz", timeout=5)
    return answer.status_code, answer.text


@pytest.mark.timeout(180)
def test_cpa_trouble_raises_nothing_and_detection_recovers(
    sim: SimThread, inbox: Inbox, daemon: DaemonFactory
) -> None:
    """Seven kinds of CPA trouble, one after another, each longer than a poll cycle (with the simulator's
    clock moving 2 minutes each): no task, no message, the daemon stays alive and /readyz names the
    problem. Afterwards a live revocation is caught and announced as usual."""
    names = add_credentials(sim, "codex", "claude", "xai", "kimi")
    proc = daemon(poll_interval_s=5, cpa_timeout_s=2, probe_interval_s=60, probe_rate_per_s=5)
    proc.start()
    unready = 0
    for kind, options in FAULTS:
        sim.call(partial(scenarios.inject_fault, kind=kind, count=None, **options))
        sim.call(lambda s: s.advance(120))
        seen_before = sim.call(lambda s: s.counters.management_requests)
        started = time.monotonic()
        while time.monotonic() - started < 6:
            status, _ = readyz(proc.base)
            unready += status == 503
            assert httpx.get(f"{proc.base}/livez", timeout=5).status_code == 200
            proc.sample_rss()
            time.sleep(0.5)
        sim.call(lambda s: s.faults.clear())
        if kind != "outage":  # an outage resets connections before the simulator counts them
            seen = sim.call(lambda s: s.counters.management_requests) - seen_before
            assert seen > 0, f"the daemon sent nothing to CPA during {kind}: the fault was not exercised"
        assert proc.tasks() == [], f"a task was raised during {kind}: {proc.tasks()}"
        assert inbox.attempts == 0, f"someone was paged during {kind}"
    assert unready > 0, "/readyz never reported CPA trouble"
    assert proc.proc is not None and proc.proc.poll() is None, "the daemon died"

    wait_for(lambda: readyz(proc.base)[0] == 200, 30, "/readyz to recover")
    revoke_live(sim, names[0])
    wait_for(lambda: inbox.messages("new"), 40, "the revocation after CPA came back")
    tasks = proc.tasks()
    assert [t["auth_name"] for t in tasks] == [names[0]], tasks
    assert inbox.kinds() == {"new": 1}
    logs = proc.log_text()
    assert "Traceback" not in logs
    print(f"peak RSS under CPA faults: {proc.sample_rss() / 1024:.0f} MiB")
