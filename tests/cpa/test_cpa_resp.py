"""The RESP reader on tables of raw bytes: valid values, garbage and announced sizes beyond the limits."""

from __future__ import annotations

import asyncio

import pytest

from reauthd.cpa.resp import RESPError, RESPProtocolError, RESPReader, RESPValue, encode_command


def reader_for(data: bytes, **limits: int) -> RESPReader:
    stream = asyncio.StreamReader(limit=1024)
    stream.feed_data(data)
    stream.feed_eof()
    return RESPReader(stream, **limits)


def test_encode_command_is_array_of_bulk_strings() -> None:
    assert encode_command("AUTH", "k3y") == b"*2\r\n$4\r\nAUTH\r\n$3\r\nk3y\r\n"
    assert encode_command("SUBSCRIBE", "errors") == b"*2\r\n$9\r\nSUBSCRIBE\r\n$6\r\nerrors\r\n"


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b"+OK\r\n", "OK"),
        (b"-ERR invalid management key\r\n", RESPError("ERR invalid management key")),
        (b":1\r\n", 1),
        (b"$5\r\nhello\r\n", b"hello"),
        (b"$0\r\n\r\n", b""),
        (b"$-1\r\n", None),
        (b"*3\r\n$9\r\nsubscribe\r\n$6\r\nerrors\r\n:1\r\n", [b"subscribe", b"errors", 1]),
        (b"*3\r\n$7\r\nmessage\r\n$6\r\nerrors\r\n$2\r\n{}\r\n", [b"message", b"errors", b"{}"]),
        (b"*2\r\n$4\r\npong\r\n$-1\r\n", [b"pong", None]),
    ],
)
async def test_values(raw: bytes, value: RESPValue) -> None:
    assert await reader_for(raw).read_value() == value


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 400 Bad Request\r\n",  # an HTTP answer where RESP was expected
        b"\r\n",
        b"$abc\r\n",
        b"$3\r\nabcXY",  # bulk not followed by CRLF
        b"$99999999\r\n",  # announced bulk beyond the limit: refused before reading
        b"*1000\r\n",  # announced array beyond the limit
        b"*1\r\n*1\r\n*1\r\n+x\r\n",  # nested deeper than CPA ever sends
        b":12345678901234567890123\r\n",
        b"+" + b"x" * 5000 + b"\r\n",  # a line beyond the reader's limit
    ],
)
async def test_garbage_is_a_protocol_error(raw: bytes) -> None:
    with pytest.raises(RESPProtocolError):
        await reader_for(raw, max_line_bytes=1024, max_bulk_bytes=4096).read_value()


async def test_eof_mid_value_is_incomplete_read() -> None:
    with pytest.raises(asyncio.IncompleteReadError):
        await reader_for(b"$10\r\nabc").read_value()
