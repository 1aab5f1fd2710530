"""A revocation that expires the access token keeps the file's `expired` in step (contract §5, §8)."""

from __future__ import annotations

from datetime import datetime

import httpx
import pytest

from reauthd.sim import SimServer


def _when(value: object) -> datetime:
    assert isinstance(value, str)
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.mark.parametrize(
    ("provider", "kind"),
    [
        ("codex", "refresh_token_reused"),
        ("claude", "unauthorized"),
        ("kimi", "invalid_grant"),
        ("xai", "unauthorized"),
    ],
)
async def test_expired_upstream_means_expired_in_memory_and_on_disk(
    sim: SimServer, client: httpx.AsyncClient, provider: str, kind: str
) -> None:
    auth = sim.state.add_credential(provider, expires_in=3600)
    disk_before = sim.state.disk[auth.name]
    modtime_before = (await client.get("/auth-files", params={"name": auth.name})).json()["files"][0][
        "modtime"
    ]
    now = sim.state.now()

    sim.state.revoke(auth.name, kind)

    assert _when(auth.metadata["expired"]) < now
    r = await client.get("/auth-files/download", params={"name": auth.name})
    assert r.status_code == 200 and _when(r.json()["expired"]) < now
    # Time passed, nobody wrote the file: same mtime, no watcher reload (which would reset the auth).
    assert sim.state.disk[auth.name].mtime == disk_before.mtime
    assert auth.name not in sim.state.pending_reloads
    entry = (await client.get("/auth-files", params={"name": auth.name})).json()["files"][0]
    assert entry["modtime"] == modtime_before


async def test_a_dead_access_token_keeps_its_expiry(sim: SimServer, client: httpx.AsyncClient) -> None:
    """token_invalidated kills the access token itself: `expired` stays where the provider put it."""
    auth = sim.state.add_credential("codex", expires_in=3600)
    before = auth.metadata["expired"]
    sim.state.revoke(auth.name, "token_invalidated")
    assert auth.metadata["expired"] == before
    r = await client.get("/auth-files/download", params={"name": auth.name})
    assert r.json()["expired"] == before
