"""The engine's `errors` consumer survives garbage on the RESP stream and keeps going after reconnect."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest

from reauthd.config import DetectConfig
from reauthd.core.model import VerdictKind
from reauthd.cpa.client import CPAClient
from reauthd.detect.engine import DetectionEngine

BODY = json.dumps(
    {"error": {"message": "Your authentication token has been invalidated. Please try signing in again.",
               "type": "authentication_error", "code": "auth_unavailable"}}
)  # fmt: skip
EVENT = json.dumps(
    {"timestamp": "2026-11-27T10:00:00Z", "provider": "codex", "auth_id": "codex-x.json",
     "auth_index": "9f86d081884c7d65", "status_code": 401, "body": BODY,
     "auth_status": {"status": "error", "status_message": BODY, "unavailable": True}}
).encode()  # fmt: skip


def bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


class GarbageThenGood:
    """Connection 1 sends garbage after SUBSCRIBE; connection 2 sends an unparseable event, then a good one."""

    def __init__(self) -> None:
        self.connections = 0
        self.first_commands: list[bytes] = []
        self.handlers: list[tuple[asyncio.Task[object], asyncio.StreamWriter]] = []

    async def close(self) -> None:
        for task, writer in self.handlers:
            task.cancel()
            writer.close()
        await asyncio.gather(*(t for t, _ in self.handlers), return_exceptions=True)
        for _, writer in self.handlers:
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.append((task, writer))
        self.connections += 1
        n = self.connections
        buffer = b""
        while b"SUBSCRIBE" not in buffer:
            chunk = await reader.read(1024)
            if not chunk:
                return
            if not buffer:
                self.first_commands.append(chunk.split(b"\r\n")[2])
            buffer += chunk
            if b"AUTH" in buffer and b"+OK" not in buffer:
                writer.write(b"+OK\r\n")
                buffer += b"+OK"
        writer.write(b"*3\r\n" + bulk(b"subscribe") + bulk(b"errors") + b":1\r\n")
        if n == 1:
            writer.write(b"\x00\xffthis is not RESP at all\r\n")
        else:
            for payload in (b"{not json", b'{"auth_index": 5}', EVENT):
                writer.write(b"*3\r\n" + bulk(b"message") + bulk(b"errors") + bulk(payload))
        await writer.drain()
        await asyncio.sleep(30)


@pytest.fixture
async def fake() -> AsyncIterator[tuple[GarbageThenGood, str]]:
    server_logic = GarbageThenGood()
    server = await asyncio.start_server(server_logic.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield server_logic, f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server_logic.close()
        await server.wait_closed()


async def test_garbage_on_the_stream_is_survived(fake: tuple[GarbageThenGood, str]) -> None:
    logic, url = fake
    async with CPAClient("main", url, "stream-key") as client:
        engine = DetectionEngine({"main": client}, DetectConfig(error_stream=True), probes_enabled=False)
        consumer = asyncio.create_task(engine._consume_errors("main"))
        try:
            for _ in range(300):
                view = engine.verdict_for("main", "9f86d081884c7d65")
                if view is not None:
                    break
                await asyncio.sleep(0.02)
        finally:
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)
            await engine.aclose()
    assert view is not None and view.verdict.kind is VerdictKind.NEEDS_REAUTH
    assert not view.verdict.confirmed  # an event alone never pages; the listing and a probe must follow
    assert logic.connections == 2
    assert logic.first_commands == [b"AUTH", b"AUTH"]  # never a command before AUTH (contract §1)
