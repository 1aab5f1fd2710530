"""The Redis RESP side of CPA's port: AUTH with the shared ban table, pops and subscriptions.

Mirrors internal/api/redis_queue_protocol.go (contract §7): LPOP/RPOP usage, SUBSCRIBE usage|errors
with PING/UNSUBSCRIBE/QUIT, and commands before AUTH counted as failed key attempts.
"""

from __future__ import annotations

import asyncio

from reauthd.sim.state import SimState

RESP_PREFIXES = b"*$+-:"


class ProtocolError(Exception):
    pass


class _Incomplete(Exception):
    pass


def _line(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.find(b"\n", pos)
    if end < 0:
        raise _Incomplete
    return buf[pos:end].rstrip(b"\r").decode("utf-8", "replace"), end + 1


def parse_array(buf: bytes) -> tuple[list[str], int]:
    """readRESPArray: only arrays of bulk/simple strings; inline commands are a protocol error."""
    if not buf:
        raise _Incomplete
    if buf[0:1] != b"*":
        raise ProtocolError("protocol error")
    line, pos = _line(buf, 1)
    try:
        count = int(line)
    except ValueError as exc:
        raise ProtocolError("protocol error") from exc
    if count < 0:
        raise ProtocolError("protocol error")
    args = []
    for _ in range(count):
        if pos >= len(buf):
            raise _Incomplete
        kind = buf[pos : pos + 1]
        if kind == b"$":
            line, pos = _line(buf, pos + 1)
            try:
                length = int(line)
            except ValueError as exc:
                raise ProtocolError("protocol error") from exc
            if length < 0:
                args.append("")
                continue
            if len(buf) < pos + length + 2:
                raise _Incomplete
            if buf[pos + length : pos + length + 2] != b"\r\n":
                raise ProtocolError("protocol error")
            args.append(buf[pos : pos + length].decode("utf-8", "replace"))
            pos += length + 2
        elif kind in (b"+", b":"):
            line, pos = _line(buf, pos + 1)
            args.append(line)
        else:
            raise ProtocolError("protocol error")
    return args, pos


def bulk(data: bytes) -> bytes:
    return b"$" + str(len(data)).encode() + b"\r\n" + data + b"\r\n"


def array(*items: bytes) -> bytes:
    return b"*" + str(len(items)).encode() + b"\r\n" + b"".join(items)


SUBSCRIBER_BUFFER = 256  # internal/redisqueue/queue.go usageSubscriberBuffer, errorSubscriberBuffer


class RespConnection(asyncio.Protocol):
    """One RESP client. "Local" is decided from the TCP peer only (no forwarded headers)."""

    def __init__(self, state: SimState, transport: asyncio.Transport) -> None:
        self.state = state
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.ip = str(peer[0]) if peer else ""
        if self.ip.startswith("::ffff:"):
            self.ip = self.ip.removeprefix("::ffff:")
        self.local = self.ip in ("127.0.0.1", "::1")
        self.authed = False
        self.channel = ""
        self.channel_name = ""
        self.buf = b""
        self.closed = False
        # A subscriber's channel (internal/redisqueue/queue.go: usage/errorSubscriberBuffer = 256): while
        # the client does not read, the socket stops taking data and the messages wait here; when 256 are
        # waiting, publishToSubscribers drops the subscriber and closes its channel (and the connection).
        self.paused = False
        self.unread: list[bytes] = []
        state.resp_closers[id(self)] = self.close

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)

    def error(self, message: str) -> None:
        self.write(b"-" + message.encode() + b"\r\n")

    def close(self) -> None:
        self.state.resp_closers.pop(id(self), None)
        if self.channel:
            self.state.subscribers[self.channel].discard(self.deliver)
            self.channel = ""
        if not self.closed:
            self.closed = True
            self.transport.close()

    def deliver(self, payload: bytes) -> None:
        message = array(bulk(b"message"), bulk(self.channel_name.encode()), bulk(payload))
        if not self.paused:
            self.write(message)
            return
        if len(self.unread) >= SUBSCRIBER_BUFFER:
            self.close()  # queue.go publishToSubscribers: `default: delete(...); close(subscriber)`
            return
        self.unread.append(message)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        waiting, self.unread = self.unread, []
        for message in waiting:
            self.write(message)

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.resp_closers.pop(id(self), None)
        if self.channel:
            self.state.subscribers[self.channel].discard(self.deliver)
            self.channel = ""
        self.closed = True

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while self.buf and not self.closed:
            try:
                args, used = parse_array(self.buf)
            except _Incomplete:
                return
            except ProtocolError as exc:
                self.error(f"ERR {exc}")
                self.close()
                return
            self.buf = self.buf[used:]
            if not self.state.settings.management_enabled:
                self.close()
                return
            if self.channel:
                self.subscribed_command(args)
            else:
                self.command(args)

    def _ban_message(self) -> str | None:
        _, status, message = self.state.authenticate(self.ip, self.local, "")
        if status == 403 and message.startswith("IP banned due to too many failed attempts"):
            return message
        return None

    def command(self, args: list[str]) -> None:
        if not args:
            self.error("ERR empty command")
            return
        cmd = args[0].strip().upper()
        if cmd != "AUTH" and not self.authed:
            banned = self._ban_message()  # every command before AUTH counts as a failed attempt
            self.error(f"ERR {banned}" if banned else "NOAUTH Authentication required.")
            return
        if cmd == "AUTH":
            if len(args) not in (2, 3):
                banned = self._ban_message()
                self.error(f"ERR {banned}" if banned else "ERR wrong number of arguments for 'auth' command")
                return
            allowed, _, message = self.state.authenticate(self.ip, self.local, args[-1])
            if not allowed:
                self.error(f"ERR {message}")
                return
            self.authed = True
            self.write(b"+OK\r\n")
        elif cmd == "SUBSCRIBE":
            if len(args) != 2:
                self.error("ERR wrong number of arguments for 'subscribe' command")
                return
            channel = args[1].strip()
            if channel.lower() not in ("usage", "errors"):
                self.error(f"ERR unsupported channel '{channel}'")
                return
            # Replies and messages echo the channel as the client spelled it (redis_queue_protocol.go).
            self.channel, self.channel_name = channel.lower(), channel
            self.state.subscribers[self.channel].add(self.deliver)
            self.write(array(bulk(b"subscribe"), bulk(channel.encode()), b":1\r\n"))
        elif cmd in ("LPOP", "RPOP"):
            self.pop(cmd, args)
        else:
            self.error(f"ERR unknown command '{cmd.lower()}'")

    def pop(self, cmd: str, args: list[str]) -> None:
        if len(args) not in (2, 3):
            self.error(f"ERR wrong number of arguments for '{cmd.lower()}' command")
            return
        has_count = len(args) == 3
        try:
            count = int(args[2].strip()) if has_count else 1
        except ValueError:
            count = 0
        if count <= 0:
            self.error("ERR value is not an integer or out of range")
            return
        if args[1].strip().lower() != "usage":
            self.error(f"ERR unsupported channel '{args[1].strip()}'")
            return
        items: list[bytes] = []
        while self.state.usage_queue and len(items) < count:
            items.append(self.state.usage_queue.popleft())
        if has_count:
            self.write(array(*(bulk(i) for i in items)))
        elif items:
            self.write(bulk(items[0]))
        else:
            self.write(b"$-1\r\n")

    def subscribed_command(self, args: list[str]) -> None:
        if not args:
            self.error("ERR empty command")
            return
        cmd = args[0].strip().upper()
        if cmd == "PING":
            payload = args[1].encode() if len(args) > 1 else b""
            self.write(array(bulk(b"pong"), bulk(payload) if len(args) > 1 else b"$-1\r\n"))
        elif cmd == "UNSUBSCRIBE":
            self.write(array(bulk(b"unsubscribe"), bulk(self.channel_name.encode()), b":0\r\n"))
            self.close()
        elif cmd == "QUIT":
            self.write(b"+OK\r\n")
            self.close()
        else:
            self.error(f"ERR unknown command '{cmd.lower()}'")
