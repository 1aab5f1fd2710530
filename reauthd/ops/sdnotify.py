"""systemd's sd_notify protocol with the standard library: readiness, status, watchdog, stopping, reloading.

The protocol is one AF_UNIX datagram of `KEY=VALUE` lines to the socket named by `$NOTIFY_SOCKET`
(sd_notify(3)); a name starting with `@` is in the abstract namespace. When the variable is unset
(not started by systemd, or `Type=simple`) every call is a no-op, so the daemon calls these
unconditionally. A failed send never raises: systemd being gone must not take the daemon down.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

__all__ = [
    "SystemdNotifier",
    "ready",
    "reloading",
    "status",
    "stopping",
    "watchdog",
    "watchdog_interval_s",
]


def _socket_address(name: str) -> str | bytes:
    # An abstract socket's name starts with a NUL byte on the wire; systemd writes it as "@".
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    return name


def watchdog_interval_s(environ: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """How often to send WATCHDOG=1: half of `$WATCHDOG_USEC`, or None when no watchdog is asked for.

    `$WATCHDOG_PID`, when set, names the process the watchdog applies to (sd_watchdog_enabled(3));
    another process (a child that inherited the environment) must not ping.
    """
    env = os.environ if environ is None else environ
    raw = env.get("WATCHDOG_USEC", "")
    try:
        usec = int(raw)
    except ValueError:
        return None
    if usec <= 0:
        return None
    owner = env.get("WATCHDOG_PID")
    if owner:
        try:
            if int(owner) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    return usec / 1_000_000 / 2


class SystemdNotifier:
    """Sends state changes to systemd. Built from the environment; a no-op when there is no socket."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        name = env.get("NOTIFY_SOCKET", "")
        self._address: str | bytes | None = _socket_address(name) if name else None

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *lines: str) -> bool:
        """Send `KEY=VALUE` lines in one datagram. True if systemd got it, False if disabled or failed."""
        if self._address is None:
            return False
        # A newline inside a value would start a new assignment: STATUS text must not smuggle one in.
        payload = "\n".join(line.replace("\n", " ") for line in lines).encode("utf-8", "replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self._address)
                sock.sendall(payload)
        except OSError:
            return False
        return True

    def ready(self, status_text: str | None = None) -> bool:
        lines = ["READY=1"]
        if status_text is not None:
            lines.append(f"STATUS={status_text}")
        return self.notify(*lines)

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status_text: str | None = None) -> bool:
        lines = ["STOPPING=1"]
        if status_text is not None:
            lines.append(f"STATUS={status_text}")
        return self.notify(*lines)

    def reloading(self, status_text: str | None = None, monotonic_usec: int | None = None) -> bool:
        # Type=notify-reload (systemd 253+) wants MONOTONIC_USEC with RELOADING=1 to order the reload;
        # older systemd ignores the extra field. After the reload the daemon sends READY=1 again.
        usec = (
            time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000 if monotonic_usec is None else monotonic_usec
        )
        lines = ["RELOADING=1", f"MONOTONIC_USEC={usec}"]
        if status_text is not None:
            lines.append(f"STATUS={status_text}")
        return self.notify(*lines)


# Module-level shortcuts for the common case: one notifier built from this process's environment, on
# each call, so a test (or systemd) changing $NOTIFY_SOCKET is honoured.


def ready(status_text: str | None = None) -> bool:
    return SystemdNotifier().ready(status_text)


def status(text: str) -> bool:
    return SystemdNotifier().status(text)


def watchdog() -> bool:
    return SystemdNotifier().watchdog()


def stopping(status_text: str | None = None) -> bool:
    return SystemdNotifier().stopping(status_text)


def reloading(status_text: str | None = None) -> bool:
    return SystemdNotifier().reloading(status_text)
