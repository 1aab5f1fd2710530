"""The simulator's server: one loopback port for HTTP and RESP, plus a thread runner for sync code.

HTTP goes to uvicorn's h11 protocol, RESP to resp.py; the first byte of a connection decides (§7).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import signal
import threading
from collections.abc import Callable
from email.utils import formatdate
from types import TracebackType
from typing import Any, Self, TypeVar

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from reauthd.sim.app import SimApp
from reauthd.sim.clock import SimClock
from reauthd.sim.resp import RESP_PREFIXES, RespConnection
from reauthd.sim.state import Settings, SimState

T = TypeVar("T")
log = logging.getLogger(__name__)
TICK_SECONDS = 0.05


class _Mux(asyncio.Protocol):
    """Waits for the first bytes, then hands the transport to the RESP or the HTTP protocol."""

    def __init__(self, sim: SimServer) -> None:
        self.sim = sim
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        # Protocols are swapped after the first bytes, so closed transports are pruned here instead.
        self.sim.connections = {t for t in self.sim.connections if not t.is_closing()}
        self.sim.connections.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.sim.connections.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None
        proto: asyncio.Protocol
        if data[:1] in (RESP_PREFIXES[i : i + 1] for i in range(len(RESP_PREFIXES))):
            proto = RespConnection(self.sim.state, transport)
        else:
            if self._outage(data):
                transport.abort()
                return
            proto = H11Protocol(self.sim.config, self.sim.server_state, {})
            proto.connection_made(transport)
        transport.set_protocol(proto)
        proto.data_received(data)

    def _outage(self, data: bytes) -> bool:
        """An injected outage resets the connection before any answer (only management routes)."""
        line = data.split(b"\r\n", 1)[0].split(b" ")
        if len(line) < 2 or not line[1].startswith(b"/v0/management"):
            return False
        path = line[1].split(b"?", 1)[0].decode("latin-1")
        return self.sim.state.take_fault(line[0].decode("latin-1"), path, outage=True) is not None


async def wait_for_stop_signal() -> None:
    """Until SIGINT or SIGTERM (`reauthd sim`, `reauthd sim --home`)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()


class LoopbackServer:
    """What the CPA and Home simulators share: an asyncio server speaking HTTP through uvicorn's protocol
    (`connections`, `server_state`), its base URL, and a stop that closes every connection."""

    host: str
    port: int
    server_state: ServerState
    connections: set[asyncio.Transport]
    _server: asyncio.Server | None
    _stopped: asyncio.Event

    @property
    def base_url(self) -> str:
        """Where clients reach the simulator (a wildcard bind is reached on loopback)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        raise NotImplementedError

    async def _before_close(self) -> None:
        """What a subclass stops before the listener closes (the CPA simulator's timer task)."""

    async def stop(self) -> None:
        await self._before_close()
        if self._server is not None:
            self._server.close()
            for conn in list(self.server_state.connections):
                conn.shutdown()
            for transport in list(self.connections):
                transport.close()
            if self.server_state.tasks:
                await asyncio.wait(list(self.server_state.tasks), timeout=2)
            await self._server.wait_closed()
            self._server = None
        self._stopped.set()

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        await self._stopped.wait()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


class SimServer(LoopbackServer):
    """A simulated CPA on loopback. `async with SimServer() as sim:` → `sim.base_url`, `sim.state`."""

    def __init__(
        self,
        management_key: str | None = "sim-key",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        allow_remote: bool = False,
        management_enabled: bool = True,
        version: str = "v7.2.140-sim",
        proxy_api_keys: tuple[str, ...] = ("sim-proxy-key",),
        usage_statistics: bool = False,
        watcher_delay: float = 1.0,
        plugin_providers: tuple[str, ...] = (),
        auto_refresh: bool = False,
        public_url: str | None = None,
        clock: SimClock | None = None,
    ) -> None:
        settings = Settings(
            management_key=management_key,
            allow_remote=allow_remote,
            management_enabled=management_enabled and bool(management_key),
            version=version,
            proxy_api_keys=tuple(proxy_api_keys),
            usage_statistics=usage_statistics,
            watcher_delay=watcher_delay,
            plugin_providers=tuple(plugin_providers),
            auto_refresh=auto_refresh,
        )
        self.state = SimState(settings, clock)
        self.host = host
        self.port = port
        self.public_url = public_url.rstrip("/") if public_url else None
        self.config = uvicorn.Config(
            SimApp(self.state, self._abort_peer),
            proxy_headers=False,
            lifespan="off",
            access_log=False,
            log_config=None,
            server_header=False,
        )
        self.config.load()
        self.server_state = ServerState()
        self.connections: set[asyncio.Transport] = set()
        self._server: asyncio.Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()

    def _abort_peer(self, peer: tuple[Any, ...]) -> None:
        """Reset the connection of one HTTP client (used by the injected "drop" fault)."""
        for transport in list(self.connections):
            name = transport.get_extra_info("peername")
            if name is not None and tuple(name[:2]) == tuple(peer[:2]):
                transport.abort()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Mux(self), self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        # Auth URLs point browsers at the fake provider pages under this address.
        self.state.settings.base_url = self.public_url or self.base_url
        self._refresh_date()
        self._ticker = asyncio.create_task(self._tick())

    def _refresh_date(self) -> None:
        """Go's net/http sends a Date header on every response; it follows the simulated clock."""
        stamp = formatdate(self.state.now().timestamp(), usegmt=True).encode()
        self.server_state.default_headers = [(b"date", stamp)]

    async def _tick(self) -> None:
        """Fire simulated timers (watcher reloads, exchanges, timeouts) as wall time passes."""
        while True:
            self._refresh_date()
            try:
                self.state.run_due()
            except Exception:  # a broken timer must not stop every later one (flows would hang)
                log.exception("simulator timer failed")
            await asyncio.sleep(TICK_SECONDS)

    async def _before_close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None


class SimThread:
    """A SimServer running its own event loop in a daemon thread, for sync code and benchmarks."""

    def __init__(self, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._kwargs = kwargs
        self.server: SimServer | None = None
        self._thread = threading.Thread(target=self._run, name="reauthd-sim", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self.server is None:
            raise RuntimeError("the simulator did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def main() -> None:
            self.server = SimServer(**self._kwargs)
            await self.server.start()
            self._ready.set()
            await self.server.serve_forever()

        try:
            self._loop.run_until_complete(main())
        finally:
            self._ready.set()
            self._loop.close()

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return self.server.base_url

    @property
    def state(self) -> SimState:
        assert self.server is not None
        return self.server.state

    def call(self, fn: Callable[[SimState], T]) -> T:
        """Run `fn(state)` on the simulator's loop (the state is not thread-safe) and return its result."""

        async def run() -> T:
            return fn(self.state)

        fut: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(run(), self._loop)
        return fut.result(30)

    def stop(self) -> None:
        if self.server is not None and not self._loop.is_closed():
            asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(10)
        self._thread.join(10)


def run_sim_in_thread(**kwargs: Any) -> SimThread:
    """Start a simulator on a background thread: `.base_url`, `.call(fn)`, `.stop()`."""
    return SimThread(**kwargs)
