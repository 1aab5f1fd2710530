"""A CPA behind TLS: HTTP with a private CA, and RESP inside TLS without ALPN (protocol_multiplexer.go)."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from reauthd.cpa import CPAClient, ErrorStream, ManagementKeyRejected, TransientCPAError
from tests.cpa.conftest import FAST_RETRY, OddCPA
from tests.support.servers import free_socket

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
KEY = "tls-key-0123"


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    crt, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(crt),
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return crt, key


async def test_http_and_resp_over_tls(cert: tuple[Path, Path]) -> None:
    crt, key = cert

    async def handler(request: Request) -> Response:
        return JSONResponse({"files": []}, headers={"X-CPA-VERSION": "v7"})

    sock = free_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        OddCPA(handler), log_level="warning", lifespan="off", ssl_certfile=str(crt), ssl_keyfile=str(key)
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    alpn_seen: list[str | None] = []
    auth_lines: list[bytes] = []

    async def resp_peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        alpn_seen.append(writer.get_extra_info("ssl_object").selected_alpn_protocol())
        auth_lines.append(await reader.readuntil(b"\r\n"))
        writer.write(b"-ERR invalid management key\r\n")
        await writer.drain()
        writer.close()

    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(str(crt), str(key))
    server_ctx.set_alpn_protocols(["h2", "http/1.1"])  # as CPA's TLS config offers
    resp_server = await asyncio.start_server(resp_peer, "127.0.0.1", 0, ssl=server_ctx)
    resp_port = resp_server.sockets[0].getsockname()[1]
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.01)
        url = f"https://127.0.0.1:{port}"
        async with CPAClient("tls", url, KEY, retry=FAST_RETRY, tls_verify=str(crt)) as cpa:
            assert await cpa.list_auth_files() == []  # httpcore has now added ALPN to the HTTP context
        async with CPAClient("tls", f"https://127.0.0.1:{resp_port}", KEY, tls_verify=str(crt)) as cpa:
            with pytest.raises(ManagementKeyRejected):
                async for _ in ErrorStream(cpa).events():
                    pass
        assert alpn_seen == [None]  # CPA would have handed an ALPN connection to HTTP
        assert auth_lines == [b"*2\r\n"]
        async with CPAClient("tls", url, KEY, retry=FAST_RETRY) as untrusted:
            with pytest.raises(TransientCPAError, match="TLS certificate is not trusted"):
                await untrusted.list_auth_files()
    finally:
        resp_server.close()
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()
