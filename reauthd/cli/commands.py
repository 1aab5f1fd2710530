"""The core subcommands: run, scan, check-config, sim, demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from reauthd.cli.common import (
    EXIT_CONFIG,
    EXIT_OK,
    add_config_option,
    load_settings_or_exit,
)
from reauthd.config import effective_config
from reauthd.detect.schedule import sweep_warning


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser("run", help="run the daemon (watch, notify, serve the login page, verify, retire)")
    add_config_option(run)
    run.set_defaults(handler=cmd_run)

    scan = sub.add_parser("scan", help="list every credential of every configured CPA with its verdict")
    add_config_option(scan)
    scan.add_argument("--json", action="store_true", help="print JSON instead of a table")
    scan.add_argument("--probe", action="store_true", help="confirm suspects now with a cheap probe request")
    scan.add_argument(
        "--probe-all",
        action="store_true",
        help="probe every credential now (finds silent revocations; paced by [detect] probe_rate_per_s)",
    )
    scan.set_defaults(handler=cmd_scan)

    check = sub.add_parser("check-config", help="validate the configuration and print it with secrets masked")
    add_config_option(check)
    check.add_argument("--json", action="store_true", help="print JSON instead of TOML")
    check.add_argument(
        "--credentials",
        type=int,
        metavar="N",
        help="how many credentials all CPAs hold together: warn when [detect] probe_interval_s cannot be "
        "kept for that many at probe_rate_per_s",
    )
    check.set_defaults(handler=cmd_check_config)

    sim = sub.add_parser("sim", help="run the bundled CPA simulator (for trials and tests)")
    sim.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sim.add_argument(
        "--port", type=int, default=8317, help="port to listen on (default 8317; 0 = any free port)"
    )
    sim.add_argument(
        "--management-key", default="sim-key", help="the simulator's management key (default sim-key)"
    )
    sim.add_argument("--empty", action="store_true", help="start with no credentials instead of the demo set")
    sim.add_argument(
        "--cpamp-port",
        type=int,
        default=None,
        help="also serve a CPA Manager Plus simulator on this port (CPAMP's default is 18317; 0 = any free port)",
    )
    sim.add_argument(
        "--cpamp-admin-key",
        default="cpamp-admin-key",
        help="the CPAMP simulator's Admin Key (default cpamp-admin-key)",
    )
    kind = sim.add_mutually_exclusive_group()
    kind.add_argument(
        "--home", action="store_true", help="simulate a CLIProxyAPIHome cluster manager instead of a CPA"
    )
    kind.add_argument(
        "--node", action="store_true", help="simulate a CPA cluster node (-home-jwt): no management at all"
    )
    sim.set_defaults(handler=cmd_sim)

    demo = sub.add_parser("demo", help="run reauthd against the simulator so you can watch the whole flow")
    demo.add_argument("--port", type=int, default=8390, help="port of reauthd's page (default 8390)")
    demo.add_argument("--sim-port", type=int, default=8317, help="port of the simulator (default 8317)")
    demo.add_argument(
        "--duration", type=float, default=0, help="stop after this many seconds (default: run until Ctrl-C)"
    )
    demo.add_argument(
        "--state-dir",
        type=Path,
        default=Path("demo-state"),
        help="folder for the demo's state and config.toml, emptied at start, kept after it stops "
        "(default ./demo-state)",
    )
    demo.set_defaults(handler=cmd_demo)


def cmd_run(args: argparse.Namespace) -> int:
    from reauthd.daemon import run_daemon

    settings = load_settings_or_exit(args)
    return run_daemon(settings, config_path=args.config)


def cmd_scan(args: argparse.Namespace) -> int:
    from reauthd.detect.scan import exit_code, render_json, render_table, scan

    settings = load_settings_or_exit(args, quiet=True)
    report = asyncio.run(scan(settings, probe=args.probe, probe_all=args.probe_all))
    print(render_json(report) if args.json else render_table(report))
    return exit_code(report)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(str(value))


def render_toml(config: dict[str, Any]) -> str:
    lines: list[str] = []
    for section, body in config.items():
        if isinstance(body, list):
            for entry in body:
                lines.append(f"[[{section}]]")
                lines.extend(f"{k} = {_toml_value(v)}" for k, v in entry.items() if v is not None)
                lines.append("")
        elif isinstance(body, dict):
            lines.append(f"[{section}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in body.items() if v is not None)
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = load_settings_or_exit(args, log=False)
    if args.credentials is not None:
        if args.credentials < 0:
            print("reauthd: --credentials must be 0 or more", file=sys.stderr)
            return EXIT_CONFIG
        detect = settings.detect
        warning = sweep_warning(args.credentials, detect.probe_interval_s, detect.probe_rate_per_s)
        if warning is not None:
            print(f"reauthd: warning: {warning}", file=sys.stderr)
    config = effective_config(settings)
    if args.json:
        print(json.dumps(config, indent=2))
    else:
        sys.stdout.write(render_toml(config))
    return EXIT_OK


def cmd_sim(args: argparse.Namespace) -> int:
    from reauthd.logging import configure_logging
    from reauthd.sim.cli import run_sim_cli

    if not 0 <= args.port < 65536:
        print(f"reauthd: --port {args.port} is not a TCP port", file=sys.stderr)
        return EXIT_CONFIG
    if args.cpamp_port is not None and not 0 <= args.cpamp_port < 65536:
        print(f"reauthd: --cpamp-port {args.cpamp_port} is not a TCP port", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(
        "info", "auto", stream=sys.stderr, secret_values=[args.management_key, args.cpamp_admin_key]
    )
    try:
        if args.home or args.node:
            from reauthd.sim.home import run_home_sim_cli

            asyncio.run(
                run_home_sim_cli(
                    args.host,
                    args.port,
                    management_key=args.management_key,
                    node=args.node,
                    seed_demo=not args.empty,
                )
            )
            return EXIT_OK
        asyncio.run(
            run_sim_cli(
                args.host,
                args.port,
                management_key=args.management_key,
                seed_demo=not args.empty,
                cpamp_port=args.cpamp_port,
                cpamp_admin_key=args.cpamp_admin_key,
            )
        )
    except OSError as exc:
        print(f"reauthd: cannot listen on {args.host}:{args.port} ({exc.strerror or exc})", file=sys.stderr)
        return EXIT_CONFIG
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from reauthd.demo import run_demo

    return run_demo(
        web_port=args.port, sim_port=args.sim_port, duration_s=args.duration, state_dir=args.state_dir
    )
