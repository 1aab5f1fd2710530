"""Detection benchmark: one detection cycle and detection latency against the CPA simulator.

For each size the simulator (a thread of this process) is filled with that many credentials of mixed
providers, a few percent revoked; detection then runs in a *separate* process so its CPU time and peak
RSS are its own. Measured per size:

- wall and CPU time of one detection cycle (cold: first sight of every credential; steady: the next);
- peak RSS of the detecting process (VmHWM; ru_maxrss would include the simulator's, see `_peak_rss_mb`);
- management requests per steady cycle and list requests per cycle (simulator counters);
- latency (a): an `errors` event → confirmed verdict, including the confirming probe;
- latency (b): a failure visible only to polling (stream off) → confirmed verdict.

Targets (issue 3, 2-core machine): 10,000 credentials in < 1 s CPU and < 150 MB RSS per cycle;
exactly one list request per CPA per cycle; (a) < 2 s; (b) < one poll interval + 1 s.

    .venv/bin/python bench/detect_bench.py                 # 1,000 / 10,000 / 50,000
    .venv/bin/python bench/detect_bench.py --sizes 1000,10000 --poll-interval 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KEY = "bench-management-key"


# ---------------------------------------------------------------------------------------------- worker


async def _sim_json(http: Any, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    response = await http.request(method, path, json=body)
    response.raise_for_status()
    return response.json()


async def _wait_event(engine: Any, auth_index: str, limit_s: float) -> float | None:
    """perf_counter() when the confirmed event for `auth_index` arrived, or None after `limit_s`."""
    try:
        async with asyncio.timeout(limit_s):
            while (await engine.confirmed.get()).ref.auth_index != auth_index:
                pass
    except TimeoutError:
        return None
    return time.perf_counter()


async def _settle(engine: Any) -> None:
    while engine._in_flight:
        await asyncio.gather(*list(engine._in_flight.values()), return_exceptions=True)


async def worker(base_url: str, poll_interval: float) -> dict[str, Any]:
    import httpx

    from reauthd.config import DetectConfig
    from reauthd.core.model import VerdictKind
    from reauthd.cpa.client import CPAClient
    from reauthd.detect.engine import DetectionEngine

    result: dict[str, Any] = {}
    config = DetectConfig(
        poll_interval_s=poll_interval, error_stream=False, probe_concurrency=16, probe_rate_per_s=100
    )
    async with (
        CPAClient("bench", base_url, KEY, timeout=120) as client,
        httpx.AsyncClient(base_url=f"{base_url}/_sim", timeout=120) as sim,
    ):
        engine = DetectionEngine({"bench": client}, config)
        before = await _sim_json(sim, "GET", "/counters")
        cpu, wall = time.process_time(), time.perf_counter()
        views = await engine.cycle()
        result["cold_wall_s"] = time.perf_counter() - wall
        result["cold_cpu_s"] = time.process_time() - cpu
        result["credentials"] = len(views)
        await _settle(engine)  # confirming probes of the already-failing few percent
        result["confirmed_at_start"] = engine.confirmed.qsize()
        mid = await _sim_json(sim, "GET", "/counters")
        cpu, wall = time.process_time(), time.perf_counter()
        await engine.cycle()
        result["steady_wall_s"] = time.perf_counter() - wall
        result["steady_cpu_s"] = time.process_time() - cpu
        after = await _sim_json(sim, "GET", "/counters")
        await _settle(engine)
        result["list_requests_per_cycle"] = (after["list_requests"] - before["list_requests"]) / 2
        result["management_requests_steady_cycle"] = after["management_requests"] - mid["management_requests"]
        while not engine.confirmed.empty():
            engine.confirmed.get_nowait()

        healthy = [v for v in engine.latest() if v.verdict.kind is VerdictKind.HEALTHY and v.credential]
        codex = [v for v in healthy if v.credential is not None and v.credential.provider == "codex"]
        pick = iter(codex or healthy)

        # (a) errors event -> confirmed, including the confirming probe.
        stream = asyncio.create_task(engine._consume_errors("bench"))
        await asyncio.sleep(1.0)  # subscribed
        victim = next(pick)
        started = time.perf_counter()
        await _sim_json(sim, "POST", f"/credentials/{victim.ref.name}/revoke", {"live": True})
        done = await _wait_event(engine, victim.ref.auth_index, 30)
        result["latency_errors_s"] = None if done is None else done - started
        stream.cancel()
        await asyncio.gather(stream, return_exceptions=True)
        await _settle(engine)

        # (b) visible only to polling: the stream is off, the poll loop runs at its interval.
        # Worst case: the change lands just after a poll, so it waits for the whole next interval.
        polled = asyncio.Event()
        own_cycle = engine.cycle

        async def cycle_and_signal(*args: Any, **kwargs: Any) -> Any:
            views = await own_cycle(*args, **kwargs)
            polled.set()
            return views

        engine.cycle = cycle_and_signal
        poller = asyncio.create_task(engine._poll_loop())
        await polled.wait()
        victim = next(pick)
        started = time.perf_counter()
        await _sim_json(sim, "POST", f"/credentials/{victim.ref.name}/revoke", {"live": True})
        done = await _wait_event(engine, victim.ref.auth_index, poll_interval * 3 + 30)
        result["latency_poll_s"] = None if done is None else done - started
        poller.cancel()
        await asyncio.gather(poller, return_exceptions=True)
        await engine.aclose()
    result["peak_rss_mb"] = _peak_rss_mb()
    return result


def _peak_rss_mb() -> float:
    """Peak RSS of this process since it started. VmHWM, not ru_maxrss: Linux carries ru_maxrss over
    fork+exec, so a worker started by the process that holds the simulator (50,000 credentials) would
    report the simulator's peak (~440 MB), not its own."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------------------------- driver


