"""The clocks of a login: CPA's 5-minute callback window, device-code countdowns, the status poll cadence.

All functions take `now`; none reads the wall clock.
"""

from __future__ import annotations

from datetime import datetime, timedelta

#: CPA's callback waiters give up after 5 minutes (anthropic/codex/antigravity; contract §4.2).
CALLBACK_WINDOW = timedelta(minutes=5)
#: A completed OAuth state is kept only 60 s, then reads `unknown or expired state` (contract §4.2, §12).
COMPLETED_STATE_TTL = timedelta(seconds=60)
#: How often reauthd asks get-auth-status: far inside the 60-s completed window, gentle on CPA.
STATUS_POLL_INTERVAL_S = 2.5
#: A device code without `expires_in`: Kimi sends one only when its upstream does (contract §4.1), and then
#: CPA polls for its 15-minute maximum; plugin device flows get the same.
DEFAULT_DEVICE_EXPIRES_IN_S = 900
#: How long CPA polls a device code at most, whatever `expires_in` says: min(expires_in, limit)
#: (internal/auth/kimi/kimi.go maxPollDuration, internal/auth/xai/types.go MaxPollDuration).
DEVICE_POLL_LIMIT_S = {"kimi": 900, "xai": 1800}


def login_deadline(
    minted_at: datetime, *, device: bool, expires_in: int | None, poll_limit_s: int | None = None
) -> datetime:
    """When CPA stops waiting for this login: 5 min for callbacks; for device codes `expires_in` (else
    DEFAULT_DEVICE_EXPIRES_IN_S), never past `poll_limit_s` (DEVICE_POLL_LIMIT_S of the provider)."""
    if device:
        seconds = expires_in if expires_in is not None and expires_in > 0 else DEFAULT_DEVICE_EXPIRES_IN_S
        if poll_limit_s is not None:
            seconds = min(seconds, poll_limit_s)
        return minted_at + timedelta(seconds=seconds)
    return minted_at + CALLBACK_WINDOW


#: A live login is handed out again (a second tab, a double click) only while this share of its window is
#: left: 2 of CPA's 5 callback minutes is enough to sign in and paste, and a device code gets the same share
#: of its lifetime. With less left, "Start login" mints a fresh one rather than a link about to die.
REUSE_MIN_SHARE = 0.4


def worth_reusing(created_at: datetime | None, expires_at: datetime, now: datetime, *, device: bool) -> bool:
    """Whether a login minted at `created_at` still leaves a person time to finish it."""
    if created_at is not None and created_at < expires_at:
        window = expires_at - created_at
    else:  # an old row without its mint time: the window CPA gives this kind of login by default
        window = timedelta(seconds=DEFAULT_DEVICE_EXPIRES_IN_S) if device else CALLBACK_WINDOW
    return expires_at - now >= window * REUSE_MIN_SHARE


def seconds_left(deadline: datetime, now: datetime) -> int:
    """Whole seconds until `deadline`, never negative (rounded down: never promise time CPA will not give)."""
    return max(0, int((deadline - now).total_seconds()))


def window_lapsed(deadline: datetime, now: datetime) -> bool:
    return now >= deadline


def format_countdown(seconds: int) -> str:
    """`14:05`, `0:09`, `1:02:03` — what the page shows next to a user code."""
    seconds = max(0, seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"
