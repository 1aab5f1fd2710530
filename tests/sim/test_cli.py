"""`reauthd sim`: run_sim_cli serves the seeded world until SIGTERM and never prints the key."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx

from tests.support.servers import free_port


def test_run_sim_cli_serves_demo_until_sigterm() -> None:
    """The CLI prints the base URL, serves the demo credentials and stops cleanly on SIGTERM."""
    port = free_port()
    code = (
        "import asyncio; from reauthd.sim.cli import run_sim_cli; "
        f"asyncio.run(run_sim_cli('127.0.0.1', {port}, management_key='k-secret-123', seed_demo=True))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.strip() == f"CPA simulator listening on http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while True:
            try:
                r = httpx.get(
                    f"http://127.0.0.1:{port}/v0/management/auth-files",
                    headers={"Authorization": "Bearer k-secret-123"},
                )
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        files = r.json()["files"]
        assert {f["type"] for f in files} == {"codex", "claude", "kimi", "xai", "vertex", "antigravity"}
        assert any(f["name"] == "codex-alice@example.com-plus.json" and f["status"] == "error" for f in files)
        os.kill(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert "k-secret-123" not in first + out + err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
