"""Issue 11: the daemon raises its soft open-files limit as far as the hard limit allows, never lowers it."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

SCRIPT = (
    "import resource; from reauthd.ops.limits import raise_open_files_limit as r; f = r(); "
    "print(f.before, f.now, f.hard, resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
)


def _run(soft: int, hard: int) -> list[int]:
    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, preexec_fn=limits
    )
    return [int(part) for part in done.stdout.split()]


@pytest.mark.parametrize(
    ("soft", "hard", "expected"),
    [
        (512, 4096, [512, 4096, 4096, 4096]),  # raised to the hard limit
        (1024, 1024, [1024, 1024, 1024, 1024]),  # systemd's default with no LimitNOFILE=: nothing to do
        (2048, 2048, [2048, 2048, 2048, 2048]),
    ],
)
def test_soft_limit_is_raised_up_to_the_hard_limit(soft: int, hard: int, expected: list[int]) -> None:
    _soft, current_hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if current_hard != resource.RLIM_INFINITY and current_hard < hard:
        pytest.skip("this machine's hard limit is lower than the case needs")
    assert _run(soft, hard) == expected
