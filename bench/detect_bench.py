"""Detection benchmark: one detection cycle, and what the person feels: revocation → message delivered.

For each size the simulator (a thread of this process) is filled with that many credentials of mixed
providers. Two phases, each in a *separate* process so its CPU time and peak RSS are its own:

1. Detection alone (a worker process, 3 % of the credentials revoked before it starts):
   - wall and CPU time of one detection cycle (cold: first sight of every credential; steady: the next);
   - peak RSS of the worker (VmHWM; ru_maxrss would include the simulator's, see `_peak_rss_mb`);
   - management requests per steady cycle and list requests per cycle (simulator counters);
   - in-process latency: an `errors` event → confirmed verdict, a poll-only failure → confirmed verdict.
2. The whole daemon (`reauthd run` with the default probe settings: `probe_rate_per_s` 2,
   `probe_interval_s` 6 h, `probe_concurrency` 4; `group_window_s` 0 so the digest window adds nothing),
   notifying through real Apprise (`json://`) to a loopback inbox:
   - `errors` event → message in the inbox (a live revocation CPA reports on its RESP stream), p50/p95;
   - poll-only change → message (the same revocation, published while nobody listened: only the
     listing shows it);
   - daemon CPU (process time) per poll period and per listing (the `detect.cycle` log line), peak RSS;
   - list requests per poll cycle, the effective idle-sweep period (`reauthd_sweep_period_seconds`) and
     the idle probe rate actually sent.

Targets (issue 12, 2-core machine): at 50,000 and 100,000 credentials `errors` event → message < 2 s
p95, poll-only change → message < one poll interval + the listing's duration + 2 s, one list request
per cycle, one cycle < 2 s CPU and < 250 MB peak RSS at 100,000; at 10,000 nothing worse than before.

    .venv/bin/python bench/detect_bench.py                         # 1,000 / 10,000 / 50,000
    .venv/bin/python bench/detect_bench.py --sizes 100000          # the large size (several minutes)
    .venv/bin/python bench/detect_bench.py --sizes 1000,10000 --samples 5 --no-daemon
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
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


# ---------------------------------------------------------------------------------------------- daemon

DAEMON_CONFIG = """
[state]
path = "{state}"
[[cpa]]
name = "bench"
base_url = "{sim_url}"
management_key = "{key}"
timeout_s = 120
[detect]
poll_interval_s = {poll}
[notify]
urls = ["{notify_url}"]
group_window_s = 0
[web]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
[log]
format = "json"
level = "debug"
"""


class _Daemon:
    """`reauthd run` as a child process: readiness, CPU (process time), peak RSS, metrics, its log."""

    def __init__(self, sim_url: str, notify_url: str, poll_interval: float, workdir: Path) -> None:
        from tests.support.servers import free_port

        self.port = free_port()
        self.workdir = workdir
        config = workdir / "config.toml"
        config.write_text(
            DAEMON_CONFIG.format(
                state=workdir / "state.db",
                sim_url=sim_url,
                key=KEY,
                poll=poll_interval,
                notify_url=notify_url,
                port=self.port,
            ),
            encoding="utf-8",
        )
        self.log = workdir / "daemon.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "reauthd", "run", "--config", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
        self.peak_kb = 0

    def _status(self, name: str) -> int:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith(name + ":"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def sample(self) -> None:
        self.peak_kb = max(self.peak_kb, self._status("VmHWM"))

    def cpu(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def get(self, path: str) -> Any:
        import httpx

        return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=10)

    def metric(self, name: str) -> float | None:
        """Sum of every series of one metric in /metrics (None when the daemon does not export it)."""
        total, found = 0.0, False
        for line in self.get("/metrics").text.splitlines():
            if line.startswith(name) and line[len(name)] in " {":
                total += float(line.rsplit(" ", 1)[1])
                found = True
        return total if found else None

    def wait_ready(self, timeout: float) -> float:
        import httpx

        started = time.perf_counter()
        while time.perf_counter() - started < timeout:
            if self.proc.poll() is not None:
                raise SystemExit(f"the daemon exited:\n{self.log.read_text()[-3000:]}")
            self.sample()
            try:
                if self.get("/readyz").status_code == 200:
                    return time.perf_counter() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"the daemon was not ready within {timeout:.0f} s")

    def cycles_logged(self) -> list[dict[str, Any]]:
        cycles = []
        for line in self.log.read_text(encoding="utf-8", errors="replace").splitlines():
            if '"detect.cycle"' in line:
                with contextlib.suppress(ValueError):
                    cycles.append(json.loads(line))
        return cycles

    def list_calls_and_cycles(self) -> tuple[int, int]:
        text = self.log.read_text(encoding="utf-8", errors="replace")
        lists = sum(
            1
            for line in text.splitlines()
            if '"cpa.call"' in line and '"GET /v0/management/auth-files"' in line
        )
        return lists, text.count('"detect.cycle"')

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.sample()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def _wait(predicate: Any, timeout: float, every: float = 0.02, on_wait: Any = None) -> float | None:
    """perf_counter() when `predicate()` became true, or None after `timeout` seconds."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if predicate():
            return time.perf_counter()
        if on_wait is not None:
            on_wait()
        time.sleep(every)
    return None


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _run_daemon(sim: Any, names: list[str], inbox: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The whole daemon against the simulator: revocation → message in the loopback inbox."""
    from reauthd.sim import scenarios

    poll = args.poll_interval
    result: dict[str, Any] = {}
    listings = lambda: sim.call(lambda st: st.counters.list_requests)  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="reauthd-bench-") as tmp:
        daemon = _Daemon(sim.base_url, inbox.url(), poll, Path(tmp))
        try:
            result["d_ready_s"] = daemon.wait_ready(600)
            # Let it settle: two more listings after readiness (the first sweep probes are spread out).
            seen = listings()
            _wait(lambda: listings() >= seen + 2, 6 * poll + 120, every=0.05, on_wait=daemon.sample)
            # Steady poll periods: process CPU from the start of one listing to the start of the next.
            seen = listings()
            _wait(lambda: listings() > seen, 3 * poll + 120, every=0.02)
            cpu0, wall0, lists0 = daemon.cpu(), time.perf_counter(), listings()
            probes0 = daemon.metric("reauthd_probes_total") or 0.0
            periods = args.periods
            _wait(lambda: listings() >= lists0 + periods, periods * (3 * poll + 120), 0.02, daemon.sample)
            wall = time.perf_counter() - wall0
            result["d_cpu_per_period_s"] = (daemon.cpu() - cpu0) / periods
            result["d_period_wall_s"] = wall / periods
            result["d_idle_probes_per_s"] = ((daemon.metric("reauthd_probes_total") or 0.0) - probes0) / wall
            result["d_sweep_period_s"] = daemon.metric("reauthd_sweep_period_seconds")

            rng = random.Random(len(names))
            pool = [n for n in names if n.startswith("codex-")]
            rng.shuffle(pool)
            victims = iter(pool)

            def revoke_unheard(st: Any, victim: str) -> None:
                """CPA publishes the failure while nobody is subscribed (as during a stream reconnect):
                only the listing shows it."""
                subscribers, st.subscribers["errors"] = st.subscribers["errors"], []
                try:
                    scenarios.revoke(st, victim, live=True)
                finally:
                    st.subscribers["errors"] = subscribers

            def sample(unheard: bool, limit: float) -> float | None:
                before = len(inbox.messages("new"))
                victim = next(victims)
                started = time.perf_counter()
                if unheard:
                    sim.call(lambda st: revoke_unheard(st, victim))
                else:
                    sim.call(lambda st: scenarios.revoke(st, victim, live=True))
                done = _wait(lambda: len(inbox.messages("new")) > before, limit, 0.01, daemon.sample)
                # Out of step with the poll and tick timers, so the samples see their phases.
                time.sleep(rng.uniform(0.3, 2.3))
                return None if done is None else done - started

            # `errors` event: the default Codex revocation, found by a request (CPA publishes it).
            errors = [sample(False, 60) for _ in range(args.samples)]
            # Poll only: the same revocation, but its `errors` event reaches nobody.
            polled = [sample(True, 6 * poll + 60) for _ in range(max(2, args.samples // 2))]
            result["d_errors_s"] = errors
            result["d_poll_s"] = polled
            # List requests per cycle over the daemon's whole run, from its own log: every auth-files
            # call it made and every cycle it finished (the metric lags a tick behind the cycle).
            lists, cycles_done = daemon.list_calls_and_cycles()
            result["d_list_requests_per_cycle"] = lists / cycles_done if cycles_done else None
            cycles = daemon.cycles_logged()[-periods:]
            if cycles:
                result["d_listing_wall_s"] = max(c.get("seconds", 0.0) for c in cycles)
                result["d_cycle_cpu_s"] = max(c.get("cpu_s", 0.0) for c in cycles)
            daemon.sample()
            result["d_peak_rss_mb"] = daemon.peak_kb / 1024
        finally:
            daemon.stop()
            if args.keep_logs:
                keep = Path(args.keep_logs) / f"daemon-{len(names)}.log"
                keep.parent.mkdir(parents=True, exist_ok=True)
                keep.write_bytes(daemon.log.read_bytes())
    return result


# ---------------------------------------------------------------------------------------------- driver


def _run_size(sim: Any, size: int, inbox: Any, args: argparse.Namespace) -> dict[str, Any]:
    from reauthd.sim import scenarios

    result: dict[str, Any] = {"size": size}
    if args.worker_phase:
        result.update(_run_worker(sim, size, args.failing, args.poll_interval))
    if args.daemon_phase:
        sim.call(lambda st: st.reset())
        names = sim.call(lambda st: scenarios.bulk_generate(st, size, failing_fraction=0.0, seed=size))
        print(f"  … daemon at {size:,}", file=sys.stderr, flush=True)
        result.update(_run_daemon(sim, names, inbox, args))
    return result


def _run_worker(sim: Any, size: int, failing: float, poll_interval: float) -> dict[str, Any]:
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
    result["setup_s"] = setup
    return result


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "timeout"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _ms(values: list[float | None]) -> str:
    done = [v for v in values if v is not None]
    lost = len(values) - len(done)
    if not done:
        return "timeout"
    text = f"{_fmt(_pct(done, 0.5))} / {_fmt(_pct(done, 0.95))} / {_fmt(max(done))}"
    return text + (f" ({lost} timed out)" if lost else "")


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-|-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    print()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000,10000,50000", help="comma-separated credential counts")
    parser.add_argument(
        "--failing", type=float, default=0.03, help="fraction revoked before the detection worker starts"
    )
    parser.add_argument(
        "--poll-interval", type=float, default=5.0, help="poll interval for the latencies, ≥ 5 s"
    )
    parser.add_argument("--samples", type=int, default=8, help="`errors` revocations per size (daemon)")
    parser.add_argument("--periods", type=int, default=3, help="poll periods measured per size (daemon)")
    parser.add_argument("--no-worker", dest="worker_phase", action="store_false", help="skip phase 1")
    parser.add_argument("--no-daemon", dest="daemon_phase", action="store_false", help="skip phase 2")
    parser.add_argument("--keep-logs", metavar="DIR", help="copy each daemon's log into DIR")
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
    from tests.support.inbox import serve_inbox

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    sim = run_sim_in_thread(management_key=KEY, watcher_delay=0.2)
    results = []
    try:
        with serve_inbox("bench-inbox") as inbox:
            for size in sizes:
                print(f"… {size:,} credentials", file=sys.stderr, flush=True)
                results.append(_run_size(sim, size, inbox, args))
    finally:
        sim.stop()

    if args.worker_phase:
        print("Detection alone (worker process):")
        _table(
            (
                "credentials",
                "cycle wall s (cold/steady)",
                "cycle CPU s (cold/steady)",
                "peak RSS MB",
                "list req/cycle",
                "mgmt req/steady cycle",
                "errors→confirmed s",
                f"poll-only→confirmed s (interval {args.poll_interval:g})",
            ),
            [
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
            ],
        )
    if args.daemon_phase:
        print("The whole daemon, revocation → message delivered (Apprise json:// to a loopback inbox):")
        _table(
            (
                "credentials",
                "errors→message s (p50/p95/max)",
                "poll-only→message s (p50/p95/max)",
                "listing s",
                "cycle CPU s",
                "CPU per poll period s",
                "peak RSS MB",
                "list req/cycle",
                "sweep period h",
                "idle probes/s",
            ),
            [
                (
                    f"{r['size']:,}",
                    _ms(r["d_errors_s"]),
                    _ms(r["d_poll_s"]),
                    _fmt(r.get("d_listing_wall_s")),
                    _fmt(r.get("d_cycle_cpu_s")),
                    _fmt(r["d_cpu_per_period_s"]),
                    _fmt(r["d_peak_rss_mb"], 0),
                    _fmt(r["d_list_requests_per_cycle"]),
                    "n/a" if r["d_sweep_period_s"] is None else _fmt(r["d_sweep_period_s"] / 3600, 1),
                    _fmt(r["d_idle_probes_per_s"]),
                )
                for r in results
            ],
        )
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
