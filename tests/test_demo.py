"""`reauthd demo` (what `make demo` runs) works end to end: digest printed, login through the page, done."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from reauthd.demo import DemoStateDirInUse, demo_settings, prepare_state_dir, write_demo_config
from tests.reliability.recipient import Recipient, links_in
from tests.support.servers import free_port

pytestmark = pytest.mark.slow


def wait_for_text(log: Path, needle: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if needle in text:
            return text
        time.sleep(0.2)
    raise AssertionError(f"the demo never printed {needle!r}:\n{log.read_text(errors='replace')[-3000:]}")


def start_demo(tmp_path: Path) -> tuple[subprocess.Popen[bytes], str, Path, Path, str]:
    """Start `reauthd demo` on free ports and wait for its first link: (process, base URL, log, state
    folder, log text). A port `free_port` handed out can be taken before the demo binds it (by any
    outbound connection's ephemeral port); the demo then says it cannot listen or start and exits, and
    the next try takes other ports."""
    state_dir = tmp_path / "demo-state"
    for attempt in range(3):
        web_port, sim_port = free_port(), free_port()
        base = f"http://127.0.0.1:{web_port}"
        log = tmp_path / f"demo-{attempt}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    *("-m", "reauthd", "demo", "--port", str(web_port), "--sim-port", str(sim_port)),
                    *("--state-dir", str(state_dir)),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + 60
        while True:
            text = log.read_text(errors="replace")
            if f"{base}/r/" in text:
                return proc, base, log, state_dir, text
            if proc.poll() is not None:
                if "cannot listen on" in text or "cannot start the simulator" in text:
                    break  # a port was taken meanwhile: try others
                raise AssertionError(f"the demo stopped early:\n{text[-3000:]}")
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait(timeout=30)
                raise AssertionError(f"the demo never printed a link:\n{text[-3000:]}")
            time.sleep(0.2)
    raise AssertionError("three pairs of free ports were each taken before the demo could bind them")


def test_demo_shows_the_whole_flow(tmp_path: Path) -> None:
    proc, base, log, state_dir, text = start_demo(tmp_path)
    try:
        link = links_in(text, base)[0]
        # The banner names the operator view (with a strong token), health, metrics and the CLI line.
        token = re.search(rf"{re.escape(base)}/operator/login#token=(\S+)", text)
        assert token is not None and len(token.group(1)) >= 32
        assert f"{base}/healthz" in text and f"{base}/metrics" in text
        config = state_dir / "config.toml"
        assert f"tasks list --config {config}" in text
        listed = httpx.get(f"{base}/operator", headers={"Authorization": f"Bearer {token.group(1)}"})
        assert listed.status_code == 200 and "codex" in listed.text
        with Recipient(base) as person:
            task_id, page = person.open_link(link)
            assert "Start login" in page
            page = person.start(task_id, page).text
            callback = person.sign_in(task_id)
            assert callback.startswith("http://localhost:1455/auth/callback?")
            answer = person.paste(task_id, page, callback)
            assert answer.status_code in (200, 303), answer.text[:500]
            deadline = time.monotonic() + 60
            while person.status(task_id).get("state") != "done":
                assert time.monotonic() < deadline, person.status(task_id)
                time.sleep(0.5)
        wait_for_text(log, "Resolved", 30)
        tasks = subprocess.run(
            [sys.executable, "-m", "reauthd", "tasks", "list", "--config", str(config), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert tasks.returncode == 0 and task_id in tasks.stdout
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, log.read_text(errors="replace")[-3000:]
    text = log.read_text(errors="replace")
    assert "Traceback" not in text
    assert text.rstrip().endswith(
        f"reauthd demo stopped; its state and configuration stay in {state_dir}/ until the next demo."
    )
    assert (state_dir / "state.db").exists() and (state_dir / "config.toml").exists()
    # The next `make demo` takes the folder back: every file this demo left is one of its own.
    prepare_state_dir(state_dir)
    assert list(state_dir.iterdir()) == []


def test_demo_folder_is_emptied_of_its_own_files_only(tmp_path: Path) -> None:
    folder = tmp_path / "demo-state"
    assert prepare_state_dir(folder) == folder
    write_demo_config(folder, "http://127.0.0.1:9", 8390, "t" * 43)
    (folder / "state.db").write_bytes(b"old")
    prepare_state_dir(folder)
    assert list(folder.iterdir()) == []  # the next demo starts fresh
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(DemoStateDirInUse, match=r"notes\.txt"):
        prepare_state_dir(folder)
    (folder / "notes.txt").unlink()
    (folder / "config.toml").write_text("[state]\n")  # somebody's own configuration
    with pytest.raises(DemoStateDirInUse, match="not written by the demo"):
        prepare_state_dir(folder)
    assert (folder / "config.toml").read_text() == "[state]\n"


def test_demo_config_loads_with_a_strong_operator_token(tmp_path: Path) -> None:
    settings = demo_settings(prepare_state_dir(tmp_path / "d"), "http://127.0.0.1:9", 8390)
    assert settings.web.operator_token is not None
    assert len(settings.web.operator_token.get_secret_value()) >= 32
    assert settings.state.path == tmp_path / "d" / "state.db"
    assert settings.web.operator_name
