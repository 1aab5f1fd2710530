"""The daemon pointed at a CLIProxyAPIHome or at a CPA cluster node (issue 15 point 1): it says what it found in
/readyz and /healthz, acts on nothing, and never sends a wrong key."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from reauthd.config import load_config
from reauthd.daemon import Daemon
from reauthd.sim.home import HomeSimServer
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
        assert "is a CLIProxyAPIHome v1.0.67-sim: reauthd cannot watch a Home cluster yet" in ready.text
        assert "note: CPA 'sim' is a CLIProxyAPIHome v1.0.67-sim" in ready.text
        assert health["kind"] == "home" and health["state"] == "unreachable"
        methods = {(m, status) for m, _, status in target.state.requests}
        assert all(m == "GET" for m, _ in methods)  # nothing disabled, patched or deleted
        assert all(status not in (401, 403) for _, status in methods)  # never a wrong key
