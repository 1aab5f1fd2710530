"""The two commands a newcomer types: `make demo` installs the runtime only; `make test` the test tools too."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def dry_run(target: str, venv: Path) -> str:
    # Under `make test` this runs as a sub-make: without MAKELEVEL/MAKEFLAGS and with --no-print-directory
    # it prints only its plan, as it does for a person.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", target, f"VENV={venv}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_demo_installs_the_runtime_only_and_test_the_toolchain(tmp_path: Path) -> None:
    venv = tmp_path / "venv"  # absent: make plans the whole setup
    demo = dry_run("demo", venv)
    assert f"{venv}/bin/python -m pip install --quiet -e .\n" in demo
    assert "[test]" not in demo
    assert demo.rstrip().endswith(f"{venv}/bin/reauthd demo")
    test = dry_run("unit", venv)
    assert "-e '.[test]'" in test
