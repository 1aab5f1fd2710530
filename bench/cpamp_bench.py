"""CPAMP benchmark: reading one Codex inspection run of N accounts, as CPAMP v1.12.x serves it.

CPAMP's `GET /v0/management/codex-inspection/runs/{id}` answers `{run, results, logs}` with every result
(quota windows included) and a log line per account (service/codexinspection/service.go RunDetail). The
simulator (reauthd/sim/cpamp.py) serves such a run; results here carry three quota windows and a log line
each, to be near a real run's size. The body is streamed in 64 KiB chunks from memory (no socket), so what
is measured is reauthd's reading alone. Printed per size: body size, wall time of `CPAMPSource.fetch`, and
the peak of Python allocations while it reads (tracemalloc, a second run; the old reader held the whole
body and its decoded copy, and refused anything over 8 MiB).

    .venv/bin/python bench/cpamp_bench.py                  # 5,000 / 50,000
    .venv/bin/python bench/cpamp_bench.py --sizes 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from pydantic import SecretStr  # noqa: E402

from reauthd.config import CPAMPConfig  # noqa: E402
from reauthd.detect.cpamp import RUNS_PATH, CPAMPSource  # noqa: E402
from reauthd.sim.cpamp import CPAMPSim, Policy  # noqa: E402

ADMIN = "bench-admin-key"


def _window(ident: str, seconds: int) -> dict[str, Any]:
    return {
        "id": ident,
        "labelKey": f"codex_quota.{ident}",
        "usedPercent": 42.0,
        "resetLabel": "3h 12m",
        "resetAtMs": 1_800_000_000_000,
        "resetAccuracy": "exact",
        "limitWindowSeconds": seconds,
        "modelScope": {"kind": "feature", "key": "codex", "complete": True},
    }


class _Chunks(httpx.AsyncByteStream):
    """The run's body in 64 KiB chunks, as a socket delivers it (the bytes exist once, outside the reader)."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        view = memoryview(self.body)
        for offset in range(0, len(view), 65536):
            yield bytes(view[offset : offset + 65536])


def build(size: int) -> tuple[CPAMPSim, bytes]:
    sim = CPAMPSim(ADMIN, policy=Policy(queue_enabled=True))
    results = []
    for n in range(size):
        outcome = "deactivated_workspace" if n % 997 == 0 else "healthy"
        name = f"codex-{n:06}-user{n}@example.com-plus.json"
        result = sim.inspection_result(name, outcome, auth_index=f"{n:016x}")
        if outcome == "healthy":
            result["planType"] = "plus"
            result["quotaWindows"] = [
                _window("five_hour", 18_000),
                _window("weekly", 604_800),
                _window("spark", 604_800),
            ]
        results.append(result)
    run_id = sim.add_run(results)
    logs = [
        {"id": n, "runId": run_id, "level": "info", "message": "账号探测完成", "createdAtMs": 1,
         "detail": {"fileName": r["fileName"], "displayAccount": r["fileName"], "action": r["action"],
                    "statusCode": r["statusCode"], "usedPercent": 42.0}}
        for n, r in enumerate(results)
    ]  # fmt: skip
    body = json.dumps({"run": sim.runs[-1], "results": results, "logs": logs}, ensure_ascii=False).encode()
    return sim, body


def transport(sim: CPAMPSim, body: bytes) -> httpx.MockTransport:
    """CPAMP's answers (the simulator's), the run detail streamed from `body`."""

    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/health":
            return httpx.Response(200, json={"ok": True, "service": "bench"})
        if path == "/usage-service/account-processing-policy":
            return httpx.Response(200, json=sim.policy_status())
        if path == "/v0/management/account-action-candidates":
            return httpx.Response(200, json=sim.list_candidates("pending", 500))
        if path == RUNS_PATH:
            return httpx.Response(200, json=sim.list_runs(5))
        return httpx.Response(200, stream=_Chunks(body), headers={"Content-Type": "application/json"})

    return httpx.MockTransport(handle)


async def fetch(sim: CPAMPSim, body: bytes, *, traced: bool) -> tuple[float, float, int]:
    config = CPAMPConfig(
        name="bench", base_url="http://cpamp.invalid", admin_key=SecretStr(ADMIN), cpa="main"
    )
    source = CPAMPSource(config, transport=transport(sim, body))
    try:
        if traced:
            tracemalloc.start()
        started = time.perf_counter()
        read = await source.fetch(datetime.now(UTC))
        wall = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1] if traced else 0
        if traced:
            tracemalloc.stop()
    finally:
        await source.aclose()
    assert read is not None and read.inspection is not None
    return wall, peak, sum(1 for f in read.inspection if not f.positive)


async def one(size: int) -> None:
    sim, body = build(size)
    wall, _, failures = await fetch(sim, body, traced=False)
    _, peak, _ = await fetch(sim, body, traced=True)
    print(
        f"{size:>7,} accounts  body {len(body) / 2**20:6.1f} MiB  fetch {wall:5.2f} s  "
        f"peak Python allocations while reading {peak / 2**20:5.1f} MiB  ({failures} deactivated found)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="5000,50000")
    args = parser.parse_args()
    for size in (int(s) for s in args.sizes.split(",")):
        asyncio.run(one(size))


if __name__ == "__main__":
    main()
