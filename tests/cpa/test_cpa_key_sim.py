"""Never fight the management key: CPA's ban counter, read from the simulator, proves how many attempts we spent."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from reauthd.cpa import (
    ClientPaused,
    CPAClient,
    GateSnapshot,
    HealthState,
    KeyProblem,
    ManagementBanned,
    ManagementKeyRejected,
    ManagementNotEnabled,
    RemoteManagementDisabled,
)
from reauthd.sim.server import SimServer
from tests.cpa.conftest import FAST_RETRY

KEY = "sim-mgmt-key-0123"


def failed_attempts(sim: SimServer) -> int:
    return sum(sim.state.counter_snapshot()["failed_key_attempts"].values())


async def test_wrong_key_and_ten_list_cycles_cost_one_attempt() -> None:
    async with SimServer(management_key=KEY, port=0) as sim:
        async with CPAClient("sim", sim.base_url, "wrong-key", retry=FAST_RETRY) as cpa:
            with pytest.raises(ManagementKeyRejected, match="rejected the management key"):
                await cpa.list_auth_files()
            for _ in range(9):
                with pytest.raises(ClientPaused) as info:
                    await cpa.list_auth_files()
                assert isinstance(info.value.cause, ManagementKeyRejected)
            # Other endpoints are refused by the same gate.
            with pytest.raises(ClientPaused):
                await cpa.auth_url("codex")
            assert cpa.health.state is HealthState.KEY_REJECTED
        assert failed_attempts(sim) == 1
        # Over HTTP too: the simulator's own counters endpoint agrees.
        async with httpx.AsyncClient(base_url=sim.base_url) as http:
            counters = (await http.get("/_sim/counters")).json()
        assert counters["failed_key_attempts"] == {"127.0.0.1": 1}
        assert counters["banned"] == {}


async def test_concurrent_calls_with_a_wrong_key_cost_one_attempt() -> None:
    async with SimServer(management_key=KEY, port=0) as sim:
        async with CPAClient("sim", sim.base_url, "wrong-key", retry=FAST_RETRY) as cpa:
            results = await asyncio.gather(
                *(cpa.list_auth_files() for _ in range(10)), return_exceptions=True
            )
        assert all(isinstance(r, KeyProblem) for r in results)
        assert failed_attempts(sim) == 1


async def test_restart_with_the_same_wrong_key_sends_nothing() -> None:
    async with SimServer(management_key=KEY, port=0) as sim:
        async with CPAClient("sim", sim.base_url, "wrong-key", retry=FAST_RETRY) as first:
            with pytest.raises(ManagementKeyRejected):
                await first.list_auth_files()
            saved = first.gate.snapshot().to_dict()  # what the store persists
        assert "wrong-key" not in str(saved)
        for _ in range(6):  # a crash-looping service
            snapshot = GateSnapshot.from_dict(saved)
            async with CPAClient("sim", sim.base_url, "wrong-key", gate_snapshot=snapshot) as again:
                with pytest.raises(ClientPaused):
                    await again.list_auth_files()
        assert failed_attempts(sim) == 1
        async with CPAClient("sim", sim.base_url, KEY, gate_snapshot=GateSnapshot.from_dict(saved)) as fixed:
            assert await fixed.list_auth_files() == []


async def test_rebuilt_client_with_new_key_works() -> None:
    async with SimServer(management_key=KEY, port=0) as sim:
        cpa = CPAClient("sim", sim.base_url, "wrong-key", retry=FAST_RETRY)
        with pytest.raises(ManagementKeyRejected):
            await cpa.list_auth_files()
        fixed = cpa.rebuilt_with_key(KEY)
        await cpa.aclose()
        async with fixed:
            assert await fixed.list_auth_files() == []
            assert fixed.health.state is HealthState.OK


async def test_operator_pause_lets_one_attempt_through_after_it_ends() -> None:
    now = [0.0]

    def clock() -> datetime:
        return datetime(2026, 11, 27, tzinfo=UTC) + timedelta(seconds=now[0])

    async with SimServer(management_key=KEY, port=0) as sim:
        cpa = CPAClient(
            "sim",
            sim.base_url,
            "wrong-key",
            retry=FAST_RETRY,
            pause_after_rejection=timedelta(minutes=10),
            clock=clock,
        )
        async with cpa:
            with pytest.raises(ManagementKeyRejected):
                await cpa.list_auth_files()
            now[0] = 9 * 60
            with pytest.raises(ClientPaused):
                await cpa.list_auth_files()
            now[0] = 10 * 60
            with pytest.raises(ManagementKeyRejected):
                await cpa.list_auth_files()
        assert failed_attempts(sim) == 2


async def test_ban_is_reported_with_remaining_time_and_pauses() -> None:
    async with SimServer(management_key=KEY, port=0) as sim:
        # Someone else on this host burns the five attempts (raw requests, not our client).
        async with httpx.AsyncClient(base_url=sim.base_url) as http:
            for _ in range(5):
                r = await http.get("/v0/management/auth-files", headers={"Authorization": "Bearer nope"})
                assert r.status_code == 401
        async with CPAClient("sim", sim.base_url, KEY, retry=FAST_RETRY) as cpa:
            with pytest.raises(ManagementBanned) as info:
                await cpa.list_auth_files()
            assert info.value.retry_after_s is not None and 1790 <= info.value.retry_after_s <= 1800
            health = cpa.health
            assert health.state is HealthState.BANNED and health.paused_until is not None
            with pytest.raises(ClientPaused) as paused:
                await cpa.list_auth_files()
            assert isinstance(paused.value.cause, ManagementBanned)
            assert "banned" in str(paused.value)
        assert sum(1 for op in sim.state.oplog if op["path"] == "/v0/management/auth-files") == 6


class _ForwardedFor(httpx.AsyncBaseTransport):
    """A real HTTP transport that adds the header a reverse proxy would (CPA trusts it, contract §1)."""

    def __init__(self, ip: str) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._ip = ip

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.headers["X-Forwarded-For"] = self._ip
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_remote_management_disabled_does_not_pause() -> None:
    async with SimServer(management_key=KEY, port=0, allow_remote=False) as sim:
        transport = _ForwardedFor("203.0.113.7")
        async with CPAClient("sim", sim.base_url, KEY, retry=FAST_RETRY, transport=transport) as cpa:
            for _ in range(2):
                with pytest.raises(RemoteManagementDisabled, match="allow-remote"):
                    await cpa.list_auth_files()
        assert failed_attempts(sim) == 0


async def test_management_not_enabled() -> None:
    sim = SimServer(management_key=KEY, port=0, management_enabled=False)
    async with sim, CPAClient("sim", sim.base_url, KEY, retry=FAST_RETRY) as cpa:
        with pytest.raises(ManagementNotEnabled, match="turned off"):
            await cpa.list_auth_files()
        with pytest.raises(ManagementNotEnabled):
            await cpa.post_oauth_callback("http://localhost:1455/auth/callback?code=a&state=b")


async def test_empty_key_is_never_sent() -> None:
    async with SimServer(management_key=KEY, port=0) as sim:
        async with CPAClient("sim", sim.base_url, "", retry=FAST_RETRY) as cpa:
            with pytest.raises(ClientPaused, match="no management key configured"):
                await cpa.list_auth_files()
        assert sim.state.oplog == []
