"""CPA's real-time `SUBSCRIBE errors` channel on the management port, read as typed `ErrorEvent`s (contract §7).

Wire protocol (internal/api/redis_queue_protocol.go): the first byte of a TCP connection decides the
protocol, so RESP shares the HTTP host:port (with TLS: inside TLS, without ALPN, see
internal/api/protocol_multiplexer.go). The **first** command is `AUTH <key>`: any command sent
before it is checked with an empty key and counts as a failed attempt on the same per-IP ban table as
HTTP. Then `SUBSCRIBE errors` → `["subscribe","errors",1]`, then `["message","errors",<json>]` for every
failed request CPA records. In subscribe mode CPA answers `PING` with `["pong", <payload>]`, which we
use to notice a half-open connection.

`ErrorStream.events()` is one connection; `ErrorStream.run()` reconnects with bounded, jittered backoff.
An AUTH refusal closes the client's key gate (shared with HTTP) and ends `run()` with that error.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

import structlog
from pydantic import ValidationError

from reauthd.cpa.client import CPAClient, tls_context
from reauthd.cpa.errors import (
    CPAError,
    FeatureMissing,
    KeyProblem,
    MalformedResponse,
    ManagementBanned,
    ManagementKeyNotSet,
    ManagementKeyRejected,
    RemoteManagementDisabled,
    TransientCPAError,
    parse_ban_retry_after,
)
from reauthd.cpa.kind import ClusterNodeRefused, FoundKind
from reauthd.cpa.models import ErrorEvent
from reauthd.cpa.resp import RESPError, RESPProtocolError, RESPReader, RESPValue, encode_command
from reauthd.cpa.wire import redact

log = structlog.get_logger(__name__)

ENDPOINT = "RESP SUBSCRIBE errors"


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """Delay before reconnect n (from 0): full jitter in [0, min(max, base·2^n)]."""

    base_delay_s: float = 1.0
    max_delay_s: float = 60.0
    max_consecutive_failures: int | None = None  # None: keep trying (transient failures only)
    #: A connection that stayed up this long resets the backoff. Merely subscribing does not: a peer
    #: that accepts SUBSCRIBE and then sends garbage must not get us into a tight reconnect loop.
    healthy_after_s: float = 30.0

    def delay(self, failures: int) -> float:
        return random.uniform(0.0, min(self.max_delay_s, self.base_delay_s * (2 ** min(failures, 16))))


class ErrorStream:
    """Subscribes to one CPA's `errors` channel with that CPA's client's key and key gate."""

    def __init__(
        self,
        client: CPAClient,
        *,
        connect_timeout_s: float = 5.0,
        ping_interval_s: float = 30.0,
        max_line_bytes: int = 64 * 1024,
        max_event_bytes: int = 1024 * 1024,
        reconnect: ReconnectPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.client = client
        self.cpa = client.name
        parts = urlsplit(client.base_url)
        self._tls = parts.scheme == "https"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if self._tls else 80)
        # Its own context: the HTTP client's gets ALPN added by httpcore, which would route us to HTTP.
        self._tls_context = tls_context(client.tls_verify) if self._tls else None
        self.connect_timeout_s = connect_timeout_s
        self.ping_interval_s = ping_interval_s
        self.max_line_bytes = max_line_bytes
        self.max_event_bytes = max_event_bytes
        self.reconnect = reconnect or ReconnectPolicy()
        self._sleep = sleep
        self.events_received = 0
        self.events_rejected = 0  # well-framed messages whose JSON is not an ErrorEvent
        self.subscriptions = 0  # successful SUBSCRIBEs so far (a reconnect loop resets its backoff on one)

    def _now(self) -> datetime:
        return self.client.clock()

    # ------------------------------------------------------------------------------ one connection

    async def events(self) -> AsyncGenerator[ErrorEvent, None]:
        """Connect, AUTH, SUBSCRIBE, then yield events until the connection ends.

        Raises KeyProblem/ClientPaused (gate), FeatureMissing (no `errors` channel), ManagementNotEnabled,
        TransientCPAError (network, EOF, silence), MalformedResponse (garbage on the wire).
        """
        gate = self.client.gate
        gate.check(ENDPOINT, self._now())
        # Neither a Home nor a cluster node has an `errors` channel (home-contract §4): send them no key.
        if self.client.kind is FoundKind.NODE:
            raise ClusterNodeRefused(self.cpa, ENDPOINT)
        if self.client.kind is FoundKind.HOME or self.client.configured_kind == "home":
            raise self._home_has_none()
        writer: asyncio.StreamWriter | None = None
        try:
            async with gate.admit(ENDPOINT, self._now):
                reader, writer = await self._connect()
                resp = RESPReader(
                    reader, max_line_bytes=self.max_line_bytes, max_bulk_bytes=self.max_event_bytes
                )
                await self._auth(resp, writer)
            await self._subscribe(resp, writer)
            self.subscriptions += 1
            log.info("cpa.errorstream.subscribed", cpa=self.cpa)
            async for event in self._messages(resp, writer):
                yield event
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(OSError, ssl.SSLError):
                    await writer.wait_closed()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that lands
            # as the inner await completes (gh-86296), and a stream that cannot be cancelled hangs shutdown.
            async with asyncio.timeout(self.connect_timeout_s):
                return await asyncio.open_connection(
                    self._host,
                    self._port,
                    ssl=self._tls_context,
                    limit=self.max_line_bytes + 2,
                )
        except TimeoutError:
            raise TransientCPAError(self.cpa, ENDPOINT, "connect timed out") from None
        except OSError as exc:
            raise TransientCPAError(
                self.cpa, ENDPOINT, f"connection failed ({exc.strerror or 'OS error'})"
            ) from None

    async def _auth(self, resp: RESPReader, writer: asyncio.StreamWriter) -> None:
        key = self.client.management_key.get_secret_value()
        # AUTH must be the very first bytes on the connection (see the module docstring).
        reply = await self._request(resp, writer, encode_command("AUTH", key))
        if reply == "OK":
            self.client.gate.record_accepted(self._now())
            return
        if isinstance(reply, RESPError):
            problem = self._auth_problem(redact(reply.message, [key]))
            if isinstance(problem, KeyProblem):
                self.client.gate.record_problem(problem, self._now())
            raise problem
        raise MalformedResponse(
            self.cpa, ENDPOINT, "AUTH was answered with something other than OK or an error"
        )

    def _auth_problem(self, message: str) -> CPAError:
        text = message.removeprefix("ERR ").strip()
        if text.startswith("IP banned"):
            return ManagementBanned(self.cpa, ENDPOINT, parse_ban_retry_after(text))
        if text in ("invalid management key", "missing management key"):
            return ManagementKeyRejected(self.cpa, ENDPOINT, text)
        if text == "remote management disabled":
            return RemoteManagementDisabled(self.cpa, ENDPOINT)
        if text == "remote management key not set":
            return ManagementKeyNotSet(self.cpa, ENDPOINT)
        if "home mode" in text:
            # A node's RESP refusal (CPA redis_queue_protocol.go:61-65, home-contract §8.4).
            return ClusterNodeRefused(self.cpa, ENDPOINT)
        if text == "RESP AUTH disabled; use mTLS":
            # Home's RESP side (respserver/server.go:592-594, home-contract §8.4); no ban impact.
            return self._home_has_none()
        return MalformedResponse(self.cpa, ENDPOINT, f"unexpected AUTH answer: {text}")

    def _home_has_none(self) -> FeatureMissing:
        """Home has no `errors` channel (home-contract §4; only mTLS nodes may use its RESP side)."""
        home = self.client.home_version
        return FeatureMissing(
            self.cpa,
            ENDPOINT,
            "the real-time errors channel (a Home has none)",
            home.version if home else None,
        )

    async def _subscribe(self, resp: RESPReader, writer: asyncio.StreamWriter) -> None:
        reply = await self._request(resp, writer, encode_command("SUBSCRIBE", "errors"))
        if isinstance(reply, RESPError):
            if "unsupported channel" in reply.message:
                seen = self.client.version
                version = seen.version if seen else None
                raise FeatureMissing(self.cpa, ENDPOINT, "the real-time errors channel", version)
            raise MalformedResponse(self.cpa, ENDPOINT, f"SUBSCRIBE refused: {redact(reply.message, [])}")
        if not (isinstance(reply, list) and len(reply) == 3 and reply[0] == b"subscribe"):
            raise MalformedResponse(self.cpa, ENDPOINT, "SUBSCRIBE was not confirmed")

    async def _request(self, resp: RESPReader, writer: asyncio.StreamWriter, command: bytes) -> RESPValue:
        try:
            writer.write(command)
            await writer.drain()
            async with asyncio.timeout(self.connect_timeout_s):
                return await resp.read_value()
        except TimeoutError:
            raise TransientCPAError(self.cpa, ENDPOINT, "no answer to a command") from None
        except asyncio.IncompleteReadError:
            raise TransientCPAError(self.cpa, ENDPOINT, "connection closed before CPA answered") from None
        except (OSError, ssl.SSLError):
            raise TransientCPAError(self.cpa, ENDPOINT, "connection dropped") from None
        except RESPProtocolError as exc:
            raise MalformedResponse(self.cpa, ENDPOINT, f"not RESP: {exc}") from None

    async def _messages(
        self, resp: RESPReader, writer: asyncio.StreamWriter
    ) -> AsyncGenerator[ErrorEvent, None]:
        awaiting_pong = False
        while True:
            try:
                async with asyncio.timeout(self.ping_interval_s):
                    value = await resp.read_value()
            except TimeoutError:
                if awaiting_pong:
                    raise TransientCPAError(
                        self.cpa, ENDPOINT, "no answer to PING: connection is dead"
                    ) from None
                try:
                    writer.write(encode_command("PING"))
                    await writer.drain()
                except (OSError, ssl.SSLError):
                    raise TransientCPAError(self.cpa, ENDPOINT, "connection dropped") from None
                awaiting_pong = True
                continue
            except asyncio.IncompleteReadError:
                raise TransientCPAError(self.cpa, ENDPOINT, "CPA closed the connection") from None
            except (OSError, ssl.SSLError):
                raise TransientCPAError(self.cpa, ENDPOINT, "connection dropped") from None
            except RESPProtocolError as exc:
                raise MalformedResponse(self.cpa, ENDPOINT, f"not RESP: {exc}") from None
            awaiting_pong = False
            if isinstance(value, list) and len(value) == 3 and value[0] == b"message":
                payload = value[2]
                if not isinstance(payload, bytes):
                    raise MalformedResponse(self.cpa, ENDPOINT, "a message without a payload")
                event = self._parse_event(payload)
                if event is not None:
                    yield event
            elif isinstance(value, list) and value and value[0] == b"pong":
                continue
            elif isinstance(value, RESPError):
                raise MalformedResponse(self.cpa, ENDPOINT, f"CPA sent an error: {redact(value.message, [])}")
            else:
                raise MalformedResponse(self.cpa, ENDPOINT, "an unexpected value in subscribe mode")

    def _parse_event(self, payload: bytes) -> ErrorEvent | None:
        try:
            event = ErrorEvent.model_validate_json(payload)
        except ValidationError as exc:
            self.events_rejected += 1
            first = exc.errors(include_input=False, include_url=False)[:1]
            where = ".".join(str(p) for p in first[0]["loc"]) if first else "?"
            log.warning(
                "cpa.errorstream.bad_event",
                cpa=self.cpa,
                problem=f"{where}: {first[0]['msg'] if first else ''}",
            )
            return None
        self.events_received += 1
        return event

    # ---------------------------------------------------------------------------------- forever

    async def run(self) -> AsyncGenerator[ErrorEvent, None]:
        """Yield events forever, reconnecting after transient failures and garbage.

        Ends by raising the KeyProblem (incl. ClientPaused), FeatureMissing or ManagementNotEnabled
        that makes reconnecting pointless, or the last TransientCPAError once
        `max_consecutive_failures` is reached.
        """
        failures = 0
        while True:
            started = time.monotonic()
            try:
                async for event in self.events():
                    yield event
                # A clean end (never happens with CPA) is treated like a drop.
                raise TransientCPAError(self.cpa, ENDPOINT, "the stream ended")
            except (TransientCPAError, MalformedResponse) as exc:
                if time.monotonic() - started >= self.reconnect.healthy_after_s:
                    failures = 0  # it worked for a while: start the backoff again from the bottom
                failures += 1
                limit = self.reconnect.max_consecutive_failures
                if limit is not None and failures >= limit:
                    raise
                delay = self.reconnect.delay(failures - 1)
                log.warning("cpa.errorstream.reconnecting", cpa=self.cpa, reason=exc.sentence,
                            in_s=round(delay, 2), failures=failures)  # fmt: skip
                await self._sleep(delay)
