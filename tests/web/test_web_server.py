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
