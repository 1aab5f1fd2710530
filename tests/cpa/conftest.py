"""Fixtures for the CPA client tests: tiny loopback servers for answers the simulator does not produce."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import uvicorn
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from reauthd.cpa.wire import RetryPolicy

#: Fast retries so the tests do not sleep for seconds.
FAST_RETRY = RetryPolicy(attempts=3, base_delay_s=0.01, max_delay_s=0.02)

Handler = Callable[[Request], Awaitable[Response]]


class OddCPA:
    """An ASGI app that answers every request with `handler` and counts requests per path."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.hits: dict[str, int] = {}
        self.auth_headers: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        self.hits[request.url.path] = self.hits.get(request.url.path, 0) + 1
        self.auth_headers.append(request.headers.get("authorization", ""))
        response = await self.handler(request)
        await response(scope, receive, send)


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@asynccontextmanager
async def serve(app: ASGIApp) -> AsyncIterator[str]:
    """Serve `app` with uvicorn on a free 127.0.0.1 port inside the test's loop; stops on exit."""
    sock = free_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.01)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


def closed_port() -> int:
    """A loopback port nobody listens on (bound then released)."""
    sock = free_socket()
    port: int = sock.getsockname()[1]
    sock.close()
    return port
