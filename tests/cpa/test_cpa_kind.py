"""What answers at base_url: plain CPA, CLIProxyAPIHome, or a CPA cluster node (issue 15 point 1,
shared/home-contract.md §8). Detection reads the headers of ordinary keyed answers and never sends a wrong key;
the one RESP probe goes only where an empty 404 without `X-CPA-*` headers came back."""

from __future__ import annotations

import asyncio
import json

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from reauthd.cpa import (
    ClientPaused,
    CPAClient,
    FeatureMissing,
    GateState,
    HealthState,
    ManagementKeyRejected,
    ManagementNotEnabled,
)
from reauthd.cpa.errorstream import ErrorStream, ReconnectPolicy
from reauthd.cpa.kind import (
    NODE_RESP_ANSWER,
    NODE_SENTENCE,
    RESP_PING,
    ClusterNodeRefused,
    FoundKind,
    HomeNotSupported,
    KindMismatch,
)
from reauthd.cpa.wire import BodyRejected
from reauthd.sim.server import SimServer
from tests.cpa.conftest import FAST_RETRY, OddCPA, serve

KEY = "sim-key"
CPA_HEADERS = {"X-CPA-VERSION": "v7.2.140", "X-CPA-COMMIT": "a7e3596"}
# Home sets its own headers first, and the embedded CPA library's (home-contract §2.5).
HOME_HEADERS = {
    "X-CPA-HOME-VERSION": "v1.0.67",
    "X-CPA-HOME-COMMIT": "44034f3",
    "X-CPA-HOME-BUILD-DATE": "2026-08-05",
    "X-CPA-VERSION": "dev",
    "X-CPA-COMMIT": "none",
}
HOME_LISTING = {
    "in_flight_observed_at": None,
    "files": [
        {
            "id": "3f0c8a52-1b7e-4f0a-9a51-2f4b1c9d7e10",
            "auth_index": "3f0c8a52-1b7e-4f0a-9a51-2f4b1c9d7e10",
            "name": "codex-u@x.com.json",
            "file_name": "codex-u@x.com.json",
            "type": "codex",
            "provider": "codex",
            "status": "disabled",
            "status_message": "unauthorized",
            "disabled": True,
            "source": "db",
        }
    ],
}


async def test_plain_cpa_is_recognised_from_its_first_answer() -> None:
    async with SimServer() as sim, CPAClient("main", sim.base_url, KEY) as cpa:
        assert cpa.kind is FoundKind.UNKNOWN
        await cpa.list_auth_files()
        assert cpa.kind is FoundKind.CPA
        assert cpa.kind_text.startswith("plain CPA ")
        assert cpa.health.kind is FoundKind.CPA


async def test_kind_home_pointed_at_a_plain_cpa_is_refused_with_one_sentence() -> None:
    async with SimServer() as sim, CPAClient("main", sim.base_url, KEY, kind="home") as cpa:
        with pytest.raises(KindMismatch) as info:
            await cpa.list_auth_files()
    assert str(info.value).startswith(
        "CPA 'main' is configured with kind = 'home' but answers as a plain CPA"
    )
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kind", ["auto", "cpa", "home"])
async def test_home_is_recognised_and_refused_without_reading_its_listing(kind: str) -> None:
    async def handler(request: Request) -> Response:
        return JSONResponse(HOME_LISTING, headers=HOME_HEADERS)

    app = OddCPA(handler)
    fed: list[bytes] = []

    class Reader:
        def feed(self, chunk: bytes) -> None:
            fed.append(chunk)

        def close(self) -> None:
            raise BodyRejected("unused")

    async with serve(app) as url, CPAClient("home", url, KEY, retry=FAST_RETRY, kind=kind) as cpa:  # type: ignore[arg-type]
        with pytest.raises(HomeNotSupported) as info:
            await cpa.list_auth_files()
        with pytest.raises(HomeNotSupported):
            await cpa.stream_auth_files(Reader)
        assert cpa.kind is FoundKind.HOME
        assert cpa.home_version is not None and cpa.home_version.version == "v1.0.67"
        assert cpa.kind_text == "CLIProxyAPIHome v1.0.67"
        assert cpa.gate.state is GateState.OK  # Home accepted the key: nothing to pause
        health = cpa.health
    assert fed == []  # the Home listing was never parsed as a CPA listing
    assert 'is a CLIProxyAPIHome v1.0.67: set kind = "home"' in str(info.value)
    assert app.hits == {"/v0/management/auth-files": 2}  # no retries, no extra probes
    assert health.kind is FoundKind.HOME and health.kind_text == "CLIProxyAPIHome v1.0.67"


async def test_a_wrong_key_on_home_closes_the_gate_like_on_cpa_and_still_names_home() -> None:
    async def handler(request: Request) -> Response:
        # Home's key middleware is CPA v7.2.83's; the X-CPA-HOME-* headers come first (home-contract §2).
        return JSONResponse({"error": "invalid management key"}, status_code=401, headers=HOME_HEADERS)

    app = OddCPA(handler)
    async with serve(app) as url, CPAClient("home", url, "wrong", retry=FAST_RETRY) as cpa:
        with pytest.raises(ManagementKeyRejected):
            await cpa.list_auth_files()
        with pytest.raises(ClientPaused):  # paused: not sent again
            await cpa.list_auth_files()
        assert cpa.gate.state is GateState.KEY_REJECTED
        assert cpa.kind is FoundKind.HOME
    assert app.hits == {"/v0/management/auth-files": 1}


