"""Home detection benchmark: the Home adapter's listing cycle and revocation latency against the Home simulator.

Everything runs in this process (simulator included), so the numbers are an upper bound for reauthd alone.
Measured per size:

- wall time of one detection cycle through `HomeClient` (cold: first sight; steady: the next), which reads
  Home's listing whole and rewrites it to CPA's shape (reauthd/cpa/home.py);
- latency (a): a node's 401 lands in Home's request events → `HomeEventPoller.poll_once()` → a confirmed
  needs_reauth verdict (confirming probe through Home's /api-call included); add up to one poll interval;
- latency (b): Home disables a credential itself (dead refresh token) → the next listing cycle → a confirmed
  verdict; add up to one poll interval.

Target (issue 15): a revocation reaches the person within one poll interval + 2 s.

    .venv/bin/python bench/home_bench.py                # 1,000 and 10,000 credentials
    .venv/bin/python bench/home_bench.py --sizes 500
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reauthd.core.model import VerdictKind  # noqa: E402
from reauthd.cpa.home import HomeClient  # noqa: E402
from reauthd.detect.engine import DetectionEngine  # noqa: E402
from reauthd.detect.home import HomeEventPoller  # noqa: E402
from reauthd.sim.home import HomeSimServer  # noqa: E402

KEY = "bench-management-key"
PROVIDERS = ("codex", "claude", "antigravity", "xai")


async def confirmed(engine: DetectionEngine, auth_index: str, deadline_s: float = 30.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < deadline_s:
        view = engine.verdict_for("home", auth_index)
        if view is not None and view.verdict.kind is VerdictKind.NEEDS_REAUTH and view.verdict.confirmed:
            return time.monotonic() - started
        await asyncio.sleep(0.01)
    raise TimeoutError("no confirmed verdict")


async def run(size: int) -> None:
    async with HomeSimServer(KEY) as home, HomeClient("home", home.base_url, KEY, timeout=60) as client:
        rows = [home.state.add_credential(PROVIDERS[i % 4], f"user{i}@example.com") for i in range(size)]
        engine = DetectionEngine({"home": client})
        poller = HomeEventPoller("home", client, engine)
        try:
            t0 = time.monotonic()
            await engine.cycle(views=False)
            cold = time.monotonic() - t0
            t0 = time.monotonic()
            await engine.cycle(views=False)
            steady = time.monotonic() - t0

            victim = rows[size // 2]
            t0 = time.monotonic()
            home.state.record_result(victim, 401, '{"error":{"message":"OAuth token has been revoked"}}')
            victim.upstream_accepts = False
            await poller.poll_once()
            await confirmed(engine, victim.id)
            latency_a = time.monotonic() - t0

            quiet = rows[size // 3]
            t0 = time.monotonic()
            home.state.refresh_failed_terminally(quiet)
            await engine.cycle(views=False)
            await confirmed(engine, quiet.id)
            latency_b = time.monotonic() - t0
        finally:
            await engine.aclose()
    print(
        f"{size:>6} credentials: cycle cold {cold:.2f} s, steady {steady:.2f} s; "
        f"latency (a) request event → confirmed {latency_a:.2f} s, "
        f"(b) Home auto-disable → confirmed {latency_b:.2f} s (each + up to one poll interval)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000,10000", help="comma-separated credential counts")
    args = parser.parse_args()
    for size in (int(s) for s in args.sizes.split(",")):
        asyncio.run(run(size))


if __name__ == "__main__":
    main()
