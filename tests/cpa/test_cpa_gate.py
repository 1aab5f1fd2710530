"""The key gate as a pure state machine: tables of answers and times, no clock mocking."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from reauthd.cpa.errors import (
    ClientPaused,
    ManagementBanned,
    ManagementKeyNotSet,
    ManagementKeyRejected,
    RemoteManagementDisabled,
)
from reauthd.cpa.gate import (
    BAN_MARGIN,
    GateSnapshot,
    GateState,
    KeyGate,
    fingerprint_matches,
    key_fingerprint,
)

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
EP = "/v0/management/auth-files"


def rejected() -> ManagementKeyRejected:
    return ManagementKeyRejected("prod", EP, "invalid management key")


def test_fresh_gate_is_unverified_then_ok() -> None:
    gate = KeyGate("prod", "right")
    assert gate.state is GateState.UNVERIFIED
    gate.check(EP, T0)
    gate.record_accepted(T0)
    assert gate.snapshot().state is GateState.OK


def test_empty_key_is_never_sent() -> None:
    gate = KeyGate("prod", "")
    with pytest.raises(ClientPaused, match="no management key configured"):
        gate.check(EP, T0)


@pytest.mark.parametrize(
    ("pause", "probe_at", "paused"),
    [
        (None, T0 + timedelta(days=365), True),  # default: until the key changes
        (timedelta(minutes=10), T0 + timedelta(minutes=9), True),
        (timedelta(minutes=10), T0 + timedelta(minutes=10), False),
    ],
)
def test_rejection_pauses_until_key_change_or_operator_pause(
    pause: timedelta | None, probe_at: datetime, paused: bool
) -> None:
    gate = KeyGate("prod", "wrong", pause_after_rejection=pause)
    gate.record_problem(rejected(), T0)
    assert gate.paused(probe_at) is paused
    if not paused:
        assert gate.state is GateState.UNVERIFIED  # one call at a time again


@pytest.mark.parametrize(
    ("retry_after_s", "pause", "open_at"),
    [
        (1799.0, None, T0 + timedelta(seconds=1799) + BAN_MARGIN),
        (None, None, T0 + timedelta(minutes=30) + BAN_MARGIN),  # unreadable duration: CPA's full 30 min
        (45.0, timedelta(hours=1), T0 + timedelta(hours=1)),  # operator pause longer than the ban
    ],
)
def test_ban_pauses_at_least_the_remaining_ban(
    retry_after_s: float | None, pause: timedelta | None, open_at: datetime
) -> None:
    gate = KeyGate("prod", "right", pause_after_rejection=pause)
    gate.record_problem(ManagementBanned("prod", EP, retry_after_s), T0)
    assert gate.state is GateState.BANNED
    assert gate.paused_until == open_at
    with pytest.raises(ClientPaused) as info:
        gate.check(EP, open_at - timedelta(seconds=1))
    assert isinstance(info.value.cause, ManagementBanned)
    gate.check(EP, open_at)


@pytest.mark.parametrize("problem", [RemoteManagementDisabled("prod", EP), ManagementKeyNotSet("prod", EP)])
def test_403s_that_do_not_count_leave_the_gate_open(problem: RemoteManagementDisabled) -> None:
    gate = KeyGate("prod", "k")
    gate.record_problem(problem, T0)
    gate.check(EP, T0)


def test_fingerprint_is_salted_and_matches_only_the_same_key() -> None:
    a, b = key_fingerprint("hunter2"), key_fingerprint("hunter2")
    assert a != b and "hunter2" not in a
    assert fingerprint_matches(a, "hunter2") and not fingerprint_matches(a, "hunter3")
    assert not fingerprint_matches("garbage", "hunter2")


def test_snapshot_restores_for_same_key_only() -> None:
    gate = KeyGate("prod", "wrong")
    gate.record_problem(rejected(), T0)
    data = gate.snapshot().to_dict()
    assert "wrong" not in repr(data)
    snap = GateSnapshot.from_dict(data)

    again = KeyGate.restore(snap, "prod", "wrong")
    assert again.state is GateState.KEY_REJECTED
    with pytest.raises(ClientPaused, match="rejected"):
        again.check(EP, T0 + timedelta(days=2))

    fixed = KeyGate.restore(snap, "prod", "right")
    assert fixed.state is GateState.UNVERIFIED
    fixed.check(EP, T0)


def test_restored_ban_keeps_its_end() -> None:
    gate = KeyGate("prod", "k")
    gate.record_problem(ManagementBanned("prod", EP, 600.0), T0)
    restored = KeyGate.restore(GateSnapshot.from_dict(gate.snapshot().to_dict()), "prod", "k")
    assert restored.state is GateState.BANNED and restored.paused_until == gate.paused_until
    assert restored.paused(T0 + timedelta(minutes=9))
    assert not restored.paused(T0 + timedelta(minutes=11))


async def test_unverified_gate_admits_one_call_at_a_time() -> None:
    gate = KeyGate("prod", "k")
    inside = 0
    most = 0

    async def call(accept: bool) -> None:
        nonlocal inside, most
        async with gate.admit(EP, lambda: T0):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.01)
            inside -= 1
            if accept:
                gate.record_accepted(T0)

    await asyncio.gather(call(False), call(False), call(False), call(True))
    assert most == 1
    # Once the key is proven, calls run side by side.
    most = 0
    await asyncio.gather(*(call(True) for _ in range(3)))
    assert most == 3


async def test_waiters_stop_when_the_probe_is_rejected() -> None:
    gate = KeyGate("prod", "wrong")
    sent = 0

    async def call() -> None:
        nonlocal sent
        async with gate.admit(EP, lambda: T0):
            sent += 1
            await asyncio.sleep(0.01)
            gate.record_problem(rejected(), T0)

    results = await asyncio.gather(*(call() for _ in range(10)), return_exceptions=True)
    assert sent == 1
    assert sum(isinstance(r, ClientPaused) for r in results) == 9
