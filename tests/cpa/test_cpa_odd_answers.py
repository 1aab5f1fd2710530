"""The client against small loopback servers that answer what the simulator cannot: proxies, garbage, hangs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from reauthd.cpa import (
    AuthManagerUnavailable,
    CPAClient,
    CPARequestError,
    FeatureMissing,
    HealthState,
    MalformedResponse,
    ManagementKeyNotSet,
    ManagementNotEnabled,
    ResponseTooLarge,
    TransientCPAError,
    UpstreamRequestFailed,
)
from tests.cpa.conftest import FAST_RETRY, OddCPA, serve
from tests.support.servers import free_port

CPA_HEADERS = {"X-CPA-VERSION": "v7.2.140", "X-CPA-COMMIT": "a7e3596", "X-CPA-BUILD-DATE": "2026-08-22"}
ENTRY = {
    "id": "a.json",
    "auth_index": "0123456789abcdef",
    "name": "a.json",
    "type": "codex",
    "provider": "codex",
    "status": "active",
    "disabled": False,
}


def cpa_json(body: object, status: int = 200) -> Response:
    return JSONResponse(body, status, headers=CPA_HEADERS)


def client(base_url: str, **kw: object) -> CPAClient:
    return CPAClient("odd", base_url, "k", retry=FAST_RETRY, **kw)  # type: ignore[arg-type]


async def test_proxy_5xx_is_retried_then_transient() -> None:
    async def handler(request: Request) -> Response:
        return Response("<html>502 Bad Gateway</html>", 502, media_type="text/html")

    app = OddCPA(handler)
    async with serve(app) as url, client(url) as cpa:
        with pytest.raises(TransientCPAError, match="after 3 attempts") as info:
            await cpa.list_auth_files()
        assert cpa.health.state is HealthState.UNREACHABLE
    assert app.hits["/v0/management/auth-files"] == 3
    assert info.value.attempts == 3


async def test_proxy_5xx_then_success() -> None:
    calls = 0

    async def handler(request: Request) -> Response:
        nonlocal calls
        calls += 1
        if calls < 3:
            return Response("upstream connect error", 503)
        return cpa_json({"files": [ENTRY]})

    async with serve(OddCPA(handler)) as url, client(url) as cpa:
        files = await cpa.list_auth_files()
        assert [f.name for f in files] == ["a.json"]
        assert (
            cpa.version is not None and cpa.version.version == "v7.2.140" and cpa.version.commit == "a7e3596"
        )
        assert cpa.health.state is HealthState.OK


async def test_non_idempotent_call_is_not_retried_on_proxy_5xx() -> None:
    async def handler(request: Request) -> Response:
        return Response("bad gateway", 504)

    app = OddCPA(handler)
    async with serve(app) as url, client(url) as cpa:
        with pytest.raises(TransientCPAError):
            await cpa.api_call("0123456789abcdef", "GET", "https://example.com/", {})
    assert app.hits["/v0/management/api-call"] == 1


async def test_api_call_502_is_upstream_failure_not_retried() -> None:
    async def handler(request: Request) -> Response:
        return cpa_json({"error": "request failed"}, 502)

    app = OddCPA(handler)
    async with serve(app) as url, client(url) as cpa:
        with pytest.raises(UpstreamRequestFailed, match="request failed") as info:
            await cpa.api_call(
                "0123456789abcdef", "GET", "https://example.com/", {"Authorization": "Bearer $TOKEN$"}
            )
        assert isinstance(info.value, TransientCPAError)
    assert app.hits["/v0/management/api-call"] == 1


async def test_semantic_503_is_auth_manager_unavailable_not_retried() -> None:
    async def handler(request: Request) -> Response:
        return cpa_json({"error": "core auth manager unavailable"}, 503)

    app = OddCPA(handler)
    async with serve(app) as url, client(url) as cpa:
        with pytest.raises(AuthManagerUnavailable):
            await cpa.list_auth_files()
    assert app.hits["/v0/management/auth-files"] == 1


async def test_cpa_500_with_error_body_is_a_request_error() -> None:
    async def handler(request: Request) -> Response:
        return cpa_json({"error": "failed to read file: permission denied"}, 500)

    app = OddCPA(handler)
    async with serve(app) as url, client(url) as cpa:
        with pytest.raises(CPARequestError) as info:
            await cpa.download_auth_file("a.json")
    assert (info.value.status, info.value.error_text) == (500, "failed to read file: permission denied")
    assert app.hits["/v0/management/auth-files/download"] == 1


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v0/management/auth-files", b"<html>not json</html>"),
        ("/v0/management/auth-files", b'{"files": "nope"}'),
        ("/v0/management/get-auth-status", b'{"status":"ready"}'),
        ("/v0/management/get-auth-status", b"\x00\x01garbage"),
    ],
)
async def test_malformed_answers_name_the_endpoint(path: str, body: bytes) -> None:
    async def handler(request: Request) -> Response:
        return Response(body, 200, headers=CPA_HEADERS, media_type="application/json")

    async with serve(OddCPA(handler)) as url, client(url) as cpa:
        if path.endswith("auth-files"):
            call: Awaitable[object] = cpa.list_auth_files()
        else:
            call = cpa.get_auth_status("0123456789abcdef0123456789abcdef")
        with pytest.raises(MalformedResponse) as info:
            await call
    assert info.value.endpoint == path
    assert path in str(info.value)


async def test_huge_body_on_a_small_endpoint_is_cut_at_the_cap() -> None:
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        chunk = b"x" * 65536
        for _ in range(800):  # 50 MiB if nobody stops reading
            sent += len(chunk)
            yield chunk
            await asyncio.sleep(0)

    async def handler(request: Request) -> Response:
        return StreamingResponse(endless(), 200, headers=CPA_HEADERS, media_type="application/json")

    async with serve(OddCPA(handler)) as url, client(url) as cpa:
        with pytest.raises(ResponseTooLarge):
            await cpa.get_auth_status("0123456789abcdef0123456789abcdef")
    assert sent < 8 * 1024 * 1024  # we hung up long before 50 MiB


async def test_declared_oversize_is_refused_before_reading() -> None:
    async def handler(request: Request) -> Response:
        return Response(b"{" + b" " * (3 * 1024 * 1024) + b"}", 200, headers=CPA_HEADERS)

    async with serve(OddCPA(handler)) as url, client(url, listing_max_bytes=1024 * 1024) as cpa:
        with pytest.raises(ResponseTooLarge, match="1,048,576-byte"):
            await cpa.list_auth_files()


@pytest.mark.parametrize(("probe_status", "error"), [(200, FeatureMissing), (404, ManagementNotEnabled)])
async def test_headerless_empty_404_is_resolved_by_a_probe(probe_status: int, error: type[Exception]) -> None:
    async def handler(request: Request) -> Response:
        if request.url.path == "/v0/management/get-auth-status":
            if probe_status == 200:
                return Response(b'{"status":"ok"}', 200, media_type="application/json")
            return Response(b"", 404)
        return Response(b"", 404)

    app = OddCPA(handler)
    async with serve(app) as url, client(url) as cpa:
        with pytest.raises(error):
            await cpa.auth_url("iflow")
    assert app.hits["/v0/management/get-auth-status"] == 1


async def test_empty_404_with_cpa_headers_is_feature_missing_without_probe() -> None:
    async def handler(request: Request) -> Response:
        return Response(b"", 404, headers=CPA_HEADERS)

    app = OddCPA(handler)
    async with serve(app) as url, client(url) as cpa:
        with pytest.raises(FeatureMissing, match="too old or too new for iflow login") as info:
            await cpa.auth_url("iflow")
    assert info.value.version == "v7.2.140"
    assert "/v0/management/get-auth-status" not in app.hits


async def test_connection_refused_is_transient_after_retries() -> None:
    async with client(f"http://127.0.0.1:{free_port()}") as cpa:
        with pytest.raises(TransientCPAError, match="connection failed"):
            await cpa.list_auth_files()
        assert cpa.health.state is HealthState.UNREACHABLE


async def test_read_timeout_is_retried_for_reads() -> None:
    async def handler(request: Request) -> Response:
        await asyncio.sleep(2)
        return cpa_json({"files": []})

    app = OddCPA(handler)
    async with serve(app) as url, client(url, timeout=0.2) as cpa:
        with pytest.raises(TransientCPAError, match="read timed out"):
            await cpa.list_auth_files()
    assert app.hits["/v0/management/auth-files"] == 3


async def test_delete_whose_first_answer_was_lost_counts_as_done() -> None:
    deleted = False

    async def handler(request: Request) -> Response:
        nonlocal deleted
        if not deleted:
            deleted = True
            await asyncio.sleep(2)  # CPA deleted the file, but the answer never arrives in time
            return cpa_json({"status": "ok"})
        return cpa_json({"error": "auth file not found"}, 404)

    app = OddCPA(handler)
    async with serve(app) as url, client(url, timeout=0.3) as cpa:
        await cpa.delete_auth_file("a.json")
    assert app.hits["/v0/management/auth-files"] in (2, 3)  # 3 only if a loaded machine is slow


async def test_delete_of_a_missing_file_still_fails() -> None:
    async def handler(request: Request) -> Response:
        return cpa_json({"error": "auth file not found"}, 404)

    async with serve(OddCPA(handler)) as url, client(url) as cpa:
        with pytest.raises(CPARequestError, match="auth file not found"):
            await cpa.delete_auth_file("a.json")


async def test_listing_of_10k_entries_parses(tmp_path: object) -> None:
    recent = [{"time": "10:00-10:10", "success": 1, "failed": 0}] * 20
    files = [
        dict(ENTRY, id=f"codex-{i:05d}.json", name=f"codex-{i:05d}.json", auth_index=f"{i:016x}",
             recent_requests=recent, status_message="", label=f"u{i}@x.com", email=f"u{i}@x.com",
             modtime="2026-08-22T23:09:03.123456789+08:00", path=f"/auth/codex-{i:05d}.json")
        for i in range(10_000)
    ]  # fmt: skip
    body = json.dumps({"files": files}).encode()

    async def handler(request: Request) -> Response:
        return Response(body, 200, headers=CPA_HEADERS, media_type="application/json")

    async with serve(OddCPA(handler)) as url, client(url) as cpa:
        listed = await cpa.list_auth_files()
    assert len(listed) == 10_000 and listed[9_999].auth_index == f"{9_999:016x}"


async def test_key_not_set_is_reported_and_does_not_pause() -> None:
    async def handler(request: Request) -> Response:
        return cpa_json({"error": "remote management key not set"}, 403)

    app = OddCPA(handler)
    async with serve(app) as url, client(url) as cpa:
        for _ in range(2):
            with pytest.raises(ManagementKeyNotSet, match="no remote-management secret key"):
                await cpa.list_auth_files()
    assert app.hits["/v0/management/auth-files"] == 2
    assert app.auth_headers == ["Bearer k", "Bearer k"]


async def test_other_403_is_a_request_error() -> None:
    async def handler(request: Request) -> Response:
        return cpa_json({"error": "forbidden by policy"}, 403)

    async with serve(OddCPA(handler)) as url, client(url) as cpa:
        with pytest.raises(CPARequestError) as info:
            await cpa.list_auth_files()
    assert (info.value.status, info.value.error_text) == (403, "forbidden by policy")


async def test_undecodable_body_is_malformed() -> None:
    async def handler(request: Request) -> Response:
        return Response(b"not gzip at all", 200, headers={**CPA_HEADERS, "Content-Encoding": "gzip"})

    async with serve(OddCPA(handler)) as url, client(url) as cpa:
        with pytest.raises(MalformedResponse, match="could not be decoded"):
            await cpa.list_auth_files()
