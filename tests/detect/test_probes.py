"""`probe()` through the simulator's /api-call: the provider table, and how each answer becomes evidence."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from reauthd.config import ProbeConfig
from reauthd.core.classify import PROBE_NO_TOKEN, PROBE_REFRESH_FAILED, PROBE_TRANSPORT, interpret
from reauthd.core.model import Credential, EvidenceSource, VerdictKind
from reauthd.cpa.client import CPAClient
from reauthd.cpa.errors import KeyProblem
from reauthd.detect.probes import CLAUDE_OAUTH_BETA, CODEX_USER_AGENT, ProbeTable, probe
from reauthd.sim import SimServer, scenarios

ANTIGRAVITY = ProbeConfig(
    method="POST",
    url="https://cloudcode-pa.googleapis.com/v1internal:loadCodeAssist",
    headers={"Authorization": "Bearer $TOKEN$", "Content-Type": "application/json"},
    data="{}",
)


async def listed(client: CPAClient, name: str) -> Credential:
    (entry,) = await client.list_auth_files(name=name)
    return entry.to_credential(client.name)


def test_probe_table() -> None:
    table = ProbeTable({"antigravity": ANTIGRAVITY, "vertex": ANTIGRAVITY})
    codex = Credential("m", "codex-a.json", "0" * 16, "codex", "active", account_id="acct-123")
    spec = table.spec_for(codex)
    assert spec is not None
    assert spec.url == "https://chatgpt.com/backend-api/wham/usage"
    assert spec.headers["Chatgpt-Account-Id"] == "acct-123"
    assert spec.headers["User-Agent"] == CODEX_USER_AGENT
    assert spec.headers["Authorization"] == "Bearer $TOKEN$"
    claude = table.spec_for(Credential("m", "claude-a.json", "1" * 16, "claude", "active"))
    assert claude is not None and claude.headers["anthropic-beta"] == CLAUDE_OAUTH_BETA
    assert claude.url == "https://api.anthropic.com/api/oauth/usage"
    assert table.has_probe("kimi") and table.has_probe("xai") and table.has_probe("antigravity")
    assert not table.has_probe("vertex")  # never via /api-call (contract §12), even when configured
    assert not ProbeTable().has_probe("antigravity")


@pytest.mark.parametrize(
    ("provider", "kind", "expected"),
    [
        ("codex", None, VerdictKind.NEEDS_REAUTH),  # token_invalidated: the access token itself is dead
        ("claude", None, VerdictKind.NEEDS_REAUTH),  # 403 "OAuth token has been revoked"
        ("xai", None, VerdictKind.NEEDS_REAUTH),  # 403 bad-credentials on a token not yet expired
        # Kimi's default revocation kills the refresh token: the access token is past `expired` (in
        # the file too), so the probe alone cannot tell a dead login from one CPA will refresh (§5).
        ("kimi", None, VerdictKind.SUSPECT),
        ("kimi", "unauthorized", VerdictKind.SUSPECT),
    ],
)
async def test_healthy_and_revoked(
    sim: SimServer, client: CPAClient, provider: str, kind: str | None, expected: VerdictKind
) -> None:
    auth = scenarios.add_credential(sim.state, provider)
    credential = await listed(client, auth.name)
    ok = await probe(client, credential, datetime.now(UTC))
    assert ok.source is EvidenceSource.PROBE and ok.http_status == 200
    scenarios.revoke(sim.state, auth.name, kind)
    dead = await probe(client, credential, datetime.now(UTC))
    assert dead.http_status in (401, 403)
    assert dead.token_expired is (expected is VerdictKind.SUSPECT)
    signal = interpret(dead, provider)
    assert signal is not None and signal.kind is expected
    assert sim.state.counters.list_requests == 1  # probing never lists


async def test_expired_access_token_is_not_a_revocation(sim: SimServer, client: CPAClient) -> None:
    auth = scenarios.add_credential(sim.state, "claude", expires_in=-60)
    evidence = await probe(client, await listed(client, auth.name), datetime.now(UTC))
    assert evidence.http_status == 401 and evidence.token_expired is True
    signal = interpret(evidence, "claude")
    assert signal is not None and signal.kind is VerdictKind.SUSPECT


async def test_transport_failure_is_transient(sim: SimServer, client: CPAClient) -> None:
    auth = scenarios.add_credential(sim.state, "codex")
    credential = await listed(client, auth.name)
    scenarios.inject_fault(
        sim.state, "status", path="/api-call", status=502, body='{"error":"request failed"}'
    )
    evidence = await probe(client, credential, datetime.now(UTC))
    assert evidence.code == PROBE_TRANSPORT
    signal = interpret(evidence, "codex")
    assert signal is not None and signal.kind is VerdictKind.TRANSIENT


async def test_antigravity_refresh_failure_means_refresh_is_dead(sim: SimServer, client: CPAClient) -> None:
    auth = scenarios.add_credential(sim.state, "antigravity", expires_in=10)
    scenarios.revoke(sim.state, auth.name, "invalid_grant")
    table = ProbeTable({"antigravity": ANTIGRAVITY})
    evidence = await probe(client, await listed(client, auth.name), datetime.now(UTC), table=table)
    assert evidence.code == PROBE_REFRESH_FAILED
    signal = interpret(evidence, "antigravity")
    assert signal is not None and signal.kind is VerdictKind.NEEDS_REAUTH


async def test_vertex_is_not_probed(sim: SimServer, client: CPAClient) -> None:
    auth = scenarios.add_credential(sim.state, "vertex")
    before = sim.state.counters.api_calls
    evidence = await probe(client, await listed(client, auth.name), datetime.now(UTC))
    assert evidence.code == PROBE_NO_TOKEN
    assert sim.state.counters.api_calls == before


async def test_refused_key_raises(sim: SimServer) -> None:
    credential = Credential("main", "codex-x.json", "0123456789abcdef", "codex", "active")
    async with CPAClient("main", sim.base_url, "wrong-key") as bad:
        with pytest.raises(KeyProblem):
            await probe(bad, credential, datetime.now(UTC))
