"""Loopback servers for tests: free ports, and an ASGI app served by uvicorn inside the test's event loop."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from starlette.types import ASGIApp


def free_socket() -> socket.socket:
    """A TCP socket bound to a free 127.0.0.1 port (port 0), not yet listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def free_port() -> int:
    """A loopback port that was free a moment ago (bound then released): nobody listens on it until a server
    the test starts takes it."""
    with free_socket() as sock:
        port: int = sock.getsockname()[1]
    return port


@asynccontextmanager
async def serve_asgi(app: ASGIApp, **uvicorn_options: Any) -> AsyncIterator[str]:
    """Serve `app` with uvicorn on a free 127.0.0.1 port; yields the base URL and stops when the block ends.

    `uvicorn_options` go to `uvicorn.Config` (e.g. `timeout_graceful_shutdown`, `log_config`)."""
    options: dict[str, Any] = {"log_level": "warning", "lifespan": "off", **uvicorn_options}
    sock = free_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, **options))
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
