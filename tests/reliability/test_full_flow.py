"""One Codex re-login through a real `reauthd run` over HTTP, from revocation to the resolved message:
the order of the real requests CPA saw, and secret canaries over everything the daemon emitted."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from reauthd.sim import scenarios
from reauthd.sim.server import run_sim_in_thread
from reauthd.sim.state import SimState
from tests.reliability.daemon_process import KEY, DaemonConfig, DaemonProcess, wait_for
from tests.reliability.oplog import record_probes, retire_before_verify, step_of
from tests.reliability.recipient import Recipient, links_in
from tests.reliability.staging import APPRISE_TOKEN
from tests.support.inbox import Inbox, serve_inbox

pytestmark = pytest.mark.slow

EMAIL = "alice.canary@example.com"
LEGACY_NAME = f"codex-{EMAIL}-plus.json"  # the legacy name; CPA writes codex-<hash8>-<email>-plus.json


@dataclass
class Journey:
    old_name: str
    old_index: str
    task: dict[str, Any]
    files_after: list[str]
    oplog: list[dict[str, Any]]
    inbox: Inbox
    seen_texts: list[tuple[str, str]]  # (what, text) from every web response
    metrics: str
    logs: str
    secrets: dict[str, str]
    history: list[str]


def _tokens(state: SimState, name: str) -> dict[str, str]:
    content = state.disk[name].content
    return {"access": str(content["access_token"]), "refresh": str(content["refresh_token"])}


@pytest.fixture(scope="module")
def journey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Journey]:
    tmp = tmp_path_factory.mktemp("journey")
    sim = run_sim_in_thread(management_key=KEY, watcher_delay=0.5)
    try:
        with serve_inbox(APPRISE_TOKEN) as inbox:
            yield _run_journey(sim, inbox, tmp)
    finally:
        sim.stop()


def _run_journey(sim: Any, inbox: Inbox, tmp: Path) -> Journey:
    old = sim.call(lambda s: scenarios.add_credential(s, "codex", email=EMAIL, plan="plus", name=LEGACY_NAME))
    sim.call(lambda s: scenarios.add_credential(s, "claude"))
    sim.call(record_probes)
    old_tokens = sim.call(lambda s: _tokens(s, LEGACY_NAME))
    daemon = DaemonProcess(
        DaemonConfig(
            sim_url=sim.base_url,
            notify_url=inbox.url(),
            state_dir=tmp,
            operator_token="op-CANARY-91a-0123456789abcdef0123456789",
        )
    )
    browser = Recipient(daemon.base)
    try:
        daemon.start()
        sim.call(lambda s: scenarios.revoke(s, LEGACY_NAME, live=True))
        wait_for(lambda: inbox.messages("new"), 30, "the message asking for a new login")
        link = links_in(inbox.messages("new")[0]["message"], daemon.base)[0]
        sim.call(lambda s: scenarios.relogin_as(s, LEGACY_NAME))

        task_id, landing = browser.open_link(link)
        callback_page = browser.start(task_id, landing)
        assert 'name="callback_url"' in callback_page.text, callback_page.text[:2000]
        callback_url = browser.sign_in(task_id)
        query = parse_qs(urlsplit(callback_url).query)
        pasted = browser.paste(task_id, callback_page.text, callback_url)
        assert pasted.status_code in (200, 303), pasted.text[:2000]
        daemon.wait_state(task_id, "done", timeout=60)
        wait_for(lambda: inbox.messages("resolved"), 30, "the resolved message")
        progress = browser.page(task_id)
        assert progress.status_code in (200, 403, 410), progress.status_code
        metrics = browser.http.get(f"{daemon.base}/metrics").text
        operator = browser.http.get(
            f"{daemon.base}/operator/tasks/{task_id}",
            headers={"Authorization": "Bearer op-CANARY-91a-0123456789abcdef0123456789"},
        )
        assert operator.status_code == 200, operator.text[:500]
        task = daemon.cli("tasks", "show", task_id)
        files = sim.call(lambda s: sorted(s.auths))
        new_name = str(task.get("new_auth_name") or "")
        new_tokens = sim.call(lambda s: _tokens(s, new_name)) if new_name in files else {}
        oplog = sim.call(lambda s: list(s.oplog))
    finally:
        browser.close()
        code = daemon.stop()
    assert code == 0, daemon.log_text()[-3000:]
    secrets = {
        "management key": KEY,
        "apprise token": APPRISE_TOKEN,
        "operator token": "op-CANARY-91a-0123456789abcdef0123456789",
        "oauth state": query["state"][0],
        "oauth code": query["code"][0],
        "old access token": old_tokens["access"],
        "old refresh token": old_tokens["refresh"],
        **{f"new {k} token": v for k, v in new_tokens.items()},
    }
    return Journey(
        old_name=LEGACY_NAME,
        old_index=old.auth_index,
        task=task,
        files_after=files,
        oplog=oplog,
        inbox=inbox,
        seen_texts=[(s.url, f"{s.headers}\n\n{s.body}") for s in browser.seen],
        metrics=metrics,
        logs=daemon.log_text(),
        secrets=secrets,
        history=daemon.history(task_id),
    )


def test_codex_relogin_retires_legacy_file_only_after_probing_the_new_one(journey: Journey) -> None:
    """A live revocation becomes one message; the person's login through the page yields a new file
    under the new name; the daemon probes the NEW credential once, then disables and deletes the old
    file (in that order, each after the probe), and sends the resolved message."""
    task = journey.task
    assert task["state"] == "done", task
    new_name, new_index = task.get("new_auth_name"), task.get("new_auth_index")
    assert new_name and new_name != journey.old_name and new_name.endswith(f"-{EMAIL}-plus.json"), task
    assert journey.old_name not in journey.files_after and new_name in journey.files_after
    assert journey.history[-4:] == ["callback_received", "verifying", "retiring", "done"], journey.history
    assert journey.inbox.kinds() == {"new": 1, "resolved": 1}, journey.inbox.kinds()

    steps = [(step_of(e, journey.old_name), e) for e in journey.oplog]
    order = [
        (s, e.get("status"))
        for s, e in steps
        if s in ("oauth-callback", "disable-old", "delete")
        or (s == "probe" and new_index in e["auth_indexes"])
    ]
    assert order == [("oauth-callback", 200), ("probe", 200), ("disable-old", 200), ("delete", 200)], order
    assert retire_before_verify(journey.oplog, journey.old_name, str(new_index)) == []
    deletes = [e for s, e in steps if s == "delete"]
    assert [e["query"] for e in deletes] == [["name"]], deletes


@pytest.mark.parametrize("where", ["daemon logs", "metrics", "notifications", "web responses"])
def test_no_secret_leaks_anywhere(journey: Journey, where: str) -> None:
    """The management key, the Apprise token, the operator token, the OAuth state and code of the pasted
    address and the old and new access/refresh tokens appear nowhere the daemon writes or answers."""
    assert len(journey.secrets) == 9, journey.secrets.keys()  # the new tokens were found: the check has teeth
    haystacks: list[tuple[str, str]]
    if where == "daemon logs":
        haystacks = [("log", journey.logs)]
    elif where == "metrics":
        haystacks = [("/metrics", journey.metrics)]
    elif where == "notifications":
        haystacks = [("inbox", journey.inbox.everything())]
    else:
        # The simulator's own pages are the provider, not reauthd; the /signin redirect is the one answer
        # that must carry CPA's authorize URL (and so its state) to the session holder.
        haystacks = [(url, text) for url, text in journey.seen_texts if "/_sim/" not in url]
    assert haystacks and all(text for _, text in haystacks)
    for label, text in haystacks:
        for what, value in journey.secrets.items():
            if what == "oauth state" and label.endswith("/signin"):
                continue
            assert value not in text, f"{what} leaked into {label}"
    if where in ("metrics", "notifications"):
        assert EMAIL not in " ".join(t for _, t in haystacks), f"the full e-mail address is in the {where}"


def test_apprise_token_stays_out_of_debug_logs(journey: Journey) -> None:
    """The token inside an Apprise URL (json://host/<token>) is as secret as the URL: the daemon runs
    at debug level in this journey and must still never print it."""
    assert APPRISE_TOKEN not in journey.logs


def test_resolved_message_tells_the_new_file_from_the_old(journey: Journey) -> None:
    """Issue 6: the resolved notification names the new file. Masking the e-mail inside it is fine, but
    the reader must still tell the new file from the retired one."""
    resolved = journey.inbox.messages("resolved")[0]["message"]
    new_name = str(journey.task["new_auth_name"])
    distinguishing = new_name.split(EMAIL)[0]  # "codex-<hash8>-"
    assert distinguishing in resolved, resolved
