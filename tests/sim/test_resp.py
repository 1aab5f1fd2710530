"""RESP on the management port: AUTH, the shared ban table, SUBSCRIBE errors (contract §1, §7)."""

from __future__ import annotations

import asyncio
import json

import httpx

from reauthd.sim import SimServer

KEY = "sim-key"


def cmd(*args: str) -> bytes:
    out = f"*{len(args)}\r\n".encode()
    for a in args:
        out += f"${len(a.encode())}\r\n{a}\r\n".encode()
    return out


class Resp:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, sim: SimServer) -> Resp:
        reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
        return cls(reader, writer)

    async def send(self, *args: str) -> None:
        self.writer.write(cmd(*args))
        await self.writer.drain()

    async def reply(self) -> object:
        line = (await asyncio.wait_for(self.reader.readline(), 5)).rstrip(b"\r\n")
        kind, rest = line[:1], line[1:].decode()
        if kind in (b"+", b"-"):
            return kind.decode() + rest
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = await self.reader.readexactly(n + 2)
            return data[:-2].decode()
        if kind == b"*":
            return [await self.reply() for _ in range(int(rest))]
        raise AssertionError(line)

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def test_auth_and_commands_before_auth_count_as_failures(sim: SimServer) -> None:
    """§1: each command before AUTH is checked with an empty key and counts toward the ban."""
    r = await Resp.open(sim)
    for _ in range(5):
        await r.send("LPOP", "usage")
        assert await r.reply() == "-NOAUTH Authentication required."
    await r.send("AUTH", KEY)
    reply = await r.reply()
    assert isinstance(reply, str)
    assert reply.startswith("-ERR IP banned due to too many failed attempts. Try again in ")
    await r.close()
    async with httpx.AsyncClient(base_url=sim.base_url) as c:  # same ban table as HTTP
        resp = await c.get("/v0/management/auth-files", headers={"Authorization": f"Bearer {KEY}"})
        assert resp.status_code == 403


async def test_auth_forms_and_errors(sim: SimServer) -> None:
    """§7: AUTH [user] <key>; wrong key → ERR invalid management key; pop key must be `usage`."""
    r = await Resp.open(sim)
    await r.send("AUTH", "nope")
    assert await r.reply() == "-ERR invalid management key"
    await r.send("AUTH", "default", KEY)
    assert await r.reply() == "+OK"
    await r.send("LPOP", "queue")
    assert await r.reply() == "-ERR unsupported channel 'queue'"
    await r.send("LPOP", "usage")
    assert await r.reply() is None
    await r.send("RPOP", "usage", "3")
    assert await r.reply() == []
    await r.send("LPOP", "usage", "0")
    assert await r.reply() == "-ERR value is not an integer or out of range"
    await r.send("GET", "x")
    assert await r.reply() == "-ERR unknown command 'get'"
    await r.close()


