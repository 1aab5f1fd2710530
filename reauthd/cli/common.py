"""What every subcommand shares: the --config option, loading settings with one-sentence errors, exit codes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from reauthd.config import ConfigError, Settings, load_config, secret_values
from reauthd.logging import configure_logging

# Documented exit codes (README "Exit codes").
EXIT_OK = 0
EXIT_ATTENTION = 1  # scan: something needs attention; run: a runtime failure
EXIT_CONFIG = 2  # configuration error, or (scan) a CPA could not be checked
EXIT_LOCKED = 3  # another daemon holds the state

Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def command_modules() -> list[Register]:
    """Each command group registers its own subcommands (keeps this file free of their imports)."""
    from reauthd.cli import commands

    registers: list[Register] = [commands.register]
    for optional in ("reauthd.tasks.cli", "reauthd.cli.retire"):
        try:
            module = __import__(optional, fromlist=["register"])
        except ImportError:  # a command group still being built
            continue
        registers.append(module.register)
    return registers


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="configuration file (default: $REAUTHD_CONFIG, else /etc/reauthd/config.toml)",
    )


def load_settings_or_exit(args: argparse.Namespace, *, log: bool = True, quiet: bool = False) -> Settings:
    """Load the configuration or exit 2 with its one-sentence error. `quiet` (one-shot commands): log
    warnings and errors only, readable on a terminal, unless the configuration asks for debug."""
    try:
        settings = load_config(getattr(args, "config", None))
    except ConfigError as exc:
        print(f"reauthd: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
    if log:
        level = settings.log.level
        if quiet and level != "debug":
            level = "warning"
        configure_logging(
            level,
            settings.log.format,
            stream=sys.stderr,
            secret_values=secret_values(settings),
            mask_emails=settings.log.mask_emails,
        )
    return settings


def fail(message: str, code: int = EXIT_ATTENTION) -> Any:
    print(f"reauthd: {message}", file=sys.stderr)
    raise SystemExit(code)
