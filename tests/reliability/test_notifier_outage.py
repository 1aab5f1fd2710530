"""The notification channel fails for a while (HTTP 500), with a SIGKILL in the middle: the digest is
retried from the persisted outbox, arrives exactly once when the channel is back, and the outage is loud."""

from __future__ import annotations

import time

import httpx
import pytest

from reauthd.sim.server import SimThread
from tests.reliability.daemon_process import wait_for
from tests.reliability.recipient import links_in
from tests.reliability.staging import DaemonFactory, add_credentials, revoke_live
from tests.support.inbox import Inbox

pytestmark = pytest.mark.slow


@pytest.mark.timeout(150)
def test_notifier_outage_retries_without_loss_or_duplicates(
    sim: SimThread, inbox: Inbox, daemon: DaemonFactory
) -> None:
    """Three revocations while the inbox answers 500: the digest fails, the daemon says so (log line and
    /healthz), is SIGKILLed and restarted, retries on its persisted schedule, and once the inbox works
    delivers one digest with three links — and nothing more afterwards."""
    names = add_credentials(sim, "codex", "claude", "xai")
    proc = daemon()
    proc.start()
    inbox.fail_with = 500
    revoke_live(sim, *names)
    wait_for(lambda: len(proc.tasks()) == 3, 30, "three tasks")
    wait_for(lambda: inbox.refused >= 1, 30, "a refused delivery")
    health = httpx.get(f"{proc.base}/healthz", timeout=5).json()
    assert health["notifier"]["ok"] is False, health
    assert "notify.delivery_failed" in proc.log_text()

    refused = inbox.refused
    proc.kill()
    proc.start()
    time.sleep(2.5)
    # The retry waits for its persisted backoff (15–30 s after the first attempt), not for the restart.
    assert inbox.refused == refused, "the restart sent the failed digest again at once"
    assert all(t["state"] == "open" for t in proc.tasks())
    inbox.fail_with = None

    wait_for(lambda: all(t["state"] == "notified" for t in proc.tasks()), 60, "every task announced")
    time.sleep(4.5)
    # Each task's link arrives exactly once (the three revocations normally share one digest).
    digests = inbox.messages("new")
    links = [link for m in digests for link in links_in(m["message"], proc.base)]
    assert len(links) == 3 and len(set(links)) == 3, links
    assert inbox.kinds() == {"new": len(digests)}, inbox.kinds()
    if len(digests) == 1:
        assert digests[0]["title"] == "Log in again: 3 accounts need a new login", digests[0]["title"]
    rows = proc.deliveries()
    assert {(r["kind"], r["status"]) for r in rows} == {("new", "sent")}, rows
    assert rows[0]["attempts"] == refused + 1, rows  # the refused attempt(s), then the one that worked
    assert httpx.get(f"{proc.base}/healthz", timeout=5).json()["notifier"]["ok"] is True
