"""`reauthd demo`: the simulator and the daemon together, with notifications printed to the terminal."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import sys
from pathlib import Path
from typing import Any

import apprise
from apprise.decorators import notify as apprise_notify

from reauthd.config import ConfigError, Settings, load_config, secret_values
from reauthd.daemon import Daemon
from reauthd.logging import configure_logging
from reauthd.sim.cli import seed_demo_world
from reauthd.sim.server import SimServer

DEMO_SCHEMA = "reauthddemo"
SIM_KEY = "sim-key"
SIM_PROXY_KEY = "sim-proxy-key"
#: Where the demo keeps its state and config.toml (relative to the working directory; ignored by git).
DEMO_STATE_DIR = Path("demo-state")


def _print_notification(body: str, title: str, notify_type: str, *args: Any, **kwargs: Any) -> bool:
    bar = "─" * 72
    print(f"\n{bar}\n📨 {title}\n{bar}\n{body}\n{bar}\n", flush=True)
    return True


def _register_terminal_channel() -> None:
    # A custom Apprise schema that prints: the demo exercises the real Apprise delivery path.
    if DEMO_SCHEMA not in apprise.Apprise().details().get("schemas", {}):
        apprise_notify(on=DEMO_SCHEMA, name="reauthd demo terminal")(_print_notification)  # type: ignore[no-untyped-call]


DEMO_MARKER = "# reauthd demo configuration"
# Everything a demo leaves in its folder: its config, the state database (with SQLite's side files), the
# lock, and the cookie-signing key kept beside the database (store/keyfile.py key_path_for).
DEMO_FILES = (
    "config.toml",
    "state.db",
    "state.db-wal",
    "state.db-shm",
    "state.db.lock",
    "state.db.cookie-key",
)


class DemoStateDirInUse(Exception):
    """The demo's folder holds something the demo did not write: it is left alone."""


def prepare_state_dir(state_dir: Path) -> Path:
    """Empty the demo's folder of the previous demo's files (only those) and return its absolute path.

    The folder survives Ctrl-C, so the state can be looked at after the demo; the next demo starts fresh.
    A folder with other files, or a config.toml the demo did not write, is refused rather than touched.
    """
    state_dir = state_dir.resolve()
    if state_dir.exists():
        if not state_dir.is_dir():
            raise DemoStateDirInUse(f"{state_dir} is not a folder")
        config = state_dir / "config.toml"
        if config.exists() and not config.read_text(encoding="utf-8", errors="replace").startswith(
            DEMO_MARKER
        ):
            raise DemoStateDirInUse(f"{config} was not written by the demo")
        others = [p.name for p in state_dir.iterdir() if p.name not in DEMO_FILES]
        if others:
            raise DemoStateDirInUse(
                f"{state_dir} holds files the demo did not write ({', '.join(sorted(others))})"
            )
        for name in DEMO_FILES:
            (state_dir / name).unlink(missing_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return state_dir


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def write_demo_config(state_dir: Path, sim_url: str, web_port: int, operator_token: str) -> Path:
    """The demo's configuration as a file, so `reauthd tasks list --config …` works next to it."""
    public = f"http://127.0.0.1:{web_port}"
    text = f"""{DEMO_MARKER}: rewritten by every `reauthd demo`; the simulator's keys are not secrets.

[state]
path = {_toml_string(str(state_dir / "state.db"))}

[[cpa]]
name = "sim"
base_url = {_toml_string(sim_url)}
management_key = {_toml_string(SIM_KEY)}
proxy_api_key = {_toml_string(SIM_PROXY_KEY)}
verify_models = {{ vertex = "gemini-2.5-flash", antigravity = "gemini-2.5-flash" }}

[detect]
poll_interval_s = 5
probe_interval_s = 60

[notify]
urls = [{_toml_string(DEMO_SCHEMA + "://terminal")}]
group_window_s = 3

[web]
listen = {_toml_string(f"127.0.0.1:{web_port}")}
public_url = {_toml_string(public)}
operator_token = {_toml_string(operator_token)}
operator_name = "the reauthd demo"
operator_contact = "the terminal that runs make demo"

[log]
level = "warning"
format = "console"
"""
    path = state_dir / "config.toml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    return path


def demo_settings(
    state_dir: Path, sim_url: str, web_port: int, operator_token: str | None = None
) -> Settings:
    """Write the demo's config.toml into `state_dir` and load it the way `reauthd run` would."""
    token = operator_token or secrets.token_urlsafe(32)
    return load_config(write_demo_config(state_dir, sim_url, web_port, token))


async def _demo(web_port: int, sim_port: int, duration_s: float, state_dir: Path) -> int:
    try:
        folder = prepare_state_dir(state_dir)
    except (DemoStateDirInUse, OSError) as exc:
        print(f"reauthd: cannot use {state_dir} for the demo: {exc}; pass --state-dir", file=sys.stderr)
        return 2
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
        _register_terminal_channel()
        try:
            settings = demo_settings(folder, sim.base_url, web_port)
        except ConfigError as exc:
            print(f"reauthd: {exc}", file=sys.stderr)
            return 2
        configure_logging("warning", "console", stream=sys.stderr, secret_values=secret_values(settings))
        print(_banner(sim.base_url, settings, names, folder), flush=True)
        daemon = Daemon(settings)
        runner = asyncio.create_task(daemon.run())
        if duration_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(runner), timeout=duration_s)
            daemon.request_stop()
        code = await runner
    finally:
        await sim.stop()
    print(stopped_line(folder), flush=True)
    return code


