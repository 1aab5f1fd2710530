"""The embedded uvicorn server: binds on port 0, leaves signal handlers alone, fails with an OSError."""

from __future__ import annotations

import asyncio
import signal
import socket
from types import FrameType

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from reauthd.web.server import WebServer, serve


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


APP = Starlette(routes=[Route("/", hello)])


async def test_serves_on_a_free_port_and_keeps_signal_handlers() -> None:
    def mine(signum: int, frame: FrameType | None) -> None:
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    sigint = signal.getsignal(signal.SIGINT)
    try:
        server = WebServer(APP, "127.0.0.1", 0)
        await server.start()
        assert server.port > 0
        assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.getsignal(signal.SIGINT) is sigint
        async with httpx.AsyncClient() as http:
            assert (await http.get(server.url)).text == "hello"
        await server.stop()
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient() as http:
                await http.get(server.url)
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


async def test_address_in_use_is_an_oserror_not_an_exit() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match="in use"):
            await WebServer(APP, "127.0.0.1", port).start()
    await asyncio.sleep(0)  # the loop is still alive


async def test_serve_runs_until_cancelled() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    task = asyncio.create_task(serve(APP, "127.0.0.1", port))
    async with httpx.AsyncClient() as http:
        for _ in range(100):
            try:
                assert (await http.get(f"http://127.0.0.1:{port}/")).text == "hello"
                break
            except httpx.ConnectError:
                await asyncio.sleep(0.02)
        else:
            raise AssertionError("serve() never answered")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as http:
            await http.get(f"http://127.0.0.1:{port}/")


async def _slow_client(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # headers, but never the blank line that ends them
    await writer.drain()
    return reader, writer


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    try:
        async with asyncio.timeout(seconds):
            return await reader.read(1024) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True


async def test_headers_sent_one_line_at_a_time_are_cut_off() -> None:
    """Issue 11: a client that keeps sending header lines slowly is dropped after the header deadline,
    also on a kept-alive connection after a first, normal request."""
    server = WebServer(APP, "127.0.0.1", 0, header_timeout_s=0.6)
    await server.start()
    try:
        reader, writer = await _slow_client(server.port)

        async def trickle() -> None:
            for n in range(30):
                await asyncio.sleep(0.1)
                writer.write(f"X-Slow-{n}: 1\r\n".encode())

        dripping = asyncio.create_task(trickle())
        assert await _closed_within(reader, 2.5)
        dripping.cancel()
        writer.close()

        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"hello" in await reader.read(4096)
        writer.write(b"GET / HTTP/1.1\r\n")  # the next request on the same connection: slow again
        assert await _closed_within(reader, 2.5)
        writer.close()
    finally:
        await server.stop()


async def test_beyond_max_connections_the_oldest_slow_one_makes_room() -> None:
    server = WebServer(APP, "127.0.0.1", 0, max_connections=16, header_timeout_s=60)
    await server.start()
    try:
        slow = [await _slow_client(server.port) for _ in range(40)]
        await asyncio.sleep(0.2)
        assert len(server.guard.open) <= 16
        async with httpx.AsyncClient() as http:
            for _ in range(3):
                assert (await http.get(server.url)).text == "hello"
        assert len(server.guard.open) <= 16
        assert await _closed_within(slow[0][0], 1.0)  # the oldest made room
        assert not await _closed_within(slow[-1][0], 0.2)  # the newest slow ones are still held
        for _, writer in slow:
            writer.close()
    finally:
        await server.stop()


async def _slow_body(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nab")  # 998 bytes never come
    await writer.drain()
    return reader, writer


async def test_slow_request_bodies_make_room_too() -> None:
    """Headers done quickly, then a body that never ends: such connections must not fill the page for good."""

    async def swallow(request: Request) -> PlainTextResponse:
        await request.body()
        return PlainTextResponse("got it")

    app = Starlette(routes=[Route("/", hello), Route("/", swallow, methods=["POST"])])
    server = WebServer(app, "127.0.0.1", 0, max_connections=16, header_timeout_s=60)
    await server.start()
    try:
        slow = [await _slow_body(server.port) for _ in range(16)]
        await asyncio.sleep(0.2)
        assert len(server.guard.receiving_body) == 16
        async with httpx.AsyncClient() as http:
            assert (await http.get(server.url)).text == "hello"
            assert (await http.post(server.url, content=b"x" * 100)).text == "got it"
        assert await _closed_within(slow[0][0], 1.0)
        for _, writer in slow:
            writer.close()
    finally:
        await server.stop()
