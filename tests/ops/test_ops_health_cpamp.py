"""A CPAMP source's state in /readyz details, /healthz and /metrics (issue 16, point 7)."""

from __future__ import annotations

from pathlib import Path

import httpx
from starlette.applications import Starlette

from reauthd.detect.cpamp import SourceState
from reauthd.ops.health import Health, health_routes
from reauthd.ops.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]


def ready_health() -> Health:
    health = Health(cpas=["main"], store_check=lambda: True)
    health.cpa_ok("main")
    return health


async def test_cpamp_trouble_is_shown_but_does_not_make_reauthd_unready(serve_app) -> None:
    health = ready_health()
    sentence = "CPAMP 'panel' refused the admin key (401); not asking again until reauthd restarts"
    health.set_cpamp({"panel": (SourceState.KEY_REFUSED, sentence)})
    app = Starlette(routes=health_routes(health, Metrics(cpas=["main"])))
    async with serve_app(app) as base, httpx.AsyncClient(base_url=base, timeout=5) as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.text == f"ok\nnote: {sentence}\n"
        summary = await client.get("/healthz")
        assert summary.status_code == 200
        assert summary.json()["cpamp"] == {"panel": {"state": "key_refused", "reason": sentence}}
        scrape = (await client.get("/metrics")).text
        assert 'reauthd_cpamp_state{cpamp="panel",state="key_refused"} 1.0' in scrape
        assert 'reauthd_cpamp_state{cpamp="panel",state="ok"} 0.0' in scrape

        health.set_cpamp({"panel": (SourceState.OK, None)})
        assert (await client.get("/readyz")).text == "ok\n"
        scrape = (await client.get("/metrics")).text
        assert 'reauthd_cpamp_state{cpamp="panel",state="ok"} 1.0' in scrape
        assert 'reauthd_cpamp_state{cpamp="panel",state="key_refused"} 0.0' in scrape


def test_config_example_names_cpamps_own_port() -> None:
    text = (ROOT / "config.example.toml").read_text()
    block = text[text.index("# [[cpamp]]") :].split("\n\n")[0]
    assert 'base_url = "http://127.0.0.1:18317"' in block
