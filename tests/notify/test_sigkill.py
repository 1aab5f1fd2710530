"""A process SIGKILLed at each step of a notification, then restarted: one message, no lost task, and the
link from the message still works."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reauthd.core.model import TaskState
from reauthd.store import Store
from tests.support.inbox import Inbox

CHILD = r"""
import asyncio, os, signal, sys
from datetime import UTC, datetime, timedelta
from reauthd.config import Settings
from reauthd.core.model import Credential, Verdict, VerdictKind
from reauthd.store import Store
from reauthd.tasks import TaskService

state, url, kill_at, offset = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
settings = Settings(
    state={"path": state},
    cpa=[{"name": "main", "base_url": "http://127.0.0.1:9", "management_key": "k" * 16}],
    notify={"urls": [url], "group_window_s": 0},
    web={"public_url": "https://reauthd.example.org"},
)
store = Store.open(settings.state.path)

def die():
    os.kill(os.getpid(), signal.SIGKILL)

from reauthd.notify.outbox import Outbox
from reauthd.notify.notifier import Notifier

if kill_at == "after_send":  # the send went out and its result (and open -> notified) is committed
    deliver_one = Outbox._deliver_one
    async def deliver_then_die(self, *args):
        await deliver_one(self, *args)
        die()
    Outbox._deliver_one = deliver_then_die
if kill_at == "mid_send":  # the endpoint got the message, the process died before recording it
    send = Notifier.send
    async def send_then_die(self, *args):
        await send(self, *args)
        die()
    Notifier.send = send_then_die

service = TaskService(store, settings)
now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC) + timedelta(seconds=offset)
for i in range(3):
    credential = Credential(cpa="main", name=f"c{i}.json", auth_index=f"i{i}", provider="codex", status="error",
                            email=f"u{i}@example.com")
    service.on_confirmed_revocation(credential, Verdict(VerdictKind.NEEDS_REAUTH, "revoked", confirmed=True), now)
if kill_at == "after_raise":
    die()
service.outbox.plan(now)
if kill_at == "after_plan":
    die()
asyncio.run(service.flush_notifications(now))
store.close()
"""


def run_child(state: Path, url: str, kill_at: str, offset_s: float = 0) -> int:
    argv = [sys.executable, "-c", CHILD, str(state), url, kill_at, str(offset_s)]
    return subprocess.run(argv, check=False, timeout=60).returncode


def check_links(state: Path, message: dict[str, str]) -> None:
    tokens = re.findall(r"https://reauthd\.example\.org/r/([A-Za-z0-9_-]+)", message["message"])
    with Store.open(state) as store:
        tasks = store.list_tasks()
        assert len(tasks) == 3 and {t.state for t in tasks} == {TaskState.NOTIFIED}
        later = datetime(2026, 11, 28, tzinfo=UTC)
        assert {store.resolve_link_token(t, later) for t in tokens} == {t.id for t in tasks}


@pytest.mark.parametrize("kill_at", ["after_raise", "after_plan", "after_send"])
def test_sigkill_then_restart_sends_once(inbox: Inbox, tmp_path: Path, kill_at: str) -> None:
    state = tmp_path / "state.db"
    assert run_child(state, inbox.url(), kill_at) == -9
    # The restart, a minute later (the lock died with the killed process).
    assert run_child(state, inbox.url(), "never", 60) == 0
    messages = inbox.messages()
    assert len(messages) == 1 and "3 accounts" in messages[0]["title"]
    check_links(state, messages[0])


def test_sigkill_inside_the_send_means_at_least_once(inbox: Inbox, tmp_path: Path) -> None:
    # The documented trade-off: dying between the endpoint's answer and our record sends the message again
    # once its retry time has come (a duplicate beats a lost revocation notice), never before.
    state = tmp_path / "state.db"
    assert run_child(state, inbox.url(), "mid_send") == -9
    assert len(inbox.messages()) == 1
    assert run_child(state, inbox.url(), "never", 5) == 0  # before the retry time: nothing
    assert len(inbox.messages()) == 1
    assert run_child(state, inbox.url(), "never", 60) == 0
    assert len(inbox.messages()) == 2
    check_links(state, inbox.messages()[1])
