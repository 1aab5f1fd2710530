"""The daemon pointed at a CLIProxyAPIHome or at a CPA cluster node (issue 15 point 1): it says what it found in
/readyz and /healthz, acts on nothing, and never sends a wrong key."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from reauthd.config import load_config
from reauthd.cpa.home import HomeClient
from reauthd.daemon import Daemon
from reauthd.detect.engine import DetectionEngine
from reauthd.detect.home import HomeEventPoller
from reauthd.login.flow import ON_HOME
from reauthd.notify.notifier import Notifier, SendOutcome
from reauthd.notify.templates import Message
from reauthd.sim.home import HomeSimServer
from reauthd.store import Store
from tests.daemon.inprocess import KEY, running, wait_until, write_config
from tests.support.servers import free_port


@pytest.mark.parametrize("node", [False, True])
async def test_daemon_names_a_home_or_a_node_and_acts_on_nothing(tmp_path: Path, node: bool) -> None:
    async with HomeSimServer(KEY, node=node) as target:
        if not node:
            row = target.state.add_credential("codex", "u@x.com")
            target.state.revoke(row)  # Home disabled it itself: must not be misread, nor acted on
        port = free_port()
        daemon = Daemon(load_config(write_config(tmp_path, target.base_url, port=port)))
        async with running(daemon), httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as web:

            async def readyz() -> httpx.Response:
                return await web.get("/readyz")

            texts: list[str] = []

            async def refused() -> bool:
                texts.append((await readyz()).text)
                return "note: CPA 'sim' is a" in texts[-1]

            for _ in range(100):
                if await refused():
                    break
                await wait_until(lambda: True, 0.1, "")
            ready = await readyz()
            health = (await web.get("/healthz")).json()["cpas"]["sim"]
    assert ready.status_code == 503
    if node:
        assert "CPA 'sim': this is a cluster node; point reauthd at its Home" in ready.text
        assert "note: CPA 'sim' is a CPA cluster node (-home-jwt)" in ready.text
        assert health["kind"] == "node"
    else:
        assert 'is a CLIProxyAPIHome v1.0.67-sim: set kind = "home"' in ready.text
        assert "note: CPA 'sim' is a CLIProxyAPIHome v1.0.67-sim" in ready.text
        assert health["kind"] == "home" and health["state"] == "unreachable"
        methods = {(m, status) for m, _, status in target.state.requests}
        assert all(m == "GET" for m, _ in methods)  # nothing disabled, patched or deleted
        assert all(status not in (401, 403) for _, status in methods)  # never a wrong key


class RecordingNotifier(Notifier):
    """Records when each message went out (monotonic seconds) instead of dialling anything."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[tuple[float, Message]] = []

    async def send(self, channel: str, message: Message, now: datetime) -> SendOutcome:
        self.sent.append((time.monotonic(), message))
        return SendOutcome(True)


def home_config(tmp_path: Path, url: str, port: int) -> Path:
    path = write_config(tmp_path, url, port=port)
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace(f'management_key = "{KEY}"', f'management_key = "{KEY}"\nkind = "home"'))
    return path


async def test_daemon_with_kind_home_watches_it_and_a_revocation_reaches_the_notifier(tmp_path: Path) -> None:
    """`kind = "home"`: the daemon lists the Home by UUID and polls its failed request events (no errors
    channel); a node's 401 reaches the notifier within one poll interval + 2 s; the events cursor survives a
    restart (an event seen before the restart is not handed on again)."""
    port = free_port()
    async with HomeSimServer(KEY) as home:
        failing = home.state.add_credential("claude", "failing@example.com")
        home.state.add_credential("codex", "fine@example.com")
        settings = load_config(home_config(tmp_path, home.base_url, port))
        interval = settings.detect.poll_interval_s
        notifier = RecordingNotifier(settings.notify)
        daemon = Daemon(settings, notifier=notifier)
        async with running(daemon), httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as web:
            health = (await web.get("/healthz")).json()["cpas"]["sim"]
            assert health["kind"] == "home" and health["state"] == "ok"
            ready = await web.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert "note: CPA 'sim' is a CLIProxyAPIHome v1.0.67-sim" in ready.text
            failing.upstream_accepts = False
            revoked_at = time.monotonic()
            home.state.record_result(failing, 401, '{"type":"error","error":{"type":"authentication_error",'
                                     '"message":"OAuth token has been revoked"}}')  # fmt: skip
            await wait_until(
                lambda: notifier.sent, interval + 2.0, "the message about the revoked credential"
            )
            took = notifier.sent[0][0] - revoked_at
            # The listing shows the failure too (Home writes it to the row); the events poller hands it on
            # within the same bound, whichever comes first.
            graph = daemon.graph
            assert graph is not None and len(graph.home_pollers) == 1
            poller = graph.home_pollers[0]
            await wait_until(lambda: poller.export_position()["ids"], interval + 2.0, "the events poller")

            # The page cannot run a Home login yet: the message has no link, the page says so and mints
            # nothing at Home; a login made through Home's panel (a new row) is not picked up by itself.
            store = daemon.store
            assert store is not None
            task = store.find_open_task("sim", failing.id, failing.id)
            assert task is not None
            assert await graph.login.start(task.id, datetime.now(UTC)) is ON_HOME
            assert store.get_task(task.id).state is task.state  # not "opened": reminders go on
            home.state.add_credential("claude", "failing@example.com")  # the login through Home's panel
            await graph.engine.cycle()
            assert graph.tasks.adopt_panel_logins(graph.engine.listed_credentials(), datetime.now(UTC)) == []
            assert store.get_task(task.id).state is task.state
        assert took < interval + 2.0, f"{took:.2f} s"
        message = notifier.sent[0][1]
        assert "f***@example.com" in message.title
        assert "/r/" not in message.text + message.markdown  # no link that could not work
        assert "How: log in again through the Home's own management panel" in message.text
        assert "reauthd tasks cancel" in message.text and "Open the link" not in message.text
        assert not any(p.endswith("-auth-url") for _, p, _ in home.state.requests)
        position = Store.open(settings.state.path, lock=False)
        try:
            kept = position.get_kv("detect.home_events.sim")
        finally:
            position.close()
        assert isinstance(kept, dict) and kept["ids"], kept
        # The errors channel was never tried on a Home; no wrong key, nothing written.
        assert all(status not in (401, 403) for _, _, status in home.state.requests)
        assert {m for m, _, _ in home.state.requests} == {"GET", "POST"}  # listing, events, /api-call probe
        events_asked = sum(p.endswith("/request-events") for _, p, _ in home.state.requests)
        assert events_asked >= 1

        # Restart: the saved position is used: a failure Home recorded while reauthd was down is handed on,
        # the one handed on before the restart is not (a fresh poller would start from now and see neither).
        other = home.state.add_credential("codex", "other@example.com")
        home.state.record_result(other, 401, "unauthorized")
        async with HomeClient("sim", home.base_url, KEY) as client:
            engine = DetectionEngine({"sim": client}, settings.detect)
            try:
                fresh = HomeEventPoller("sim", client, engine)
                assert await fresh.poll_once() == 0
                restarted = HomeEventPoller("sim", client, engine)
                assert restarted.restore_position(kept)
                assert await restarted.poll_once() == 1
                view = engine.verdict_for("sim", other.id)
                assert view is not None and view.ref.auth_index == other.id
            finally:
                await engine.aclose()
