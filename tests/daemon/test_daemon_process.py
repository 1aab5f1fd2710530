"""`reauthd run` as a real process against the simulator: readiness, one digest, links, signals, the lock."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from reauthd.sim.cli import seed_demo_world
from reauthd.sim.server import SimThread, run_sim_in_thread
from tests.support.inbox import Inbox, serve_inbox
from tests.support.servers import free_port

pytestmark = pytest.mark.slow
KEY = "daemon-test-key-CANARY"


@pytest.fixture
def sim() -> Iterator[SimThread]:
    thread = run_sim_in_thread(management_key=KEY)
    try:
        yield thread
    finally:
        thread.stop()


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    with serve_inbox() as box:
        yield box


def write_config(
    tmp_path: Path, sim_url: str, inbox: Inbox, *, key: str = KEY, port: int | None = None
) -> Path:
    port = port or free_port()
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[state]
path = "{tmp_path / "state.db"}"
[[cpa]]
name = "sim"
base_url = "{sim_url}"
management_key = "{key}"
[detect]
poll_interval_s = 5
probe_interval_s = 600
[notify]
urls = ["{inbox.url()}"]
group_window_s = 1
[web]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
[log]
format = "json"
level = "info"
""",
        encoding="utf-8",
    )
    return path


def start(config: Path, tmp_path: Path, name: str = "daemon") -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / f"{name}.log"
    handle = log.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "reauthd", "run", "--config", str(config)],
        stdout=handle,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    handle.close()
    return proc, log


def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def test_daemon_raises_one_digest_with_working_links_and_stops_cleanly(
    sim: SimThread, inbox: Inbox, tmp_path: Path
) -> None:
    sim.call(seed_demo_world)
    port = free_port()
    config = write_config(tmp_path, sim.base_url, inbox, port=port)
    proc, log = start(config, tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: ready(base), 30, "/readyz")
        # The codex revocation was seen by live traffic; the Claude one is silent (probe only).
        wait_for(lambda: len(inbox.messages()) >= 1, 30, "a notification")
        body = inbox.messages()[0]["message"]
        assert "a***@example.com" in body
        assert "alice@example.com" not in body
        links = [w for w in body.split() if w.startswith(f"{base}/r/")]
        assert links, body
        with httpx.Client(base_url=base, timeout=5, follow_redirects=True) as browser:
            opening = browser.get(links[0])
            assert opening.status_code == 200
            # The link page sets the session cookie and hands over to a token-free address.
            continue_to = re.search(r'href="(/t/[^"]+)"', opening.text)
            assert continue_to is not None, opening.text
            landing = browser.get(continue_to.group(1))
            assert landing.status_code == 200
            assert "Start login" in landing.text
        metrics = httpx.get(f"{base}/metrics", timeout=5).text
        assert 'reauthd_notifications_sent_total{route="default"} 1.0' in metrics
        # The live Codex revocation was confirmed by a probe, counted by what it showed.
        assert re.search(
            r'reauthd_probes_total\{cpa="sim",outcome="needs_reauth",provider="codex"\} [1-9]', metrics
        )
        assert 'reauthd_credentials{cause="revoked",cpa="sim",verdict="needs_reauth"}' in metrics
        assert "alice" not in metrics
        # The last-successful-poll gauge is the time of a real list request, not of the latest tick.
        found = re.search(r'reauthd_last_successful_poll_timestamp_seconds\{cpa="sim"\} (\S+)', metrics)
        assert found is not None
        polled = float(found.group(1))
        oplog = httpx.get(f"{sim.base_url}/_sim/oplog", timeout=5).json()
        lists = [e["ts"] for e in oplog if e["path"].endswith("/auth-files") and e["method"] == "GET"]
        assert min(abs(polled - t) for t in lists) < 0.5, (polled, lists)
    finally:
        code = stop(proc)
    assert code == 0, log.read_text()
    output = log.read_text()
    assert KEY not in output
    assert "Traceback" not in output


