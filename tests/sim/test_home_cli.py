"""`reauthd sim --home` and `reauthd sim --node` serve until SIGTERM and never print the key (issue 15)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.support.servers import free_port


@pytest.mark.parametrize("mode", ["--home", "--node"])
def test_sim_home_and_node_modes(mode: str) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reauthd",
            "sim",
            mode,
            "--port",
            str(port),
            "--management-key",
            "k-secret-123",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        assert first.endswith(f"listening on http://127.0.0.1:{port}")
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
        if mode == "--home":
            assert r.headers["x-cpa-home-version"]
            files = r.json()["files"]
            assert {f["status_message"] for f in files} >= {
                "unauthorized"
            }  # the demo world has a Home-disabled one
        else:
            assert r.status_code == 404 and r.content == b""
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "k-secret-123" not in out + err
