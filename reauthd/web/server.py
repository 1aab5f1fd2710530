"""Serving the web app with uvicorn inside the daemon's own event loop, without touching signal handlers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Generator

import uvicorn
from starlette.types import ASGIApp


class _EmbeddedServer(uvicorn.Server):
    """uvicorn's Server minus signal capture: the daemon owns SIGTERM/SIGINT and stops us itself."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class WebServer:
    """`await start()` binds (port 0 picks a free one) and serves in a task; `await stop()` shuts down."""

    def __init__(self, app: ASGIApp, host: str, port: int) -> None:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="off",  # uvicorn would sys.exit() on a lifespan failure; the daemon owns startup
            access_log=False,  # its lines carry the raw path, and /r/<token> is a secret
            log_config=None,
            server_header=False,
            proxy_headers=False,
        )
        self._server = _EmbeddedServer(config)
        self._task: asyncio.Task[None] | None = None
        self.host = host
        self.port = port

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._server.serve(), name="reauthd-web")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises the bind error (address in use, permission)
                raise RuntimeError("the web server stopped during startup")
            await asyncio.sleep(0.01)
        sockets = [s for server in self._server.servers for s in server.sockets]
        if sockets:
            self.port = int(sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None


async def serve(app: ASGIApp, host: str, port: int) -> None:
    """Serve until cancelled (the daemon cancels this task on shutdown); never installs signal handlers."""
    server = WebServer(app, host, port)
    await server.start()
    try:
        assert server._task is not None
        await asyncio.shield(server._task)
    finally:
        await server.stop()
