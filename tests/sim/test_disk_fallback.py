"""The disk-fallback listing of a CPA without an auth manager (auth_files.go `listAuthFilesFromDisk`,
contract §2), as a simulator fault mode."""

from __future__ import annotations

import httpx

from reauthd.sim import SimServer


async def test_disk_fallback_listing_has_only_file_facts(sim: SimServer, client: httpx.AsyncClient) -> None:
    codex = sim.state.add_credential("codex", email="a@x.com")
    sim.state.add_credential("claude", email="b@x.com")
    sim.state.inject_fault("disk_fallback", path="/auth-files", method="GET", count=None)
    files = (await client.get("/auth-files")).json()["files"]
    assert [set(f) for f in files] == [{"name", "size", "modtime", "type", "email"}] * 2
    entry = next(f for f in files if f["name"] == codex.name)
    assert (entry["type"], entry["email"]) == ("codex", "a@x.com")
    assert entry["size"] == len(sim.state.disk[codex.name].raw)
    # "In disk-fallback mode (no auth manager), auth_index always returns {"files":[]}."
    r = await client.get("/auth-files", params={"auth_index": codex.auth_index})
    assert r.json() == {"files": []}
    # Downloads read the auth dir directly and still work.
    assert (await client.get("/auth-files/download", params={"name": codex.name})).status_code == 200
    sim.state.clear_faults()
    assert "auth_index" in (await client.get("/auth-files")).json()["files"][0]