async def raw_port(resp_reply: bytes | None) -> tuple[asyncio.Server, str, list[bytes]]:
    """One port serving both protocols like CPA's multiplexer: HTTP gets an empty 404 (no headers at all,
    as a node's or a management-off CPA's management routes), RESP gets `resp_reply` (None: closed unread)."""
    seen: list[bytes] = []

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            first = await reader.read(1)
            if first in b"*$+-:" and first:
                seen.append(first + await reader.read(64))
                if resp_reply is not None:
                    writer.write(resp_reply + b"\r\n")
            else:
                await reader.readuntil(b"\r\n\r\n")
                seen.append(b"HTTP")
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}", seen


async def test_a_cluster_node_is_refused_with_one_sentence_after_one_resp_ping() -> None:
    server, url, seen = await raw_port(NODE_RESP_ANSWER)
    async with server, CPAClient("node", url, KEY, retry=FAST_RETRY) as cpa:
        with pytest.raises(ClusterNodeRefused) as info:
            await cpa.list_auth_files()
        with pytest.raises(ClusterNodeRefused):
            await cpa.list_auth_files()
        assert cpa.kind is FoundKind.NODE
        assert cpa.kind_text == "CPA cluster node (-home-jwt)"
        assert cpa.gate.state is GateState.UNVERIFIED  # nothing about the key was learnt or spent
        health = cpa.health  # the daemon's /readyz reason: the sentence, not "key not accepted yet"
        assert health.state is HealthState.UNREACHABLE and health.last_error == f"CPA 'node': {NODE_SENTENCE}"
    assert str(info.value) == f"CPA 'node': {NODE_SENTENCE}"
    assert isinstance(info.value, ManagementNotEnabled)  # callers that handle "management off" handle this
    resp = [s for s in seen if s != b"HTTP"]
    assert resp == [RESP_PING]  # exactly one PING, no key on the RESP side, not repeated on the next call
    assert KEY.encode() not in b"".join(seen)


async def test_a_cpa_with_management_off_stays_management_off() -> None:
    server, url, seen = await raw_port(None)
    async with server, CPAClient("off", url, KEY, retry=FAST_RETRY) as cpa:
        with pytest.raises(ManagementNotEnabled) as info:
            await cpa.list_auth_files()
        assert cpa.kind is FoundKind.UNKNOWN
    assert not isinstance(info.value, ClusterNodeRefused)
    assert "management API turned off" in str(info.value)
    assert seen.count(RESP_PING) == 1


async def test_no_resp_probe_where_management_answers() -> None:
    """On a CPA with management on, a RESP command before AUTH is a failed key attempt (contract §1): the
    probe must only run behind an empty 404 without headers."""

    async def handler(request: Request) -> Response:
        if request.url.path.endswith("/get-auth-status"):
            return JSONResponse({"status": "ok"}, headers=CPA_HEADERS)
        return Response(status_code=404)  # an old CPA without the plugin NoRoute: empty 404, no headers

    probes: list[int] = []

    async def counting_probe() -> bool:
        probes.append(1)
        return True

    async with serve(OddCPA(handler)) as url, CPAClient("main", url, KEY, retry=FAST_RETRY) as cpa:
        cpa._wire._node_probe = counting_probe
        with pytest.raises(FeatureMissing):  # not a node
            await cpa.models("a.json")
        assert cpa.kind is FoundKind.CPA
    assert probes == []


async def test_the_error_stream_sends_no_key_to_home_or_a_node() -> None:
    server, url, seen = await raw_port(NODE_RESP_ANSWER)
    async with server, CPAClient("node", url, KEY, retry=FAST_RETRY) as cpa:
        with pytest.raises(ClusterNodeRefused):
            await cpa.list_auth_files()
        before = list(seen)
        with pytest.raises(ClusterNodeRefused):
            async for _ in ErrorStream(
                cpa, reconnect=ReconnectPolicy(base_delay_s=0.01, max_delay_s=0.02)
            ).run():
                pass
    assert seen == before  # not even a connection


async def test_home_resp_auth_refusal_reads_as_no_errors_channel() -> None:
    server, url, _ = await raw_port(b"-ERR RESP AUTH disabled; use mTLS")
    async with server, CPAClient("home", url, KEY, retry=FAST_RETRY) as cpa:
        with pytest.raises(FeatureMissing, match="a Home has none"):
            async for _ in ErrorStream(
                cpa, reconnect=ReconnectPolicy(base_delay_s=0.01, max_delay_s=0.02)
            ).run():
                pass


def test_listing_fixture_is_home_shaped() -> None:
    entry = HOME_LISTING["files"][0]  # type: ignore[index]
    assert entry["id"] == entry["auth_index"] and len(entry["id"]) == 36
    assert json.dumps(HOME_LISTING)


async def test_against_the_home_and_node_simulators() -> None:
    from reauthd.sim.home import HomeSimServer

    async with HomeSimServer(KEY) as home, CPAClient("home", home.base_url, KEY, retry=FAST_RETRY) as cpa:
        with pytest.raises(HomeNotSupported):
            await cpa.list_auth_files()
        assert cpa.kind_text == "CLIProxyAPIHome v1.0.67-sim"
        assert [p for _, p, _ in home.state.requests] == ["/v0/management/auth-files"]
    async with HomeSimServer(KEY, node=True) as node, CPAClient("node", node.base_url, KEY) as cpa:
        with pytest.raises(ClusterNodeRefused):
            await cpa.list_auth_files()
        assert cpa.kind is FoundKind.NODE
