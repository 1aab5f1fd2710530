"""The RESP `SUBSCRIBE errors` reader against the simulator and against a raw socket that sends garbage."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from reauthd.cpa import (
    ClientPaused,
    CPAClient,
    ErrorEvent,
    ErrorStream,
    FeatureMissing,
    GateState,
    MalformedResponse,
    ManagementBanned,
    ManagementKeyNotSet,
    ManagementKeyRejected,
    ManagementNotEnabled,
    ReconnectPolicy,
    RemoteManagementDisabled,
    TransientCPAError,
)
from reauthd.sim.server import SimServer
from tests.cpa.conftest import FAST_RETRY
from tests.support.servers import free_port

KEY = "sim-mgmt-key-0123"
FAST_RECONNECT = ReconnectPolicy(base_delay_s=0.01, max_delay_s=0.02, max_consecutive_failures=3)


async def first_event(stream: ErrorStream, trigger: Callable[[], object]) -> ErrorEvent:
    events = stream.events()
    pending = asyncio.ensure_future(anext(events))
    try:
        for _ in range(200):
            if stream.subscriptions:
                break
            await asyncio.sleep(0.01)
        assert stream.subscriptions == 1, "never subscribed"
        trigger()
        return await asyncio.wait_for(pending, 5)
    finally:
        pending.cancel()
        await events.aclose()


async def test_event_after_a_live_revocation() -> None:
    async with SimServer(management_key=KEY, port=0) as sim:
        auth = sim.state.add_credential("codex", email="a@example.com")
        async with CPAClient("sim", sim.base_url, KEY, retry=FAST_RETRY) as cpa:
            stream = ErrorStream(cpa)
            event = await first_event(
                stream, lambda: sim.state.revoke(auth.name, "token_invalidated", live=True)
            )
            assert event.auth_index == auth.auth_index
            assert event.provider == "codex" and event.status_code == 401
            assert event.auth_status.status == "error"
            assert cpa.gate.state is GateState.OK
        assert sum(sim.state.counter_snapshot()["failed_key_attempts"].values()) == 0


async def test_run_reconnects_after_the_server_drops_us() -> None:
    async with SimServer(management_key=KEY, port=0) as sim:
        auth = sim.state.add_credential("codex", email="a@example.com")
        async with CPAClient("sim", sim.base_url, KEY, retry=FAST_RETRY) as cpa:
            stream = ErrorStream(cpa, reconnect=ReconnectPolicy(base_delay_s=0.01, max_delay_s=0.02))
            seen: list[ErrorEvent] = []

            async def consume() -> None:
                async for event in stream.run():
                    seen.append(event)
                    if len(seen) == 2:
                        return

            task = asyncio.create_task(consume())
            for round_ in range(2):
                for _ in range(300):
                    if stream.subscriptions > round_:
                        break
                    await asyncio.sleep(0.01)
                if round_ == 0:
                    sim.state.revoke(auth.name, "token_invalidated", live=True)  # an event on connection 1
                    for _ in range(300):
                        if seen:
                            break
                        await asyncio.sleep(0.01)
                    for transport in list(sim.connections):  # CPA restarts: every connection drops
                        transport.abort()
                else:
                    sim.state.simulate_request(auth.name)  # still revoked: another event on connection 2
            await asyncio.wait_for(task, 10)
        assert stream.subscriptions == 2 and len(seen) == 2


async def test_auth_failure_trips_the_shared_gate() -> None:
    async with SimServer(management_key=KEY, port=0) as sim:
        async with CPAClient("sim", sim.base_url, "wrong-key", retry=FAST_RETRY) as cpa:
            stream = ErrorStream(cpa, reconnect=FAST_RECONNECT)
            with pytest.raises(ManagementKeyRejected):
                async for _ in stream.run():
                    pass
            assert cpa.gate.state is GateState.KEY_REJECTED
            with pytest.raises(ClientPaused):
                await cpa.list_auth_files()
            with pytest.raises(ClientPaused):
                async for _ in stream.run():
                    pass
        assert sim.state.counter_snapshot()["failed_key_attempts"] == {"127.0.0.1": 1}


async def test_a_paused_http_gate_keeps_resp_silent() -> None:
    async with SimServer(management_key=KEY, port=0) as sim:
        async with CPAClient("sim", sim.base_url, "wrong-key", retry=FAST_RETRY) as cpa:
            with pytest.raises(ManagementKeyRejected):
                await cpa.list_auth_files()
            with pytest.raises(ClientPaused):
                async for _ in ErrorStream(cpa).events():
                    pass
        assert sim.state.counter_snapshot()["failed_key_attempts"] == {"127.0.0.1": 1}


# ------------------------------------------------------------------------------ raw socket peers


async def raw_peer(answer: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]) -> tuple[
    asyncio.Server, str, list[bytes]
]:  # fmt: skip
    """A TCP server that records the first bytes each client sends and then runs `answer`."""
    first_bytes: list[bytes] = []

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            first_bytes.append(await reader.readuntil(b"\r\n"))
            await answer(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}", first_bytes


async def accept_subscription(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: list[bytes] | None = None
) -> None:
    """Read the rest of AUTH (after the array header `raw_peer` took), answer +OK, then read SUBSCRIBE
    errors; the lines read go to `seen`."""
    lines = [] if seen is None else seen
    for _ in range(4):  # rest of AUTH
        lines.append(await reader.readuntil(b"\r\n"))
    writer.write(b"+OK\r\n")
    await writer.drain()
    for _ in range(5):  # SUBSCRIBE errors
        lines.append(await reader.readuntil(b"\r\n"))


async def ok_then(writer: asyncio.StreamWriter, reader: asyncio.StreamReader, tail: bytes) -> None:
    await accept_subscription(reader, writer)
    writer.write(tail)
    await writer.drain()
    await asyncio.sleep(0.2)


@pytest.mark.parametrize(
    "tail",
    [
        b"HTTP/1.1 400 Bad Request\r\n\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$6\r\nerrors\r\n:1\r\n*3\r\n$7\r\nmessage\r\n$6\r\nerrors\r\n$999999999\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$6\r\nerrors\r\n:1\r\n\x00\x01\x02garbage\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$6\r\nerrors\r\n:1\r\n*3\r\n$7\r\nmessage\r\n$6\r\nerrors\r\n$3\r\nabcZZ",
    ],
)
async def test_garbage_on_the_wire_reconnects_then_gives_up(tail: bytes) -> None:
    server, url, first_bytes = await raw_peer(lambda r, w: ok_then(w, r, tail))
    async with server, CPAClient("raw", url, KEY, retry=FAST_RETRY) as cpa:
        stream = ErrorStream(cpa, reconnect=FAST_RECONNECT)
        with pytest.raises(MalformedResponse, match="RESP SUBSCRIBE errors") as info:
            async for _ in stream.run():
                pass
    assert len(first_bytes) == 3  # one connection per try, bounded
    assert all(b == b"*2\r\n" for b in first_bytes)  # AUTH's array header is always the first thing sent
    assert KEY not in str(info.value)


async def test_auth_is_the_first_command_and_bad_json_events_are_skipped() -> None:
    good = (
        b'{"timestamp":"2026-08-22T23:09:03.1+08:00","auth_index":"9f86d081884c7d65","status_code":401,'
        b'"body":"x","auth_status":{"status":"error","disabled":false,"unavailable":true}}'
    )
    messages = b"".join(
        b"*3\r\n$7\r\nmessage\r\n$6\r\nerrors\r\n$%d\r\n%s\r\n" % (len(p), p) for p in (b"not json", good)
    )
    sent: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_subscription(reader, writer, sent)
        writer.write(b"*3\r\n$9\r\nsubscribe\r\n$6\r\nerrors\r\n:1\r\n" + messages)
        await writer.drain()
        await asyncio.sleep(1)

    server, url, first = await raw_peer(answer)
    async with server, CPAClient("raw", url, KEY, retry=FAST_RETRY) as cpa:
        stream = ErrorStream(cpa)
        events = stream.events()
        event = await asyncio.wait_for(anext(events), 5)
        await events.aclose()
    assert event.auth_index == "9f86d081884c7d65"
    assert stream.events_rejected == 1
    wire = first[0] + b"".join(sent)
    assert wire.startswith(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(KEY), KEY.encode()))
    assert b"SUBSCRIBE" in wire and b"errors" in wire


async def test_missing_errors_channel_is_feature_missing() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_subscription(reader, writer)
        writer.write(b"-ERR unsupported channel 'errors'\r\n")
        await writer.drain()

    server, url, _ = await raw_peer(answer)
    async with server, CPAClient("raw", url, KEY) as cpa:
        with pytest.raises(FeatureMissing, match="errors channel"):
            async for _ in ErrorStream(cpa, reconnect=FAST_RECONNECT).run():
                pass


async def test_silent_peer_is_detected_by_ping() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_subscription(reader, writer)
        writer.write(b"*3\r\n$9\r\nsubscribe\r\n$6\r\nerrors\r\n:1\r\n")
        await writer.drain()
        await asyncio.sleep(5)  # never answers PING

    server, url, _ = await raw_peer(answer)
    async with server, CPAClient("raw", url, KEY) as cpa:
        with pytest.raises(TransientCPAError, match="PING"):
            async for _ in ErrorStream(cpa, ping_interval_s=0.1).events():
                pass


async def test_refused_connection_is_transient() -> None:
    async with CPAClient("raw", f"http://127.0.0.1:{free_port()}", KEY) as cpa:
        with pytest.raises(TransientCPAError, match="connection failed"):
            async for _ in ErrorStream(cpa, reconnect=FAST_RECONNECT).run():
                pass


@pytest.mark.parametrize(
    ("reply", "error", "gate_state"),
    [
        (b"-ERR IP banned due to too many failed attempts. Try again in 29m59s\r\n", ManagementBanned, GateState.BANNED),
        (b"-ERR missing management key\r\n", ManagementKeyRejected, GateState.KEY_REJECTED),
        (b"-ERR remote management disabled\r\n", RemoteManagementDisabled, GateState.UNVERIFIED),
        (b"-ERR remote management key not set\r\n", ManagementKeyNotSet, GateState.UNVERIFIED),
        (b"-ERR redis usage output disabled in home mode\r\n", ManagementNotEnabled, GateState.UNVERIFIED),
    ],
)  # fmt: skip
async def test_auth_refusals_are_typed(reply: bytes, error: type[Exception], gate_state: GateState) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(4):
            await reader.readuntil(b"\r\n")
        writer.write(reply)
        await writer.drain()

    server, url, first = await raw_peer(answer)
    async with server, CPAClient("raw", url, KEY) as cpa:
        with pytest.raises(error) as info:
            async for _ in ErrorStream(cpa, reconnect=FAST_RECONNECT).run():
                pass
        assert cpa.gate.state is gate_state
    assert len(first) == 1  # a key problem is never retried
    if isinstance(info.value, ManagementBanned):
        assert info.value.retry_after_s == 1799.0
