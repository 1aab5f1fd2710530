"""`reauthd demo`: the simulator and the daemon together, with notifications printed to the terminal."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
from pathlib import Path
from typing import Any

import apprise
from apprise.decorators import notify as apprise_notify
from pydantic import SecretStr

from reauthd.config import (
    CPAConfig,
    DetectConfig,
    LogConfig,
    NotifyConfig,
    Settings,
    StateConfig,
    WebConfig,
    secret_values,
)
from reauthd.daemon import Daemon
from reauthd.logging import configure_logging
from reauthd.sim.cli import seed_demo_world
from reauthd.sim.server import SimServer

DEMO_SCHEMA = "reauthddemo"
SIM_KEY = "sim-key"
SIM_PROXY_KEY = "sim-proxy-key"


def _print_notification(body: str, title: str, notify_type: str, *args: Any, **kwargs: Any) -> bool:
    bar = "─" * 72
    print(f"\n{bar}\n📨 {title}\n{bar}\n{body}\n{bar}\n", flush=True)
    return True


def _register_terminal_channel() -> None:
    # A custom Apprise schema that prints: the demo exercises the real Apprise delivery path.
    if DEMO_SCHEMA not in apprise.Apprise().details().get("schemas", {}):
        apprise_notify(on=DEMO_SCHEMA, name="reauthd demo terminal")(_print_notification)  # type: ignore[no-untyped-call]


def demo_settings(state_dir: Path, sim_url: str, web_port: int) -> Settings:
    public = f"http://127.0.0.1:{web_port}"
    return Settings(
        state=StateConfig(path=state_dir / "state.db"),
        cpa=[
            CPAConfig(
                name="sim",
                base_url=sim_url,
                management_key=SecretStr(SIM_KEY),
                proxy_api_key=SecretStr(SIM_PROXY_KEY),
                verify_models={"vertex": "gemini-2.5-flash", "antigravity": "gemini-2.5-flash"},
            )
        ],
        detect=DetectConfig(poll_interval_s=5, probe_interval_s=60),
        notify=NotifyConfig(urls=[SecretStr(f"{DEMO_SCHEMA}://terminal")], group_window_s=3),
        web=WebConfig(listen=f"127.0.0.1:{web_port}", public_url=public),
        log=LogConfig(level="warning", format="console"),
    )


async def _demo(web_port: int, sim_port: int, duration_s: float) -> int:
    sim = SimServer(SIM_KEY, port=sim_port)
    try:
        await sim.start()
    except OSError as exc:
        print(
            f"reauthd: cannot start the simulator on port {sim_port} ({exc.strerror or exc})", file=sys.stderr
        )
        return 2
    try:
        names = seed_demo_world(sim.state)
        with tempfile.TemporaryDirectory(prefix="reauthd-demo-") as state_dir:
            settings = demo_settings(Path(state_dir), sim.base_url, web_port)
            configure_logging("warning", "console", stream=sys.stderr, secret_values=secret_values(settings))
            _register_terminal_channel()
            print(_banner(sim.base_url, settings, names), flush=True)
            daemon = Daemon(settings)
            runner = asyncio.create_task(daemon.run())
            if duration_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(runner), timeout=duration_s)
                daemon.request_stop()
            return await runner
    finally:
        await sim.stop()


def _banner(sim_url: str, settings: Settings, names: list[str]) -> str:
    public = settings.web.public_url
    return f"""
reauthd demo
============
CPA simulator      {sim_url}   (management key: {SIM_KEY})
reauthd's page     {public}
credentials        {", ".join(names)}

Two accounts are already revoked: Codex alice (seen by live traffic) and Claude carol (silent: only a
probe finds it). Within seconds reauthd confirms the Codex one and prints a notification below with its
link; the Claude one is found by the idle probe schedule within a minute. Open a link in your browser
and press "Start login":
  - the simulator's fake provider page signs you in and redirects to http://localhost:1455/... ,
    which fails to load — that is expected: copy the whole address and paste it into reauthd's page;
  - reauthd verifies the new credential with one cheap request, then retires the old file.

Revoke another account at any time:
  curl -s -X POST {sim_url}/_sim/credentials/<file name>/revoke -H 'content-type: application/json' \\
       -d '{{"kind": "token_invalidated", "live": true}}'
Watch CPA's side:  curl -s -H 'Authorization: Bearer {SIM_KEY}' {sim_url}/v0/management/auth-files
Stop with Ctrl-C.
"""


def run_demo(*, web_port: int = 8390, sim_port: int = 8317, duration_s: float = 0) -> int:
    try:
        return asyncio.run(_demo(web_port, sim_port, duration_s))
    except KeyboardInterrupt:
        return 0
