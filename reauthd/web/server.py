"""Serving the web app with uvicorn inside the daemon's own event loop, without touching signal handlers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator

import h11
import structlog
import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

log = structlog.get_logger(__name__)

#: Defaults of `web.max_connections` and `web.header_timeout_s` (issue 11: 1,100 slow clients).
DEFAULT_MAX_CONNECTIONS = 256
DEFAULT_HEADER_TIMEOUT_S = 10.0


class ConnectionGuard:
    """Bounds what clients of the page can hold: open connections, and the time to send a request's headers.

    uvicorn's h11 protocol times out idle keep-alive connections only; a client that sends its headers one
    line at a time holds its connection (a file descriptor) forever, and 1,100 of them exhausted systemd's
    default 1,024 open files, starving CPA polling and notification delivery. Beyond `max_connections`,
    a new connection evicts the oldest one still sending headers (a real browser sends them in one packet,
    so it is never the oldest for long), else the oldest one still sending a request body; if every
    connection is busy with a request, the new one is closed.
    """

    def __init__(self, max_connections: int, header_timeout_s: float) -> None:
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.open: set[GuardedH11Protocol] = set()
        self.reading_headers: dict[GuardedH11Protocol, None] = {}  # insertion order: oldest first
        self.receiving_body: dict[GuardedH11Protocol, None] = {}  # a request whose body is still arriving
        self.dropped = 0
        self._last_warning = 0.0

    def admit(self, conn: GuardedH11Protocol) -> bool:
        self.open.add(conn)
        if len(self.open) <= self.max_connections:
            return True
        # A slow header sender first, else a slow body sender (a real form posts in milliseconds).
        victim = next(iter(self.reading_headers), None) or next(iter(self.receiving_body), None)
        self._dropped(conn)
        if victim is None:
            return False
        victim.drop()
        return True

    def _dropped(self, conn: GuardedH11Protocol) -> None:
        self.dropped += 1
        now = conn.loop.time()
        if now - self._last_warning >= 60:  # one line a minute, however many are dropped
            self._last_warning = now
            log.warning(
                "web.connections_dropped",
                limit=self.max_connections,
                dropped_total=self.dropped,
                hint="many slow or idle clients: a flood or a misbehaving proxy",
            )

    def forget(self, conn: GuardedH11Protocol) -> None:
        self.open.discard(conn)
        self.reading_headers.pop(conn, None)
        self.receiving_body.pop(conn, None)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header deadline and a place in the ConnectionGuard."""

    guard: ConnectionGuard  # set on the per-server subclass made by WebServer

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        if not self.guard.admit(self):
            self.guard.forget(self)
            transport.abort()
            return
        self._await_headers()

    def _await_headers(self) -> None:
        if self._header_timer is None:
            self.guard.reading_headers[self] = None
            self._header_timer = self.loop.call_later(self.guard.header_timeout_s, self._headers_too_slow)

    def _headers_done(self) -> None:
        self.guard.reading_headers.pop(self, None)
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        self.guard._dropped(self)
        self.drop()

    def drop(self) -> None:
        self._headers_done()
        self.guard.forget(self)
        if not self.transport.is_closing():
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        idle = self.cycle is None or self.cycle.response_complete
        if idle:
            self._await_headers()  # a new request begins: its headers get the deadline too
        before = self.cycle
        super().data_received(data)
        if self.cycle is not before:
            self._headers_done()
        if self.cycle is not None and self.conn.their_state is h11.SEND_BODY:
            self.guard.receiving_body.setdefault(self, None)
        else:
            self.guard.receiving_body.pop(self, None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._headers_done()
        self.guard.forget(self)
        super().connection_lost(exc)


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

    def __init__(
        self,
        app: ASGIApp,
        host: str,
        port: int,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
    ) -> None:
        self.guard = ConnectionGuard(max_connections, header_timeout_s)
        protocol = type("ServerH11Protocol", (GuardedH11Protocol,), {"guard": self.guard})
        self._config = uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="off",  # uvicorn would sys.exit() on a lifespan failure; the daemon owns startup
            access_log=False,  # its lines carry the raw path, and /r/<token> is a secret
            log_config=None,
            server_header=False,
            proxy_headers=False,  # X-Forwarded-For counts only from web.trusted_proxies (ForwardedClient)
            http=protocol,
            ws="none",
            # asyncio accepts up to `backlog` queued connections in one go, each a file descriptor before
            # the guard can drop it; a short queue keeps that burst small (the rest wait in the client's
            # kernel, not in this process).
            backlog=min(128, max_connections),
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
