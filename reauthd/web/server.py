"""Serving the web app with uvicorn inside the daemon's own event loop, without touching signal handlers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator

import uvicorn
from starlette.types import ASGIApp


class _EmbeddedServer(uvicorn.Server):
    """uvicorn's Server minus signal capture: the daemon owns SIGTERM/SIGINT and stops us itself."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class WebServer:
    """`await start()` binds (port 0 picks a free one) and serves in a task; `await stop()` shuts down.

    The socket is bound here, not by uvicorn: uvicorn answers a bind failure with sys.exit(), and a
    SystemExit inside a task would escape the daemon's event loop. Here it is a plain OSError.
    """

    def __init__(self, app: ASGIApp, host: str, port: int) -> None:
        self._config = uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="off",  # uvicorn would sys.exit() on a lifespan failure; the daemon owns startup
            access_log=False,  # its lines carry the raw path, and /r/<token> is a secret
            log_config=None,
            server_header=False,
            proxy_headers=False,  # X-Forwarded-For counts only from web.trusted_proxies (ForwardedClient)
        )
        self._server = _EmbeddedServer(self._config)
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None
        self.host = host
        self.port = port

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host.strip("[]"), self.port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    async def _serve(self, sock: socket.socket) -> None:
        try:
            await self._server.serve(sockets=[sock])
        except SystemExit:
            raise RuntimeError("the web server stopped unexpectedly") from None

    async def start(self) -> None:
        """Bind and start serving; raises OSError when the address cannot be used."""
        sock = self._bind()
        self._socket = sock
        self.port = int(sock.getsockname()[1])
        self._task = asyncio.get_running_loop().create_task(self._serve(sock), name="reauthd-web")
        try:
            while not self._server.started:
                if self._task.done():
                    self._task.result()
                    raise RuntimeError("the web server stopped during startup")
                await asyncio.sleep(0.01)
        except BaseException:
            # Cancelled (or failed) while starting: do not leave a half-started server listening.
            await self.stop()
            raise

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def wait(self) -> None:
        """Until the server stops by itself (it normally does not)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError, RuntimeError):
            await self._task
        self._task = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None


async def serve(app: ASGIApp, host: str, port: int) -> None:
    """Serve until cancelled (the daemon cancels this task on shutdown); never installs signal handlers."""
    server = WebServer(app, host, port)
    try:
        await server.start()
        await server.wait()
    finally:
        await server.stop()
