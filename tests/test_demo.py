"""`reauthd demo` (what `make demo` runs) works end to end: digest printed, login through the page, done."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

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


def test_demo_shows_the_whole_flow(tmp_path: Path) -> None:
    web_port, sim_port = free_port(), free_port()
    base = f"http://127.0.0.1:{web_port}"
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "reauthd", "demo", "--port", str(web_port), "--sim-port", str(sim_port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        text = wait_for_text(log, f"{base}/r/", 60)
        link = links_in(text, base)[0]
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
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, log.read_text(errors="replace")[-3000:]
    assert "Traceback" not in log.read_text(errors="replace")
