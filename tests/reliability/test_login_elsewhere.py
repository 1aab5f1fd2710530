"""The real daemon, when the person logs in again through another tool instead of reauthd's page, and CPA
saves the login under a new name (a legacy Codex file name, contract §4.4): the task takes the new file,
tests it, retires the old one and says so once."""

from __future__ import annotations

import pytest

from reauthd.sim import scenarios
from reauthd.sim.server import SimThread
from tests.reliability.daemon_process import wait_for
from tests.reliability.staging import DaemonFactory
from tests.support.inbox import Inbox
from tests.verify.verify_world import identity_of, relogin

pytestmark = pytest.mark.slow

LEGACY = "codex-dora@example.com-plus.json"


@pytest.mark.timeout(120)
def test_a_login_through_a_panel_under_a_new_name_ends_the_task(
    sim: SimThread, inbox: Inbox, daemon: DaemonFactory
) -> None:
    sim.call(
        lambda s: scenarios.add_credential(s, "codex", email="dora@example.com", plan="plus", name=LEGACY)
    )
    proc = daemon(poll_interval_s=5)
    proc.start()
    sim.call(lambda s: scenarios.revoke(s, LEGACY, live=True))
    wait_for(lambda: inbox.messages("new"), 40, "the revocation to be announced")
    (task,) = proc.tasks()

    new_name = sim.call(lambda s: relogin(s, identity_of(s.auths[LEGACY])))  # a panel's login
    assert new_name != LEGACY
    wait_for(lambda: proc.state_of(task["id"]) == "done", 40, "the task to end with the panel's login")

    assert sim.call(lambda s: sorted(s.auths)) == [new_name], "the old file was not retired"
    history = proc.history(task["id"])
    assert history[-3:] == ["verifying", "retiring", "done"], history
    wait_for(lambda: inbox.messages("resolved"), 20, "the resolved message")
    assert inbox.kinds() == {"new": 1, "resolved": 1}, inbox.kinds()
    assert "Traceback" not in proc.log_text()
