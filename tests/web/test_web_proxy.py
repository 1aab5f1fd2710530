"""Behind a reverse proxy: whose rate-limit bucket a request counts in (`web.trusted_proxies`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from reauthd.config import ConfigError, load_config
from reauthd.daemon import Daemon
from reauthd.login.flow import LoginFlow
from reauthd.sim import SimServer
from reauthd.store import Store
from reauthd.web.app import create_app
from reauthd.web.sandbox import SIM_KEY
from reauthd.web.security import forwarded_client, parse_trusted_proxies
from tests.support.servers import free_port

PROXY = "10.0.0.2"
TRUSTED = parse_trusted_proxies(["10.0.0.0/8", "fd00::/8"])


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client"),
    [
        # An untrusted peer: its header is ignored, whatever it says.
        ("192.0.2.50", ["198.51.100.7"], "192.0.2.50"),
        ("192.0.2.50", [], "192.0.2.50"),
        # A trusted proxy: the rightmost hop that is not a trusted proxy.
        (PROXY, ["198.51.100.7"], "198.51.100.7"),
        (PROXY, ["198.51.100.7, 10.9.9.9"], "198.51.100.7"),  # two proxies in a row
        (PROXY, ["203.0.113.1, 198.51.100.7"], "198.51.100.7"),  # a client-written hop on the left
        (PROXY, ["203.0.113.1", "198.51.100.7"], "198.51.100.7"),  # the header twice
        (PROXY, ["198.51.100.7:5678"], "198.51.100.7"),  # proxies that add the port
        (PROXY, ["[2001:db8::1]:443"], "2001:db8::1"),
        (PROXY, ["2001:db8::1"], "2001:db8::1"),
        (PROXY, [], PROXY),  # no header: the proxy itself
        (PROXY, [" , "], PROXY),
        (PROXY, ["garbage"], PROXY),  # not an address: one shared bucket, never one the client picks
        (PROXY, ["198.51.100.7, garbage"], PROXY),
        # Every hop trusted: the hop the peer wrote, never the leftmost one the client may have written
        # (issue 11: a client inside the trusted network picking its own bucket).
        (PROXY, ["10.1.1.1, 10.2.2.2"], "10.2.2.2"),
        (PROXY, ["10.66.0.1", "10.2.2.2"], "10.2.2.2"),
        ("::ffff:10.0.0.2", ["198.51.100.7"], "198.51.100.7"),  # an IPv4 peer on a dual-stack socket
        ("fd00::5", ["198.51.100.7"], "198.51.100.7"),
        (None, ["198.51.100.7"], None),
    ],
)
def test_forwarded_client(peer: str | None, forwarded_for: list[str], client: str | None) -> None:
    assert forwarded_client(peer, forwarded_for, TRUSTED) == client


def test_no_trusted_proxies_trusts_no_header() -> None:
    assert forwarded_client(PROXY, ["198.51.100.7"], ()) == PROXY


@pytest.mark.parametrize("entry", ["proxy.example.org", "10.0.0.0/33", "", "10.0.0.1/8/8"])
def test_bad_trusted_proxy_entries_are_refused_without_echo(entry: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="IP address or a network") as raised:
        parse_trusted_proxies([entry])
    config = tmp_path / "config.toml"
    config.write_text(
        '[[cpa]]\nname = "main"\nbase_url = "http://127.0.0.1:8317"\nmanagement_key = "k"\n'
        f"[web]\ntrusted_proxies = [{json.dumps(entry)}]\n"
    )
    with pytest.raises(ConfigError) as refused:
        load_config(config, environ={})
    assert "[web] trusted_proxies" in str(refused.value)
    for message in (str(raised.value), str(refused.value)):
        assert not entry or entry not in message


def test_trusted_proxies_config_is_normalised(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[[cpa]]\nname = "main"\nbase_url = "http://127.0.0.1:8317"\nmanagement_key = "k"\n'
        '[web]\ntrusted_proxies = ["10.0.0.2", "172.16.5.0/12"]\n'
    )
    assert load_config(config, environ={}).web.trusted_proxies == ["10.0.0.2/32", "172.16.0.0/12"]
    plain = tmp_path / "plain.toml"
    plain.write_text('[[cpa]]\nname = "main"\nbase_url = "http://127.0.0.1:8317"\nmanagement_key = "k"\n')
    assert load_config(plain, environ={}).web.trusted_proxies == []


# ------------------------------------------------------------------------------ through the app


@dataclass
class Site:
    store: Store
    flow: LoginFlow
    link: str

    def client(self, peer: str, trusted: Sequence[str]) -> httpx.AsyncClient:
        app = create_app(
            store=self.store,
            login=self.flow,
            public_url="https://reauth.example.org",
            trusted_proxies=trusted,
        )
        transport = httpx.ASGITransport(app=app, client=(peer, 40000))
        return httpx.AsyncClient(transport=transport, base_url="https://reauth.example.org")


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    with Store.open(tmp_path / "state.db") as store:
        now = datetime.now(UTC)
        task = store.create_task(
            cpa="main", auth_name="codex-a.json", auth_index="0" * 16, provider="codex",
            account_masked="a***@example.com", reason="revoked", now=now, deadline=now + timedelta(days=1),
        )  # fmt: skip
        token = store.issue_link_token(task.id, now + timedelta(days=1), now)
        flow = LoginFlow(store, {}, clock=lambda: datetime.now(UTC))
        try:
            yield Site(store, flow, f"/r/{token}")
        finally:
            await flow.aclose()


def via(client: str) -> dict[str, str]:
    return {"x-forwarded-for": client}


async def test_behind_a_trusted_proxy_each_client_has_its_own_bucket(site: Site) -> None:
    async with site.client(PROXY, ["10.0.0.0/8"]) as http:
        guesses = [
            (await http.get(f"/r/guess{i}", headers=via("198.51.100.7"))).status_code for i in range(10)
        ]
        assert guesses == [404] * 10
        # The guesser's next guesses are refused, even with a hop of its own choosing on the left ...
        assert (await http.get("/r/guess-more", headers=via("198.51.100.7"))).status_code == 429
        assert (await http.get("/r/guess-more", headers=via("203.0.113.99, 198.51.100.7"))).status_code == 429
        # ... while another person behind the same proxy still opens their link, and so does a valid link
        # from the guesser's own address (issue 11: a shared NAT must not lock everyone out).
        assert (await http.get(site.link, headers=via("203.0.113.9"))).status_code == 200
        assert (await http.get(site.link, headers=via("198.51.100.7"))).status_code == 200


async def test_an_untrusted_peer_cannot_escape_the_limit_with_the_header(site: Site) -> None:
    async with site.client("192.0.2.50", ["10.0.0.0/8"]) as http:
        guesses = [
            (await http.get(f"/r/guess{i}", headers=via(f"198.51.100.{i}"))).status_code for i in range(10)
        ]
        assert guesses == [404] * 10
        assert (await http.get("/r/guess-more", headers=via("203.0.113.9"))).status_code == 429


async def test_without_trusted_proxies_the_header_is_ignored(site: Site) -> None:
    async with site.client(PROXY, []) as http:
        for i in range(10):
            await http.get(f"/r/guess{i}", headers=via(f"198.51.100.{i}"))
        assert (await http.get("/r/guess-more", headers=via("203.0.113.9"))).status_code == 429


async def test_the_daemon_applies_web_trusted_proxies(tmp_path: Path) -> None:
    """The configured key reaches the page the daemon serves (reauthd.daemon passes it to create_app)."""
    async with SimServer(SIM_KEY) as sim:
        config = tmp_path / "config.toml"
        config.write_text(
            f'[state]\npath = "{tmp_path / "state.db"}"\n'
            f'[[cpa]]\nname = "main"\nbase_url = "{sim.base_url}"\nmanagement_key = "{SIM_KEY}"\n'
            f'[web]\nlisten = "127.0.0.1:{free_port()}"\ntrusted_proxies = ["127.0.0.1"]\n'
        )
        daemon = Daemon(load_config(config, environ={}))
        running = asyncio.create_task(daemon.run())
        try:
            for _ in range(400):
                if (daemon.web_url is not None and daemon.store is not None) or running.done():
                    break
                await asyncio.sleep(0.025)
            assert daemon.web_url is not None and daemon.store is not None, "the daemon did not start"
            now = datetime.now(UTC)
            task = daemon.store.create_task(
                cpa="main", auth_name="codex-a.json", auth_index="0" * 16, provider="codex",
                account_masked="a***@example.com", reason="revoked", now=now, deadline=now + timedelta(days=1),
            )  # fmt: skip
            link = f"/r/{daemon.store.issue_link_token(task.id, now + timedelta(days=1), now)}"
            async with httpx.AsyncClient(base_url=daemon.web_url, timeout=10) as http:
                for i in range(10):
                    await http.get(f"/r/guess{i}", headers=via("198.51.100.7"))
                assert (await http.get("/r/guess-more", headers=via("198.51.100.7"))).status_code == 429
                assert (await http.get(link, headers=via("203.0.113.9"))).status_code == 200
        finally:
            daemon.request_stop()
            await asyncio.wait_for(running, 20)
