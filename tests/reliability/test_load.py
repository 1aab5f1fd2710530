"""Load: 50,000 credentials in the simulator and a wave of 500 revocations against a real daemon — every
task raised once, the notifications grouped into a few digests, peak memory within the deployed limit, a steady
poll cycle within its CPU budget."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from reauthd.sim import scenarios
from reauthd.sim.server import run_sim_in_thread
from reauthd.sim.state import SimState
from tests.reliability.daemon_process import KEY, DaemonConfig, DaemonProcess, wait_for
from tests.reliability.recipient import links_in
from tests.reliability.staging import APPRISE_TOKEN
from tests.support.inbox import serve_inbox

pytestmark = pytest.mark.slow

CREDENTIALS = 50_000
WAVE = 500
POLL_S = 15
# The memory limit of the Kubernetes example (deploy/container/kubernetes.yaml: limits.memory 384Mi).
RSS_BUDGET_MB = 384
# Daemon CPU over one later poll period (a full cycle over 50,000 credentials plus the ticks and reconciles
# in between). README's benchmark: 1.6-1.9 s per cycle at 50,000 on the 2-core development machine; this run
# measured 1.7 s. The budget (~3x) leaves room for a CI machine twice as slow and still catches a cycle
# that got ~3x more expensive (a per-credential rebuild or re-parse creeping back in).
CYCLE_CPU_BUDGET_S = 5.0


@dataclass
class LoadRun:
    wave: list[str]
    tasks: list[dict[str, Any]]
    digests: list[dict[str, Any]]
    kinds: dict[str, int]
    base: str
    ready_s: float
    raised_s: float
    announced_s: float
    wave_cpu_s: float
    cycle_cpu_s: float
    cycle_wall_s: float
    peak_rss_mb: float
    logs: str

    def report(self) -> str:
        return (
            f"load: {CREDENTIALS} credentials, {WAVE} revoked: ready in {self.ready_s:.1f} s; all tasks raised in "
            f"{self.raised_s:.1f} s, announced in {self.announced_s:.1f} s in {len(self.digests)} digest(s); "
            f"daemon CPU {self.wave_cpu_s:.1f} s up to then, {self.cycle_cpu_s:.1f} s per later poll cycle "
            f"({self.cycle_wall_s:.1f} s from one listing to the next); "
            f"peak RSS (VmHWM) {self.peak_rss_mb:.0f} MiB"
        )


def revoke_wave(state: SimState, names: list[str]) -> None:
    for name in names:
        scenarios.revoke(state, name, live=True)


def full_listings(state: SimState) -> int:
    """How many unfiltered `GET /auth-files` (one per poll cycle) reauthd has sent so far."""
    return sum(
        1
        for entry in state.oplog
        if entry.get("method") == "GET"
        and entry.get("path") == "/v0/management/auth-files"
        and not entry["query"]
    )


@pytest.fixture(scope="module")
def load_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoadRun]:
    sim = run_sim_in_thread(management_key=KEY, watcher_delay=0.5)
    try:
        with serve_inbox(APPRISE_TOKEN) as inbox:
            names = sim.call(
                lambda s: s.bulk_generate(CREDENTIALS, providers=("codex", "claude", "xai"), live=False)
            )
            wave = random.Random(7).sample(names, WAVE)
            proc = DaemonProcess(
                DaemonConfig(
                    sim_url=sim.base_url,
                    notify_url=inbox.url(),
                    state_dir=tmp_path_factory.mktemp("load"),
                    poll_interval_s=POLL_S,
                    probe_concurrency=16,
                    probe_rate_per_s=100,
                    group_window_s=5,
                )
            )
            try:
                yield _run(sim, inbox, proc, wave)
            finally:
                proc.stop()
    finally:
        sim.stop()


def _run(sim: Any, inbox: Any, proc: DaemonProcess, wave: list[str]) -> LoadRun:
    started = time.monotonic()
    proc.start(ready_timeout=120)
    ready_s = time.monotonic() - started
    began = time.monotonic()
    sim.call(lambda s: revoke_wave(s, wave))
    wait_for(lambda: len(proc.tasks()) >= WAVE and proc.sample_rss(), 150, f"{WAVE} tasks", every=0.5)
    raised_s = time.monotonic() - began
    wait_for(
        lambda: all(t["state"] == "notified" for t in proc.tasks()) and proc.sample_rss(),
        60,
        "every task announced",
        every=0.5,
    )
    announced_s = time.monotonic() - began
    wave_cpu = proc.cpu_seconds()
    # One more full poll period over all 50,000, from the start of one listing to the start of the next:
    # nothing new may be raised or sent, and its CPU is what every steady cycle costs.
    seen = sim.call(full_listings)
    wait_for(lambda: sim.call(full_listings) > seen, 2 * POLL_S + 10, "the next poll", every=0.05)
    cycle_began, cycle_cpu0 = time.monotonic(), proc.cpu_seconds()
    seen = sim.call(full_listings)
    wait_for(lambda: sim.call(full_listings) > seen, 2 * POLL_S + 10, "the poll after", every=0.05)
    cycle_wall, cycle_cpu = time.monotonic() - cycle_began, proc.cpu_seconds() - cycle_cpu0
    proc.sample_rss()
    return LoadRun(
        wave=wave,
        tasks=proc.tasks(),
        digests=inbox.messages("new"),
        kinds=dict(inbox.kinds()),
        base=proc.base,
        ready_s=ready_s,
        raised_s=raised_s,
        announced_s=announced_s,
        wave_cpu_s=wave_cpu,
        cycle_cpu_s=cycle_cpu,
        cycle_wall_s=cycle_wall,
        peak_rss_mb=proc.peak_rss_kb / 1024,
        logs=proc.log_text(),
    )


@pytest.mark.timeout(300)
def test_wave_raises_every_task_once_in_a_few_digests(load_run: LoadRun) -> None:
    """Every revoked credential gets exactly one task; the messages are a handful of digests that together
    carry all 500 links (no per-task flood); a later poll cycle raises and sends nothing more."""
    print("\n" + load_run.report())
    tasks = load_run.tasks
    assert len(tasks) == WAVE, f"{len(tasks)} tasks for {WAVE} revocations"
    assert sorted(t["auth_name"] for t in tasks) == sorted(load_run.wave)
    assert load_run.kinds == {"new": len(load_run.digests)}, load_run.kinds
    links = {link for m in load_run.digests for link in links_in(m["message"], load_run.base)}
    assert len(links) == WAVE, f"{len(links)} distinct links in {len(load_run.digests)} digests"
    assert len(load_run.digests) <= 10, f"{len(load_run.digests)} messages for one wave: not grouped"
    assert load_run.raised_s < 60 and load_run.announced_s < 90, load_run.report()
    assert "Traceback" not in load_run.logs


def test_a_steady_poll_cycle_stays_within_its_cpu_budget(load_run: LoadRun) -> None:
    """A later cycle over 50,000 unchanged credentials reuses what the last one built: its CPU stays within
    a budget a real regression (not a slower machine) would break."""
    print("\n" + load_run.report())
    assert load_run.cycle_wall_s >= POLL_S - 5, load_run.report()  # one whole period was measured
    assert load_run.cycle_cpu_s < CYCLE_CPU_BUDGET_S, load_run.report()


def test_peak_rss_stays_within_the_deployed_memory_limit(load_run: LoadRun) -> None:
    """Peak RSS (VmHWM) of the daemon over startup, steady polling and the wave stays under the memory
    limit the Kubernetes example sets, so the shipped manifest does not OOM-kill it at 50,000 credentials."""
    print("\n" + load_run.report())
    assert load_run.peak_rss_mb < RSS_BUDGET_MB, load_run.report()
