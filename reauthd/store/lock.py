"""The single-instance lock on a state file: a second daemon on the same state refuses to start."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class StateLocked(Exception):
    """Another reauthd process holds the state; the message is one sentence for the operator."""


class StateLock:
    """An exclusive, non-blocking `flock` on `<state path>.lock`, held until `release()`.

    flock (not a pid file) because the kernel drops it when the process dies, even on SIGKILL, so a crash
    never leaves a stale lock behind.
    """

    def __init__(self, state_path: Path) -> None:
        self.state_path = state_path
        self.path = state_path.with_name(state_path.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            who = f" (pid {holder})" if holder else ""
            raise StateLocked(
                f"another reauthd{who} is already running with the state at {self.state_path}; "
                "stop it first or point this one at a different state.path"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _read_holder(fd: int) -> str:
    try:
        raw = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return raw if raw.isdigit() else ""
