"""Streaming a 2xx body into a reader (`ManagementWire.call(reader=...)`, `CPAClient.stream_auth_files`):
bytes counted against the cap as they arrive, a fresh reader per retry, a rejected body is MalformedResponse."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import ClassVar

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from reauthd.cpa import (
    CPAClient,
    HealthState,
    MalformedResponse,
    ManagementKeyRejected,
    ResponseTooLarge,
    TransientCPAError,
)
from reauthd.cpa.wire import BodyRejected
from tests.cpa.conftest import FAST_RETRY, OddCPA, serve

CPA_HEADERS = {"X-CPA-VERSION": "v7.2.140"}
LISTING = "/v0/management/auth-files"


class Collecting:
    """A reader that keeps what it was fed (the test's view of the stream) and rejects a marker."""

    made: ClassVar[list[Collecting]] = []

    def __init__(self, reject: bytes | None = None) -> None:
        self.chunks: list[bytes] = []
        self.closed = False
        self.reject = reject
        Collecting.made.append(self)

    def feed(self, chunk: bytes) -> None:
        if self.reject is not None and self.reject in chunk:
            raise BodyRejected("found the marker")
        self.chunks.append(chunk)

    def close(self) -> bytes:
        self.closed = True
        return b"".join(self.chunks)


@pytest.fixture(autouse=True)
def _fresh_readers() -> None:
    Collecting.made = []


def client(base_url: str, **kw: object) -> CPAClient:
    return CPAClient("odd", base_url, "k", retry=FAST_RETRY, **kw)  # type: ignore[arg-type]


def streaming(chunks: list[bytes], *, fail_after: int | None = None) -> Response:
    async def body() -> AsyncIterator[bytes]:
        for number, chunk in enumerate(chunks):
            if fail_after is not None and number == fail_after:
                raise RuntimeError("the server died mid-body")
            yield chunk
            await asyncio.sleep(0)

    return StreamingResponse(body(), 200, headers=CPA_HEADERS, media_type="application/json")


async def test_body_arrives_in_chunks_and_the_reader_result_is_returned() -> None:
    chunks = [b'{"files":[', b"1" * 100_000, b"]}"]

    async def handler(request: Request) -> Response:
        return streaming(chunks)

    async with serve(OddCPA(handler)) as url, client(url) as cpa:
        result = await cpa.stream_auth_files(Collecting)
        assert cpa.health.state is HealthState.OK
    assert result == b"".join(chunks)
    (reader,) = Collecting.made
    assert reader.closed and len(reader.chunks) >= 2  # fed while streaming, not once at the end


async def test_a_drop_mid_body_retries_with_a_fresh_reader() -> None:
    calls = 0

    async def handler(request: Request) -> Response:
        nonlocal calls
        calls += 1
        return streaming([b'{"files":[', b"1,", b"2]}"], fail_after=2 if calls == 1 else None)

    async with serve(OddCPA(handler)) as url, client(url) as cpa:
        result = await cpa.stream_auth_files(Collecting)
    assert calls == 2
    assert result == b'{"files":[1,2]}'  # nothing of the first attempt leaks into the second
    first, second = Collecting.made
    assert not first.closed and second.closed


async def test_a_rejected_body_is_malformed_naming_the_endpoint_and_not_retried() -> None:
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b"GARBAGE"
        for _ in range(800):  # 50 MiB if nobody stops reading
            sent += 65536
            yield b" " * 65536
            await asyncio.sleep(0)

    async def handler(request: Request) -> Response:
        return StreamingResponse(endless(), 200, headers=CPA_HEADERS, media_type="application/json")

    app = OddCPA(handler)
    async with serve(app) as url, client(url) as cpa:
        with pytest.raises(MalformedResponse, match=f"unusable answer on {LISTING}: found the marker"):
            await cpa.stream_auth_files(lambda: Collecting(reject=b"GARBAGE"))
        # CPA answered and accepted the key: a bad body is no transport or key problem.
        assert cpa.health.state is HealthState.OK
    assert app.hits[LISTING] == 1
    assert sent < 8 * 1024 * 1024  # we hung up instead of reading the rest


async def test_the_cap_counts_bytes_as_they_stream() -> None:
    async def handler(request: Request) -> Response:
        return streaming([b" " * 65536] * 64)  # 4 MiB, chunked: no Content-Length to refuse early

    async with serve(OddCPA(handler)) as url, client(url, listing_max_bytes=1024 * 1024) as cpa:
        with pytest.raises(ResponseTooLarge, match="1,048,576-byte"):
            await cpa.stream_auth_files(Collecting)
    (reader,) = Collecting.made
    assert sum(map(len, reader.chunks)) <= 1024 * 1024 and not reader.closed


async def test_error_answers_are_mapped_as_before_and_never_reach_the_reader() -> None:
    async def handler(request: Request) -> Response:
        return JSONResponse({"error": "invalid management key"}, 401, headers=CPA_HEADERS)

    async with serve(OddCPA(handler)) as url, client(url) as cpa:
        with pytest.raises(ManagementKeyRejected):
            await cpa.stream_auth_files(Collecting)
    assert Collecting.made == []


async def test_a_drop_on_every_attempt_is_transient() -> None:
    async def handler(request: Request) -> Response:
        return streaming([b'{"files":[', b"1"], fail_after=1)

    app = OddCPA(handler)
    async with serve(app) as url, client(url) as cpa:
        with pytest.raises(TransientCPAError):
            await cpa.stream_auth_files(Collecting)
    assert app.hits[LISTING] == 3 and len(Collecting.made) == 3
