"""`reauthd run` as a real child process for the reliability suite: its configuration, start, SIGKILL,
SIGTERM, peak memory, and a read-only look at its state database (the store is the truth)."""

from __future__ import annotations

import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.servers import free_port

# Distinctive so a leak anywhere is unmistakable (secret canary).
KEY = "mgmt-CANARY-7f3b9e21c4d8a6f0"
TERMINAL = frozenset({"done", "failed", "expired", "cancelled"})


def wait_for(predicate: Callable[[], object], timeout: float, what: str, every: float = 0.2) -> Any:
    """Poll until `predicate()` is truthy and return it; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


@dataclass
class DaemonConfig:
    """The knobs the reliability tests turn; `extra` is appended verbatim (more TOML sections)."""

    sim_url: str
    notify_url: str
    state_dir: Path
    port: int = field(default_factory=free_port)
    key: str = KEY
    poll_interval_s: float = 5
    probe_interval_s: float = 86400
    probe_concurrency: int = 4
    probe_rate_per_s: float = 2.0
    group_window_s: float = 1
    operator_token: str | None = None
    cpa_timeout_s: float = 10
    extra: str = ""
    # RLIMIT_NOFILE (soft, hard) of the child, e.g. (1024, 1024) for systemd's default without LimitNOFILE=.
    open_files: tuple[int, int] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def state_path(self) -> Path:
        return self.state_dir / "state.db"

    def write(self) -> Path:
        operator = f'operator_token = "{self.operator_token}"\n' if self.operator_token else ""
        path = self.state_dir / "config.toml"
        path.write_text(
            f"""
[state]
path = "{self.state_path}"
[[cpa]]
name = "sim"
base_url = "{self.sim_url}"
management_key = "{self.key}"
timeout_s = {self.cpa_timeout_s}
[detect]
poll_interval_s = {self.poll_interval_s}
probe_interval_s = {self.probe_interval_s}
probe_concurrency = {self.probe_concurrency}
probe_rate_per_s = {self.probe_rate_per_s}
[notify]
urls = ["{self.notify_url}"]
group_window_s = {self.group_window_s}
[web]
listen = "127.0.0.1:{self.port}"
public_url = "{self.base}"
{operator}[log]
format = "json"
level = "debug"
{self.extra}
""",
            encoding="utf-8",
        )
        return path


class DaemonProcess:
    """One `reauthd run` child. Start it again after `kill()` to test a restart on the same state."""

    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        self.config_path = config.write()
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self.peak_rss_kb = 0

    @property
    def base(self) -> str:
        return self.config.base

    def log_path(self, run: int | None = None) -> Path:
        return self.config.state_dir / f"daemon-{self.runs if run is None else run}.log"

    def start(self, *, ready_timeout: float = 45) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.runs += 1
        with self.log_path().open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "reauthd", "run", "--config", str(self.config_path)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                preexec_fn=self._limits if self.config.open_files else None,
            )
        wait_for(self._ready, ready_timeout, f"daemon run {self.runs} to answer /readyz")

    def _limits(self) -> None:
        assert self.config.open_files is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, self.config.open_files)

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"the daemon exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
        self.sample_rss()
        try:
            return httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def sample_rss(self) -> int:
        """Peak resident memory so far (VmHWM, kB) of the running process; remembered across samples."""
        if self.proc is None or self.proc.poll() is not None:
            return self.peak_rss_kb
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return self.peak_rss_kb
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                self.peak_rss_kb = max(self.peak_rss_kb, int(line.split()[1]))
        return self.peak_rss_kb

    def cpu_seconds(self) -> float:
        """User + system CPU time of the running process so far."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, exactly like a power cut or the OOM killer."""
        assert self.proc is not None
        self.sample_rss()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.sample_rss()
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise

    def log_text(self) -> str:
        return "\n".join(
            self.log_path(run).read_text(encoding="utf-8", errors="replace")
            for run in range(1, self.runs + 1)
            if self.log_path(run).exists()
        )

    def cli(self, *args: str) -> Any:
        """`reauthd <args> --json` against the same configuration (reads the store next to the daemon)."""
        done = subprocess.run(
            [sys.executable, "-m", "reauthd", *args, "--config", str(self.config_path), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    # ------------------------------------------------------------------------------------ the store

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        if not self.config.state_path.exists():
            return []
        conn = sqlite3.connect(f"file:{self.config.state_path}?mode=ro", uri=True, timeout=10)
        conn.row_factory = sqlite3.Row
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError:  # tables not created yet
            return []
        finally:
            conn.close()

    def tasks(self) -> list[dict[str, Any]]:
        return [dict(row) for row in self._query("SELECT * FROM tasks ORDER BY created_at")]

    def state_of(self, task_id: str) -> str | None:
        rows = self._query("SELECT state FROM tasks WHERE id = ?", (task_id,))
        return str(rows[0]["state"]) if rows else None

    def history(self, task_id: str) -> list[str]:
        rows = self._query("SELECT to_state FROM task_events WHERE task_id = ? ORDER BY id", (task_id,))
        return [str(r["to_state"]) for r in rows]

    def deliveries(self) -> list[dict[str, Any]]:
        return [dict(row) for row in self._query("SELECT * FROM deliveries ORDER BY id")]

    def wait_state(self, task_id: str, *states: str, timeout: float = 30) -> str:
        def reached() -> str | None:
            self.sample_rss()
            state = self.state_of(task_id)
            return state if state in states else None

        try:
            return str(wait_for(reached, timeout, f"task {task_id} to reach {states}"))
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}; it is {self.state_of(task_id)} after {self.history(task_id)}\n"
                f"{self.log_text()[-4000:]}"
            ) from None