def test_second_daemon_on_the_same_state_refuses(sim: SimThread, inbox: Inbox, tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, sim.base_url, inbox, port=port)
    first, first_log = start(config, tmp_path, "first")
    try:
        wait_for(lambda: ready(f"http://127.0.0.1:{port}"), 30, "first daemon ready")
        second_config = write_config(tmp_path, sim.base_url, inbox)
        second = subprocess.run(
            [sys.executable, "-m", "reauthd", "run", "--config", str(second_config)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert second.returncode == 3
        assert "Traceback" not in second.stderr
        assert "reauthd:" in second.stderr
    finally:
        assert stop(first) == 0, first_log.read_text()


def test_wrong_key_is_tried_once_across_poll_cycles(sim: SimThread, inbox: Inbox, tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, sim.base_url, inbox, key="wrong-key-CANARY", port=port)
    proc, log = start(config, tmp_path)
    try:
        wait_for(lambda: "daemon.started" in log.read_text(), 30, "daemon started")
        time.sleep(12)  # more than two poll cycles of 5 s
        readyz = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert readyz.status_code == 503
        counters = httpx.get(f"{sim.base_url}/_sim/counters", timeout=5).json()
        assert sum(counters["failed_key_attempts"].values()) == 1, counters
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert 'reauthd_management_errors_total{cpa="sim",error="ManagementKeyRejected"} 1.0' in metrics
        # No poll ever succeeded: the staleness alert must be able to fire.
        assert 'reauthd_last_successful_poll_timestamp_seconds{cpa="sim"} 0.0' in metrics
    finally:
        assert stop(proc) == 0
    assert "wrong-key-CANARY" not in log.read_text()


def test_systemd_ready_after_cpa_answered_and_stopping_on_sigterm(
    sim: SimThread, inbox: Inbox, tmp_path: Path
) -> None:
    """Type=notify: READY=1 comes once the store is open and the CPA answered; STOPPING=1 on SIGTERM."""
    sock_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(sock_path))
    listener.settimeout(30)
    port = free_port()
    config = write_config(tmp_path, sim.base_url, inbox, port=port)
    log = tmp_path / "daemon.log"
    with log.open("wb") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "reauthd", "run", "--config", str(config)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, "NOTIFY_SOCKET": str(sock_path)},
        )
    try:
        messages: list[str] = []
        while not any("READY=1" in m for m in messages):
            messages.append(listener.recv(4096).decode())
        counters = httpx.get(f"{sim.base_url}/_sim/counters", timeout=5).json()
        assert counters["list_requests"] >= 1  # the CPA answered before readiness was declared
        assert ready(f"http://127.0.0.1:{port}")
        proc.send_signal(signal.SIGTERM)
        while not any("STOPPING=1" in m for m in messages):
            messages.append(listener.recv(4096).decode())
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        listener.close()
    assert any(m.startswith("STATUS=") or "\nSTATUS=" in m for m in messages)


def test_sighup_reloads_and_a_broken_file_keeps_the_running_configuration(
    sim: SimThread, inbox: Inbox, tmp_path: Path
) -> None:
    port = free_port()
    config = write_config(tmp_path, sim.base_url, inbox, port=port)
    proc, log = start(config, tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: ready(base), 30, "ready")
        good = config.read_text()
        config.write_text(good + "\n[tasks]\nbogus = 1\n")
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "daemon.reload_failed" in log.read_text(), 20, "reload refused")
        assert ready(base)
        config.write_text(good.replace("poll_interval_s = 5", "poll_interval_s = 7"))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "daemon.reloaded" in log.read_text(), 20, "reloaded")
        wait_for(lambda: ready(base), 30, "ready again after the reload")
    finally:
        assert stop(proc) == 0, log.read_text()
    text = log.read_text()
    assert "unknown key 'bogus' in [tasks]" in text
    assert "Traceback" not in text
