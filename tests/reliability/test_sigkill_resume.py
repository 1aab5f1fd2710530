"""A real daemon SIGKILLed in every task state and restarted on the same state file (issues 7 and 6):
no duplicate message, no lost or extra task, the same link keeps working, and the flow completes."""

from __future__ import annotations

import time
from functools import partial

import pytest

from reauthd.sim import scenarios
from reauthd.sim.server import SimThread
from tests.reliability.daemon_process import DaemonProcess, wait_for
from tests.reliability.oplog import record_probes, retire_before_verify, step_of
from tests.reliability.recipient import Recipient, links_in
from tests.reliability.staging import DaemonFactory
from tests.support.inbox import Inbox

pytestmark = pytest.mark.slow

OLD = "codex-bob@example.com-team.json"


def kill_and_restart(daemon: DaemonProcess, inbox: Inbox, task_id: str, state: str) -> None:
    """SIGKILL in `state`, restart, and check what must survive: the task (same state, only one task),
    the messages (none sent again after a few ticks), and the link from the message."""
    assert daemon.state_of(task_id) == state
    before = inbox.kinds()
    daemon.kill()
    daemon.start()
    # Readiness comes after the first tick (reauthd/daemon.py); one more tick: time to send a duplicate.
    time.sleep(2.5)
    tasks = daemon.tasks()
    assert [t["id"] for t in tasks] == [task_id], f"after a kill in {state}: {tasks}"
    assert inbox.kinds() == before, f"after a kill in {state}: {inbox.kinds()} (was {before})"


def link_works(daemon: DaemonProcess, link: str, task_id: str) -> None:
    with Recipient(daemon.base) as fresh:  # a second browser: the link itself, not a cookie, must work
        opened, _ = fresh.open_link(link)
        assert opened == task_id


@pytest.mark.timeout(240)
def test_sigkill_in_every_state_resumes_without_duplicates(
    sim: SimThread, inbox: Inbox, daemon: DaemonFactory
) -> None:
    """Walk one Codex task through notified → opened → login_started → callback_received → verifying →
    retiring → done, SIGKILLing the daemon in each state (held there with simulator faults and delays)
    and restarting it: exactly one 'new' and one 'resolved' message, one task, each CPA change once,
    the old file touched only after the new credential's probe succeeded."""
    sim.call(lambda s: scenarios.add_credential(s, "codex", email="bob@example.com", plan="team", name=OLD))
    sim.call(record_probes)
    proc = daemon()
    proc.start()
    sim.call(lambda s: scenarios.revoke(s, OLD, live=True))
    wait_for(lambda: inbox.messages("new"), 30, "the first message")
    link = links_in(inbox.messages("new")[0]["message"], proc.base)[0]
    with Recipient(proc.base) as browser:
        walk(proc, sim, inbox, browser, link)


def walk(proc: DaemonProcess, sim: SimThread, inbox: Inbox, browser: Recipient, link: str) -> None:
    task_id, html = browser.open_link(link)

    # notified: the message went out; nobody pressed anything yet.
    proc.wait_state(task_id, "notified")
    kill_and_restart(proc, inbox, task_id, "notified")
    link_works(proc, link, task_id)

    # opened: Start login pressed while CPA refuses to mint a login (503 on the auth-url route).
    sim.call(lambda s: scenarios.inject_fault(s, "status", path="/codex-auth-url", status=503, count=None))
    refused = browser.start(task_id, html)
    assert refused.status_code >= 400, refused.status_code  # a plain "try later", not a redirect onward
    proc.wait_state(task_id, "opened")
    kill_and_restart(proc, inbox, task_id, "opened")
    link_works(proc, link, task_id)
    sim.call(lambda s: s.faults.clear())

    # login_started: a fresh login at CPA, not yet used.
    sim.call(lambda s: scenarios.relogin_as(s, OLD))
    page = browser.start(task_id, browser.page(task_id).text)
    assert 'name="callback_url"' in page.text, page.text[:2000]
    proc.wait_state(task_id, "login_started")
    kill_and_restart(proc, inbox, task_id, "login_started")
    link_works(proc, link, task_id)
    page = browser.page(task_id)  # the session cookie survived the restart (persisted cookie key)
    assert 'name="callback_url"' in page.text, page.text[:2000]

    # callback_received: CPA accepted the address but is slow exchanging the code (and then its
    # watcher is slow registering the new file, which holds the next state).
    sim.call(lambda s: s.set_timing(exchange_delay=8, watcher_delay=15))
    # Already now (it touches nothing before retiring): CPA will refuse the delete, holding `retiring`.
    sim.call(partial(scenarios.inject_fault, kind="status", path="/auth-files", method="DELETE", count=None))
    callback = browser.sign_in(task_id)
    pasted = browser.paste(task_id, page.text, callback)
    assert pasted.status_code in (200, 303), pasted.text[:2000]
    proc.wait_state(task_id, "callback_received")
    kill_and_restart(proc, inbox, task_id, "callback_received")
    link_works(proc, link, task_id)

    # verifying: CPA finished the login; the new file is not registered yet.
    proc.wait_state(task_id, "verifying", timeout=20)
    kill_and_restart(proc, inbox, task_id, "verifying")
    link_works(proc, link, task_id)

    # retiring: verified; disabling works but CPA refuses the delete for now.
    proc.wait_state(task_id, "retiring", timeout=40)
    wait_for(
        lambda: sim.call(lambda s: s.auths[OLD].disabled if OLD in s.auths else False),
        20,
        "the old file to be disabled",
    )
    kill_and_restart(proc, inbox, task_id, "retiring")
    link_works(proc, link, task_id)
    sim.call(lambda s: s.faults.clear())

    proc.wait_state(task_id, "done", timeout=30)
    wait_for(lambda: inbox.messages("resolved"), 30, "the resolved message")
    time.sleep(2.5)
    assert inbox.kinds() == {"new": 1, "resolved": 1}, inbox.kinds()
    assert inbox.refused == 0 and inbox.attempts == 2
    task = proc.cli("tasks", "show", task_id)
    assert task["state"] == "done"
    new_index = str(task["new_auth_index"])
    oplog = sim.call(lambda s: list(s.oplog))
    done = [step_of(e, OLD) for e in oplog if e.get("status") == 200]
    assert done.count("oauth-callback") == 1
    assert done.count("disable-old") == 1, "the old file was disabled more than once"
    assert done.count("delete") == 1
    assert retire_before_verify(oplog, OLD, new_index) == []
    assert OLD not in sim.call(lambda s: list(s.auths))
    assert proc.history(task_id) == [
        "open", "notified", "opened", "login_started", "callback_received", "verifying", "retiring", "done"
    ]  # fmt: skip
    assert "Traceback" not in proc.log_text()