def _run_size(sim: Any, size: int, failing: float, poll_interval: float) -> dict[str, Any]:
    from reauthd.sim import scenarios

    sim.call(lambda st: st.reset())
    t0 = time.perf_counter()
    sim.call(lambda st: scenarios.bulk_generate(st, size, failing_fraction=failing, seed=size))
    setup = time.perf_counter() - t0
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", sim.base_url, "--poll-interval", str(poll_interval)],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"worker failed for {size}:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["size"] = size
    result["setup_s"] = setup
    return result


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "timeout"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000,10000,50000", help="comma-separated credential counts")
    parser.add_argument(
        "--failing", type=float, default=0.03, help="fraction revoked before detection starts"
    )
    parser.add_argument(
        "--poll-interval", type=float, default=5.0, help="poll interval for latency (b), ≥ 5 s"
    )
    parser.add_argument("--json", action="store_true", help="print the raw results as JSON too")
    parser.add_argument("--worker", metavar="BASE_URL", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        import logging

        import structlog

        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
        print(json.dumps(asyncio.run(worker(args.worker, args.poll_interval))))
        return

    from reauthd.sim.server import run_sim_in_thread

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    sim = run_sim_in_thread(management_key=KEY, watcher_delay=0.2)
    results = []
    try:
        for size in sizes:
            print(f"… {size:,} credentials", file=sys.stderr, flush=True)
            results.append(_run_size(sim, size, args.failing, args.poll_interval))
    finally:
        sim.stop()

    header = (
        "credentials",
        "cycle wall s (cold/steady)",
        "cycle CPU s (cold/steady)",
        "peak RSS MB",
        "list req/cycle",
        "mgmt req/steady cycle",
        "errors→confirmed s",
        f"poll-only→confirmed s (worst case, interval {args.poll_interval:g})",
    )
    rows = [
        (
            f"{r['size']:,}",
            f"{_fmt(r['cold_wall_s'])} / {_fmt(r['steady_wall_s'])}",
            f"{_fmt(r['cold_cpu_s'])} / {_fmt(r['steady_cpu_s'])}",
            _fmt(r["peak_rss_mb"], 0),
            _fmt(r["list_requests_per_cycle"], 0),
            _fmt(r["management_requests_steady_cycle"]),
            _fmt(r["latency_errors_s"], 3),
            _fmt(r["latency_poll_s"], 2),
        )
        for r in results
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-|-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
