"""Fixtures for the CPA client tests: tiny loopback servers for answers the simulator does not produce."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from reauthd.cpa.wire import RetryPolicy
from tests.support.servers import serve_asgi

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


def serve(app: ASGIApp) -> AbstractAsyncContextManager[str]:
    """Serve `app` on a free 127.0.0.1 port inside the test's loop; stops on exit, giving open connections 1 s."""
    return serve_asgi(app, timeout_graceful_shutdown=1)
