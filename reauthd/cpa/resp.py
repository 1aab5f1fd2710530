"""A minimal, size-bounded RESP2 reader and command encoder for CPA's RESP port (redis_queue_protocol.go).

Why not redis-py (checked in redis/connection.py `on_connect_check_health`): with `protocol=3` it opens
with `HELLO 3 AUTH default <key>`, and without a password it opens with `CLIENT SETINFO LIB-NAME`; CPA
checks every command sent before `AUTH` with an empty key, which **counts as a failed key attempt**
toward the 5-strike IP ban (contract §1). Even its RESP2 path follows AUTH with `CLIENT SETINFO` and
maybe `SELECT`, which CPA answers with `ERR unknown command`. CPA speaks five commands; a small reader
keeps the exact bytes on the wire under our control and bounds every length a broken peer announces.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TypeAlias


@dataclass(frozen=True, slots=True)
class RESPError:
    """A `-ERR ...` reply. `message` is the text after the dash."""

    message: str


RESPValue: TypeAlias = "str | int | bytes | list[RESPValue] | RESPError | None"


class RESPProtocolError(Exception):
    """The peer sent something that is not RESP, or announced a size beyond our limits. Never holds payload."""


def encode_command(*args: str | bytes) -> bytes:
    """`*<n>\\r\\n$<len>\\r\\n<arg>\\r\\n...`: the array-of-bulk-strings form CPA's readRESPArray expects."""
    out = bytearray(b"*%d\r\n" % len(args))
    for arg in args:
        raw = arg.encode() if isinstance(arg, str) else arg
        out += b"$%d\r\n" % len(raw)
        out += raw
        out += b"\r\n"
    return bytes(out)


class RESPReader:
    """Reads one RESP2 value at a time from a StreamReader, with hard caps on every announced size."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        *,
        max_line_bytes: int = 64 * 1024,
        max_bulk_bytes: int = 1024 * 1024,
        max_array_items: int = 16,
        max_depth: int = 2,
    ) -> None:
        self._reader = reader
        self.max_line_bytes = max_line_bytes
        self.max_bulk_bytes = max_bulk_bytes
        self.max_array_items = max_array_items
        self.max_depth = max_depth

    async def read_value(self) -> RESPValue:
        """The next value. Raises RESPProtocolError on garbage, asyncio.IncompleteReadError on EOF."""
        return await self._value(0)

    async def _line(self) -> bytes:
        try:
            line = await self._reader.readuntil(b"\r\n")
        except asyncio.LimitOverrunError:
            raise RESPProtocolError("a line longer than the reader's limit") from None
        if len(line) > self.max_line_bytes + 2:
            raise RESPProtocolError(f"a line longer than {self.max_line_bytes} bytes")
        return line[:-2]

    async def _value(self, depth: int) -> RESPValue:
        line = await self._line()
        if not line:
            raise RESPProtocolError("an empty line where a RESP value was expected")
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode("utf-8", "replace")
        if kind == b"-":
            return RESPError(rest.decode("utf-8", "replace"))
        if kind == b":":
            return _int(rest)
        if kind == b"$":
            length = _int(rest)
            if length < 0:
                return None
            if length > self.max_bulk_bytes:
                raise RESPProtocolError(f"a bulk string of {length} bytes (limit {self.max_bulk_bytes})")
            data = await self._reader.readexactly(length + 2)
            if data[-2:] != b"\r\n":
                raise RESPProtocolError("a bulk string not followed by CRLF")
            return data[:-2]
        if kind == b"*":
            count = _int(rest)
            if count < 0:
                return None
            if count > self.max_array_items:
                raise RESPProtocolError(f"an array of {count} items (limit {self.max_array_items})")
            if depth >= self.max_depth:
                raise RESPProtocolError("arrays nested deeper than expected")
            return [await self._value(depth + 1) for _ in range(count)]
        raise RESPProtocolError(f"an unknown RESP type byte 0x{line[0]:02x}")


def _int(raw: bytes) -> int:
    if not raw or len(raw) > 19 or not raw.lstrip(b"-").isdigit():
        raise RESPProtocolError("a malformed integer")
    return int(raw)
