"""The simulator's clock: wall time by default, advanceable by tests, plus Go's time formatting."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone

# The offset CPA's process runs in. Go's time.Time JSON carries the server's local offset
# (contract §2.1, e.g. "2026-08-22T23:09:03.123456789+08:00"); a non-UTC default keeps clients honest.
DEFAULT_TZ = timezone(timedelta(hours=8))


class SimClock:
    """Wall time plus an offset that tests move forward instead of sleeping."""

    def __init__(self, tz: timezone = DEFAULT_TZ, *, frozen: bool = False) -> None:
        """`frozen`: time stands still except for advance() — deterministic tests on a busy machine."""
        self.tz = tz
        self._offset = timedelta()
        self._lock = threading.Lock()
        self._frozen_at = datetime.now(UTC) if frozen else None

    def now(self) -> datetime:
        """The current simulated time, timezone-aware in the server's zone."""
        with self._lock:
            offset = self._offset
        base = self._frozen_at if self._frozen_at is not None else datetime.now(UTC)
        return (base + offset).astimezone(self.tz)

    def advance(self, seconds: float) -> datetime:
        """Move simulated time forward (never backwards) and return the new now."""
        if seconds < 0:
            raise ValueError("the simulated clock only moves forward")
        with self._lock:
            self._offset += timedelta(seconds=seconds)
        return self.now()

    def advance_offset_to(self, offset: timedelta) -> None:
        """Set the offset to `offset` if that moves time forward (exact, no float drift)."""
        with self._lock:
            self._offset = max(self._offset, offset)

    @property
    def offset(self) -> timedelta:
        with self._lock:
            return self._offset

    @property
    def offset_seconds(self) -> float:
        with self._lock:
            return self._offset.total_seconds()


def go_time(value: datetime, tz: timezone | None = None) -> str:
    """Format like Go's time.Time MarshalJSON: RFC 3339, nanosecond precision with trailing zeros trimmed.

    Python has microseconds only; the three extra digits are zero and therefore trimmed, exactly as Go
    would print a time with microsecond precision. UTC is written as "Z", as Go does.
    """
    # Times come from the injected clock, already in the server's zone; keep that zone unless told.
    local = value.astimezone(tz) if tz is not None else value
    base = local.strftime("%Y-%m-%dT%H:%M:%S")
    if local.microsecond:
        base += "." + f"{local.microsecond:06d}".rstrip("0")
    offset = local.utcoffset() or timedelta()
    if offset == timedelta():
        return base + "Z"
    total = int(offset.total_seconds())
    sign = "+" if total >= 0 else "-"
    total = abs(total)
    return f"{base}{sign}{total // 3600:02d}:{(total % 3600) // 60:02d}"


def go_duration_seconds(seconds: float) -> str:
    """Format a duration rounded to whole seconds like Go's time.Duration.String(): "29m59s", "30m0s"."""
    total = int(seconds + 0.5)  # Go's Duration.Round: halves away from zero
    if total <= 0:
        return "0s"
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"
