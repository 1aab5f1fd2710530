"""A CPA restart lists every file auth `active` again (contract §2.2), the revoked ones too. An open task
must survive it: no "Resolved" message, no task closed as done, and nothing raised twice."""

from __future__ import annotations

import time

import pytest

from reauthd.sim.server import SimThread
from tests.reliability.daemon_process import wait_for
from tests.reliability.staging import DaemonFactory, add_credentials, revoke_live
from tests.support.inbox import Inbox

pytestmark = pytest.mark.slow


@pytest.mark.timeout(150)
def test_cpa_restart_keeps_open_tasks_open(sim: SimThread, inbox: Inbox, daemon: DaemonFactory) -> None:
    names = add_credentials(sim, "codex", "claude", "kimi")
    proc = daemon(poll_interval_s=5, probe_interval_s=60, probe_rate_per_s=5)
    proc.start()
    revoke_live(sim, names[0], names[1])
    wait_for(lambda: len(proc.tasks()) == 2 and inbox.messages("new"), 60, "both revocations to be announced")
    tasks = proc.tasks()

    sim.call(lambda s: s.restart())
    listed = sim.call(lambda s: [s.auth_by_name(n).status for n in names[:2]])
    assert listed == ["active", "active"], "the simulator's restart must list the revoked files active again"
    # Three poll cycles that list the revoked file as active.
    lists_before = sim.call(lambda s: s.counters.list_requests)
    deadline = time.monotonic() + 40
    while sim.call(lambda s: s.counters.list_requests) < lists_before + 3:
        assert time.monotonic() < deadline, "the daemon stopped polling after the restart"
        for task in tasks:
            assert proc.state_of(task["id"]) not in ("done", "expired", "cancelled", "failed"), task[
                "auth_name"
            ]
        time.sleep(0.5)
    time.sleep(1)  # the reconcile after the last poll

    assert set(inbox.kinds()) == {"new"}, inbox.kinds()
    assert [t["id"] for t in proc.tasks()] == [t["id"] for t in tasks]
    assert "Traceback" not in proc.log_text()