async def test_inline_commands_are_protocol_errors(sim: SimServer) -> None:
    """redis_queue_protocol.go readRESPArray: only arrays; `+PING` is a protocol error and closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    writer.write(b"+PING\r\n")
    await writer.drain()
    assert await asyncio.wait_for(reader.readline(), 5) == b"-ERR protocol error\r\n"
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_subscribe_errors_receives_markresult_event(sim: SimServer) -> None:
    """§7: every failed MarkResult is published on `errors` with the documented event shape."""
    auth = sim.state.add_credential("codex", email="u@x.com", plan="plus")
    r = await Resp.open(sim)
    await r.send("AUTH", KEY)
    assert await r.reply() == "+OK"
    await r.send("SUBSCRIBE", "errors")
    assert await r.reply() == ["subscribe", "errors", 1]
    await r.send("PING", "hi")
    assert await r.reply() == ["pong", "hi"]
    sim.state.revoke(auth.name, "token_invalidated", live=True)
    message = await r.reply()
    assert isinstance(message, list)
    assert message[:2] == ["message", "errors"]
    event = json.loads(message[2])
    assert event["auth_index"] == auth.auth_index
    assert event["auth_id"] == auth.name
    assert event["status_code"] == 401
    assert json.loads(event["body"])["error"]["code"] == "auth_unavailable"
    assert event["auth_status"]["status"] == "error"
    assert event["auth_status"]["model"]["name"] == "gpt-5"
    assert "retryable" not in event
    await r.send("UNSUBSCRIBE")
    assert await r.reply() == ["unsubscribe", "errors", 0]
    await r.close()


async def test_silent_revocation_publishes_nothing(sim: SimServer) -> None:
    """§7: events come from MarkResult only; a revocation without a request is invisible here."""
    auth = sim.state.add_credential("claude", email="c@x.com")
    r = await Resp.open(sim)
    await r.send("AUTH", KEY)
    await r.reply()
    await r.send("SUBSCRIBE", "errors")
    await r.reply()
    sim.state.revoke(auth.name, "claude_revoked", live=False)
    await r.send("PING")
    assert await r.reply() == ["pong", None]
    await r.send("QUIT")
    assert await r.reply() == "+OK"
    await r.close()


async def test_subscribe_usage_takes_records_instead_of_queue() -> None:
    """§7: with a `usage` subscriber connected, records go to it and not to the pop queue."""
    async with SimServer(KEY, usage_statistics=True) as sim:
        auth = sim.state.add_credential("kimi")
        r = await Resp.open(sim)
        await r.send("AUTH", KEY)
        await r.reply()
        await r.send("SUBSCRIBE", "usage")
        assert await r.reply() == ["subscribe", "usage", 1]
        assert sim.state.simulate_request(auth.name).status == 200
        message = await r.reply()
        assert isinstance(message, list)
        record = json.loads(message[2])
        assert (record["auth_index"], record["failed"], record["fail"]) == (
            auth.auth_index,
            False,
            {"status_code": 200, "body": ""},
        )
        assert list(sim.state.usage_queue) == []
        await r.close()
        await asyncio.sleep(0.05)
        sim.state.simulate_request(auth.name)
        assert len(sim.state.usage_queue) == 1


async def test_disconnect_resp_closes_subscribers(sim: SimServer) -> None:
    """Control API: an error-stream outage closes every RESP connection (clients must reconnect)."""
    r = await Resp.open(sim)
    await r.send("AUTH", KEY)
    await r.reply()
    await r.send("SUBSCRIBE", "errors")
    await r.reply()
    async with httpx.AsyncClient(base_url=sim.base_url) as c:
        assert (await c.post("/_sim/resp/disconnect")).json() == {"status": "ok", "closed": 1}
    assert await asyncio.wait_for(r.reader.read(), 5) == b""
    assert sim.state.subscribers["errors"] == set()
    await r.close()


async def test_neutral_failure_is_published_with_its_code_and_status_unchanged(sim: SimServer) -> None:
    """conductor_cooldown.go: a request_scoped/connection_lifecycle failure skips the cooldown, and
    publishErrorEvent sends it with the result's own `code` (error_events.go)."""
    auth = sim.state.add_credential("antigravity", email="a@x.com")
    r = await Resp.open(sim)
    await r.send("AUTH", KEY)
    await r.reply()
    await r.send("SUBSCRIBE", "errors")
    await r.reply()
    sim.state.neutral_failure(auth.name, code="request_scoped", status=401, model="gemini-3-pro-preview")
    message = await r.reply()
    assert isinstance(message, list)
    event = json.loads(message[2])
    assert (event["code"], event["status_code"], event["auth_index"]) == (
        "request_scoped",
        401,
        auth.auth_index,
    )
    assert event["auth_status"]["status"] == "active" and event["auth_status"]["unavailable"] is False
    assert (auth.status, auth.failed) == ("active", 1)
    await r.close()


async def test_a_subscriber_with_256_unread_events_is_dropped(sim: SimServer) -> None:
    """internal/redisqueue/queue.go: each subscriber has a 256-message channel; when it is full (the client
    stopped reading and the socket took no more), publishToSubscribers drops it and closes the channel."""
    import socket

    auth = sim.state.add_credential("codex", email="u@x.com", plan="plus")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", sim.port))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)
    r = Resp(reader, writer)
    await r.send("AUTH", KEY)
    assert await r.reply() == "+OK"
    await r.send("SUBSCRIBE", "errors")
    assert await r.reply() == ["subscribe", "errors", 1]
    reader._transport.pause_reading()  # type: ignore[attr-defined]  # the client stops reading
    published = 0
    while sim.state.subscribers["errors"] and published < 50_000:
        sim.state.neutral_failure(auth.name)
        published += 1
        if published % 50 == 0:
            await asyncio.sleep(0)  # let the loop push bytes until the socket is full
    assert not sim.state.subscribers["errors"], "the subscriber was never dropped"
    assert published > 256
    writer.close()
