"""What answers at a CPA's base_url in /readyz details and /healthz (issue 15 point 1)."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
from starlette.applications import Starlette

from reauthd.cpa.client import CPAHealth, HealthState
from reauthd.cpa.kind import ClusterNodeRefused, FoundKind, HomeNotSupported, HomeVersion
from reauthd.ops.health import Health, health_routes


async def test_home_and_node_are_named_in_readyz_and_healthz(serve_app) -> None:  # type: ignore[no-untyped-def]
    health = Health(cpas=["plain", "home", "node"], store_check=lambda: True)
    now = datetime(2026, 12, 4, tzinfo=UTC)
    health.cpa_snapshot(
        CPAHealth("plain", HealthState.OK, now, None, None, None, FoundKind.CPA, "plain CPA v7.2.140")
    )
    home_sentence = HomeNotSupported("home", "/v0/management/auth-files", HomeVersion("v1.0.67")).sentence
    assert home_sentence.startswith("CPA 'home' is a CLIProxyAPIHome v1.0.67: set kind = \"home\"")
    health.cpa_snapshot(
        CPAHealth(
            "home", HealthState.OK, now, None, home_sentence, None, FoundKind.HOME, "CLIProxyAPIHome v1.0.67"
        )
    )
    health.cpa_unreachable("home", home_sentence)  # what the daemon does with the engine's poll problem
    node = ClusterNodeRefused("node", "/v0/management/auth-files")
    health.cpa_snapshot(
        CPAHealth(
            "node",
            HealthState.UNVERIFIED,
            None,
            None,
            None,
            None,
            FoundKind.NODE,
            "CPA cluster node (-home-jwt)",
        )
    )
    health.cpa_error("node", node)
    app = Starlette(routes=health_routes(health))
    async with serve_app(app) as base, httpx.AsyncClient(base_url=base, timeout=5) as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        lines = ready.text.splitlines()
        assert home_sentence in lines[0]
        assert "CPA 'node': this is a cluster node; point reauthd at its Home" in lines[0]
        assert lines[1:] == [
            "note: CPA 'home' is a CLIProxyAPIHome v1.0.67",
            "note: CPA 'node' is a CPA cluster node (-home-jwt)",
        ]
        cpas = (await client.get("/healthz")).json()["cpas"]
        assert cpas["plain"] == {
            "state": "ok",
            "reason": "",
            "kind": "cpa",
            "kind_text": "plain CPA v7.2.140",
        }
        assert cpas["home"]["kind"] == "home" and cpas["home"]["state"] == "unreachable"
        assert cpas["node"]["kind"] == "node"


async def test_a_plain_cpa_keeps_readyz_a_bare_ok(serve_app) -> None:  # type: ignore[no-untyped-def]
    health = Health(cpas=["main"], store_check=lambda: True)
    health.cpa_snapshot(
        CPAHealth("main", HealthState.OK, None, None, None, None, FoundKind.CPA, "plain CPA v7.2.140")
    )
    app = Starlette(routes=health_routes(health))
    async with serve_app(app) as base, httpx.AsyncClient(base_url=base, timeout=5) as client:
        assert (await client.get("/readyz")).text == "ok\n"