def stopped_line(folder: Path) -> str:
    return f"\nreauthd demo stopped; its state and configuration stay in {_shown_path(folder)}/ until the next demo."


def _shown_path(path: Path) -> str:
    """`path` relative to the working directory when it is inside it (shorter to paste), else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _reauthd_command() -> str:
    """How to run this reauthd from the user's shell: `reauthd` when that is the one on PATH, else the
    script next to this Python (`make demo` runs .venv/bin/reauthd, which is rarely on PATH)."""
    script = Path(sys.executable).parent / "reauthd"
    on_path = shutil.which("reauthd")
    if on_path is not None and (not script.exists() or Path(on_path).resolve() == script.resolve()):
        return "reauthd"
    return _shown_path(script) if script.exists() else f"{_shown_path(Path(sys.executable))} -m reauthd"


def _banner(sim_url: str, settings: Settings, names: list[str], folder: Path) -> str:
    public = settings.web.public_url
    token = settings.web.operator_token.get_secret_value() if settings.web.operator_token else ""
    config = _shown_path(folder / "config.toml")
    return f"""
reauthd demo
============
CPA simulator      {sim_url}   (management key: {SIM_KEY})
reauthd's page     {public}
operator view      {public}/operator/login#token={token}
health, metrics    {public}/healthz   {public}/metrics
state and config   {_shown_path(folder)}/   (kept after Ctrl-C, until the next demo)
credentials        {", ".join(names)}

Two accounts are already revoked: Codex alice (seen by live traffic) and Claude carol (silent: only a
probe finds it). Within seconds reauthd confirms the Codex one and prints a notification below with its
link; the Claude one is found by the idle probe schedule within a minute. Open a link in your browser
and press "Start login":
  - the simulator's fake provider page signs you in and redirects to http://localhost:1455/... ,
    which fails to load — that is expected: copy the whole address, switch back and press "Paste and send";
  - reauthd verifies the new credential with one cheap request, then retires the old file.
The operator view (link above, it signs you in) lists every task with its actions: copy or resend the
link, cancel, start again, or raise a task for any credential.

In another terminal:
  {_reauthd_command()} tasks list --config {config}
Revoke another account at any time:
  curl -s -X POST {sim_url}/_sim/credentials/<file name>/revoke -H 'content-type: application/json' \\
       -d '{{"kind": "token_invalidated", "live": true}}'
Watch CPA's side:  curl -s -H 'Authorization: Bearer {SIM_KEY}' {sim_url}/v0/management/auth-files
Stop with Ctrl-C.
"""


def run_demo(
    *, web_port: int = 8390, sim_port: int = 8317, duration_s: float = 0, state_dir: Path = DEMO_STATE_DIR
) -> int:
    try:
        return asyncio.run(_demo(web_port, sim_port, duration_s, state_dir))
    except KeyboardInterrupt:
        print(stopped_line(state_dir.resolve()), flush=True)
        return 0
