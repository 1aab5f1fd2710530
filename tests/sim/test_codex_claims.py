"""The listing's Codex `id_token` object as CPA builds it: internal/api/handlers/management/auth_files.go
`extractCodexIDTokenClaims` (via internal/auth/codex/jwt_parser.go `ParseJWTToken`)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import httpx

from reauthd.detect.listing import parse_listing
from reauthd.sim import SimServer


def jwt(payload: dict[str, Any]) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256'})}.{part(payload)}.c2ln"


async def listed(client: httpx.AsyncClient, name: str) -> dict[str, Any]:
    files = (await client.get("/auth-files", params={"name": name})).json()["files"]
    assert len(files) == 1
    return dict(files[0])


async def test_subscription_end_is_passed_through_and_read(sim: SimServer, client: httpx.AsyncClient) -> None:
    until = datetime(2027, 1, 15, 8, 30, tzinfo=UTC)
    auth = sim.state.add_credential("codex", email="u@x.com", plan="pro", subscription_until=until)
    entry = await listed(client, auth.name)
    assert entry["id_token"]["chatgpt_subscription_active_until"] == until.isoformat()
    assert entry["id_token"]["plan_type"] == "pro"
    raw = (await client.get("/auth-files", params={"name": auth.name})).content
    credential = parse_listing(raw, "main").credentials[0]
    assert (credential.subscription_until, credential.plan_type) == (until, "pro")


async def test_empty_and_null_claims_are_left_out(sim: SimServer, client: httpx.AsyncClient) -> None:
    """`result["plan_type"]` only for a non-empty trimmed value; the dates only when not nil."""
    token = jwt(
        {
            "email": "v@x.com",
            "https://api.openai.com/auth": {
                "chatgpt_account_id": "  acc-2 ",
                "chatgpt_plan_type": "  ",
                "chatgpt_subscription_active_until": None,
                "chatgpt_subscription_active_start": 1767225600,
            },
        }
    )
    auth = sim.state.add_credential("codex", email="v@x.com", extra={"id_token": token})
    claims = (await listed(client, auth.name))["id_token"]
    assert claims == {"chatgpt_account_id": "acc-2", "chatgpt_subscription_active_start": 1767225600}


async def test_no_claims_no_id_token_key(sim: SimServer, client: httpx.AsyncClient) -> None:
    """Not three parts, or no claim at all: `extractCodexIDTokenClaims` returns nil and the key is absent."""
    two_parts = sim.state.add_credential(
        "codex", email="w@x.com", name="codex-two.json", extra={"id_token": "a.b"}
    )
    empty = sim.state.add_credential(
        "codex", email="y@x.com", name="codex-empty.json", extra={"id_token": jwt({"email": "y@x.com"})}
    )
    assert "id_token" not in await listed(client, two_parts.name)
    assert "id_token" not in await listed(client, empty.name)
