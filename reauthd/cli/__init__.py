"""The `reauthd` command: argument parsing and dispatch to one module per command group."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from reauthd import __version__
from reauthd.cli import common


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reauthd",
        description="Background reauthorization daemon for CLIProxyAPI.",
    )
    parser.add_argument("--version", action="version", version=f"reauthd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for register in common.command_modules():
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.handler(args)
    except KeyboardInterrupt:
        return 130
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
