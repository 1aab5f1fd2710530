"""The management key check with CPA's per-IP ban table (handler.go AuthenticateManagementKey, §1)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from reauthd.sim.clock import go_duration_seconds

MAX_FAILURES = 5
BAN_DURATION = timedelta(minutes=30)
BANNED_PREFIX = "IP banned due to too many failed attempts"


@dataclass(slots=True)
class BanEntry:
    failures: int = 0
    blocked_until: datetime | None = None
    last_activity: datetime | None = None


@dataclass(frozen=True, slots=True)
class KeyCheck:
    allowed: bool
    status: int
    error: str


class BanTable(dict[str, BanEntry]):
    """Per-IP failure counters and bans; localhost is counted too. Lost on restart, like CPA's."""

    def check(
        self, ip: str, local: bool, provided: str, *, secret: str | None, allow_remote: bool, now: datetime
    ) -> KeyCheck:
        """The checks in CPA's order: an active ban first (so even the right key is refused), then
        remote access, then the key. Only missing/invalid keys count; the 5th starts a 30-min ban."""
        entry = self.get(ip)
        if entry is not None and entry.blocked_until is not None:
            if now < entry.blocked_until:
                left = go_duration_seconds((entry.blocked_until - now).total_seconds())
                return KeyCheck(False, 403, f"{BANNED_PREFIX}. Try again in {left}")
            entry.blocked_until = None
            entry.failures = 0
        if not local and not allow_remote:
            return KeyCheck(False, 403, "remote management disabled")
        if not secret:
            return KeyCheck(False, 403, "remote management key not set")
        if not provided or provided != secret:
            self._fail(ip, now)
            return KeyCheck(
                False, 401, "missing management key" if not provided else "invalid management key"
            )
        self.pop(ip, None)
        return KeyCheck(True, 200, "")

    def _fail(self, ip: str, now: datetime) -> None:
        entry = self.setdefault(ip, BanEntry())
        entry.failures += 1
        entry.last_activity = now
        if entry.failures >= MAX_FAILURES:
            entry.blocked_until = now + BAN_DURATION
            entry.failures = 0

    def remaining(self, ip: str, now: datetime) -> float:
        entry = self.get(ip)
        if entry is None or entry.blocked_until is None:
            return 0.0
        return max(0.0, (entry.blocked_until - now).total_seconds())
