"""Feeds systemd's watchdog only while the main loop is alive, so a stuck loop gets the process restarted.

A timer that pinged unconditionally would prove only that the event loop turns; the scheduler could be
dead, or a tick could hang on a step forever, and systemd would never notice. So each ping first asks
`alive()` (normally `lambda: health.live().ok`, which checks the scheduler's heartbeat job and that the
step in progress keeps progressing) and stays silent when it says no: systemd then kills the service
after WatchdogSec and restarts it (Restart=on-failure).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from reauthd.ops.sdnotify import SystemdNotifier, watchdog_interval_s

__all__ = ["feed_watchdog"]


async def feed_watchdog(
    notifier: SystemdNotifier,
    alive: Callable[[], bool],
    interval_s: float | None = None,
) -> None:
    """Send WATCHDOG=1 every `interval_s` (default: half of $WATCHDOG_USEC) while `alive()`; until cancelled.

    Returns at once when systemd asked for no watchdog or there is no notify socket, so the daemon can
    start it unconditionally as a task.
    """
    period = watchdog_interval_s() if interval_s is None else interval_s
    if period is None or period <= 0 or not notifier.enabled:
        return
    while True:
        if alive():
            notifier.watchdog()
        await asyncio.sleep(period)
