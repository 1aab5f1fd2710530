"""The key gate: once CPA rejects the management key or bans our IP, nothing more is sent to that CPA.

Why (contract §1, internal/api/handlers/management/handler.go AuthenticateManagementKey): CPA bans an
IP for 30 minutes after 5 failed key attempts, counted per IP for HTTP and RESP alike, and during the
ban even the right key is refused. A daemon that retries a wrong key burns the 5 attempts in seconds
and then locks out every other tool on the same host. So:

- A 401 (missing/invalid key) pauses the CPA until its configured key changes (a new client, hence a
  new gate) or, if the operator set `pause_after_rejection`, until that pause has passed.
- A ban pauses it for at least the remaining ban time CPA reported.
- Until some answer has proved the key (state `unverified`), calls go **one at a time**: ten
  concurrent calls with a wrong key must cost one failed attempt, not ten.
- The state can be persisted (`snapshot()` → `GateSnapshot.to_dict()`) and restored with
  `KeyGate.restore`, keyed by a salted scrypt fingerprint of the key (never the key itself), so a
  crash-looping service does not spend a fresh attempt on every start.

Choosing `pause_after_rejection`: CPA forgets a failure count only on success, at the end of a ban, or
when the IP has been idle for more than 2 h (purged hourly, handler.go purgeStaleAttempts). One retry
every 30 min therefore still reaches 5 strikes within ~2.5 h; a pause of 3 h or more lets the count
expire between attempts, so reauthd alone can never cause a ban.

Remote-disabled and key-not-set (403) do not count toward the ban, so they do not pause the gate; the
caller still gets the typed error every time.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import structlog

from reauthd.cpa.errors import ClientPaused, KeyProblem, ManagementBanned, ManagementKeyRejected

log = structlog.get_logger(__name__)

#: CPA's ban length (handler.go `banDuration`), used when a ban answer carries no readable duration.
CPA_BAN_DURATION = timedelta(minutes=30)
#: Added to a reported ban: CPA rounds the remaining time to whole seconds.
BAN_MARGIN = timedelta(seconds=5)

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


class GateState(StrEnum):
    UNVERIFIED = "unverified"  # no answer has proved the key yet: one call at a time
    OK = "ok"  # CPA accepted the key
    KEY_REJECTED = "key_rejected"  # 401: paused until the key changes (or the operator pause ends)
    BANNED = "banned"  # 403 IP ban: paused until the ban is over


def key_fingerprint(key: str, salt: bytes | None = None) -> str:
    """`scrypt$<salt hex>$<digest hex>`: lets a restart tell "same key" from "new key" without storing it.

    scrypt rather than a bare hash: management keys are often short human passwords, and a persisted
    state file must not become an offline guessing oracle.
    """
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.scrypt(key.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    return f"scrypt${salt.hex()}${digest.hex()}"


def fingerprint_matches(fingerprint: str, key: str) -> bool:
    try:
        scheme, salt_hex, _ = fingerprint.split("$")
        salt = bytes.fromhex(salt_hex)
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    return hmac.compare_digest(key_fingerprint(key, salt), fingerprint)


@dataclass(frozen=True, slots=True)
class GateSnapshot:
    """The persistable part of a gate. `reason` is the error sentence (it never holds a secret)."""

    cpa: str
    key_fingerprint: str
    state: GateState
    reason: str | None
    since: datetime | None
    paused_until: datetime | None
    retry_after_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "cpa": self.cpa,
            "key_fingerprint": self.key_fingerprint,
            "state": self.state.value,
            "reason": self.reason,
            "since": self.since.isoformat() if self.since else None,
            "paused_until": self.paused_until.isoformat() if self.paused_until else None,
            "retry_after_s": self.retry_after_s,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateSnapshot:
        def when(value: Any) -> datetime | None:
            return datetime.fromisoformat(value) if isinstance(value, str) else None

        retry = data.get("retry_after_s")
        return cls(
            cpa=str(data["cpa"]),
            key_fingerprint=str(data["key_fingerprint"]),
            state=GateState(data["state"]),
            reason=data.get("reason") if isinstance(data.get("reason"), str) else None,
            since=when(data.get("since")),
            paused_until=when(data.get("paused_until")),
            retry_after_s=float(retry) if isinstance(retry, int | float) else None,
        )


class KeyGate:
    """Decides whether a call to one CPA may be sent. Decisions take `now`; the gate never reads a clock."""

    def __init__(
        self,
        cpa: str,
        key: str,
        *,
        pause_after_rejection: timedelta | None = None,
    ) -> None:
        self.cpa = cpa
        self._key = key  # kept only to compute the fingerprint lazily; never logged or returned
        self._fingerprint: str | None = None
        self.pause_after_rejection = pause_after_rejection
        self._state = GateState.UNVERIFIED
        self._cause: KeyProblem | None = None
        self._since: datetime | None = None
        self._paused_until: datetime | None = None
        self._probe = asyncio.Lock()
        if not key:
            # CPA counts an empty key as a failed attempt (contract §1 step 4): never send one.
            self._state = GateState.KEY_REJECTED
            self._cause = ManagementKeyRejected(cpa, "(nothing sent)", "no management key configured")

    # ---------------------------------------------------------------------------------- reading

    @property
    def state(self) -> GateState:
        return self._state

    @property
    def cause(self) -> KeyProblem | None:
        return self._cause

    @property
    def since(self) -> datetime | None:
        return self._since

    @property
    def paused_until(self) -> datetime | None:
        return self._paused_until

    def paused(self, now: datetime) -> bool:
        if self._state not in (GateState.KEY_REJECTED, GateState.BANNED):
            return False
        if self._paused_until is not None and now >= self._paused_until:
            # The pause is over: back to one-call-at-a-time until an answer proves the key again.
            log.info("cpa.gate.pause_over", cpa=self.cpa, gate_state=self._state.value)
            self._state = GateState.UNVERIFIED
            self._paused_until = None
            return False
        return True

    def check(self, endpoint: str, now: datetime) -> None:
        """Raise `ClientPaused` (cheaply, nothing is sent) while the gate is closed."""
        if self.paused(now):
            assert self._cause is not None
            raise ClientPaused(self.cpa, endpoint, self._cause, self._paused_until)

    @asynccontextmanager
    async def admit(self, endpoint: str, clock: Callable[[], datetime]) -> AsyncIterator[None]:
        """Hold this around one call (including its retries). Serialises calls while the key is unproven."""
        self.check(endpoint, clock())
        held = False
        if self._state is not GateState.OK:
            await self._probe.acquire()
            held = True
            try:
                self.check(endpoint, clock())  # the call we waited for may have tripped the gate
            except ClientPaused:
                self._probe.release()
                raise
            if self._key_proven():
                self._probe.release()
                held = False
        try:
            yield
        finally:
            if held:
                self._probe.release()

    def _key_proven(self) -> bool:
        return self._state is GateState.OK

    # ---------------------------------------------------------------------------------- writing

    def record_accepted(self, now: datetime) -> None:
        """An answer from behind CPA's key check: the key works."""
        if self._state is not GateState.OK:
            log.info("cpa.gate.key_accepted", cpa=self.cpa)
            self._state = GateState.OK
            self._cause = None
            self._since = now
            self._paused_until = None

    def record_problem(self, problem: KeyProblem, now: datetime) -> None:
        """A 401 or a ban answer: close the gate. Other key problems (403 remote/not set) leave it open."""
        if isinstance(problem, ManagementBanned):
            ban = (
                timedelta(seconds=problem.retry_after_s)
                if problem.retry_after_s is not None
                else CPA_BAN_DURATION
            )
            ban_over = now + ban + BAN_MARGIN
            if self.pause_after_rejection is not None:
                ban_over = max(ban_over, now + self.pause_after_rejection)
            self._close(GateState.BANNED, problem, now, ban_over)
        elif isinstance(problem, ManagementKeyRejected):
            pause = self.pause_after_rejection
            self._close(GateState.KEY_REJECTED, problem, now, now + pause if pause is not None else None)

    def _close(self, state: GateState, cause: KeyProblem, now: datetime, until: datetime | None) -> None:
        self._state = state
        self._cause = cause
        self._since = now
        self._paused_until = until
        log.warning(
            "cpa.gate.closed",
            cpa=self.cpa,
            gate_state=state.value,
            until=until.isoformat() if until else None,
            reason=cause.sentence,
        )

    # ----------------------------------------------------------------------------- persistence

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = key_fingerprint(self._key)
        return self._fingerprint

    def snapshot(self) -> GateSnapshot:
        retry = self._cause.retry_after_s if isinstance(self._cause, ManagementBanned) else None
        return GateSnapshot(
            cpa=self.cpa,
            key_fingerprint=self.fingerprint(),
            state=self._state,
            reason=self._cause.sentence if self._cause else None,
            since=self._since,
            paused_until=self._paused_until,
            retry_after_s=retry,
        )

    @classmethod
    def restore(
        cls,
        snapshot: GateSnapshot | None,
        cpa: str,
        key: str,
        *,
        pause_after_rejection: timedelta | None = None,
    ) -> KeyGate:
        """A gate for `key`, closed again if `snapshot` was closed **for the same key**; else a fresh one."""
        gate = cls(cpa, key, pause_after_rejection=pause_after_rejection)
        if snapshot is None or snapshot.cpa != cpa or not key:
            return gate
        if not fingerprint_matches(snapshot.key_fingerprint, key):
            log.info("cpa.gate.key_changed", cpa=cpa)
            return gate
        gate._fingerprint = snapshot.key_fingerprint
        reason = snapshot.reason or "an earlier run was refused"
        if snapshot.state is GateState.BANNED:
            gate._state = GateState.BANNED
            gate._cause = ManagementBanned(cpa, "(restored)", snapshot.retry_after_s)
            gate._cause.sentence = reason
        elif snapshot.state is GateState.KEY_REJECTED:
            gate._state = GateState.KEY_REJECTED
            gate._cause = ManagementKeyRejected(cpa, "(restored)", "rejected before a restart")
            gate._cause.sentence = reason
        else:
            return gate
        gate._since = snapshot.since
        gate._paused_until = snapshot.paused_until
        return gate
