"""CPAMP as a source, against a small CPAMP-shaped server on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from reauthd.config import CPAMPConfig
from reauthd.core.model import VerdictKind
from reauthd.cpa.client import CPAClient
from reauthd.detect.cpamp import CPAMPSource
from reauthd.detect.engine import DetectionEngine
from reauthd.sim import SimServer, scenarios
from tests.support.servers import serve_asgi

ADMIN = "cpamp-admin-key-SECRET"


class FakeCPAMP:
    """Answers like CPAMP's Manager Server (account-action and codex-inspection handlers)."""

    def __init__(self) -> None:
        self.candidates: list[dict[str, Any]] = []
        self.results: list[dict[str, Any]] = []
        self.requests: list[str] = []
        self.raw_candidates: bytes | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        request = Request(scope, receive)
        self.requests.append(f"{request.method} {request.url.path}?{request.url.query}")
        if request.headers.get("authorization") != f"Bearer {ADMIN}":
            response: Response = JSONResponse({"error": "unauthorized"}, 401)
        elif request.url.path == "/v0/management/account-action-candidates":
            if self.raw_candidates is not None:
                response = Response(self.raw_candidates, 200, media_type="application/json")
            else:
                wanted = request.query_params.get("status")
                items = [c for c in self.candidates if not wanted or c["status"] == wanted]
                response = JSONResponse({"items": items, "total": len(items)})
        elif request.url.path == "/v0/management/codex-inspection/runs":
            response = JSONResponse({"items": [{"id": 7, "status": "completed", "finishedAtMs": 1}]})
        elif request.url.path == "/v0/management/codex-inspection/runs/7":
            response = JSONResponse({"run": {"id": 7}, "results": self.results})
        else:
            response = JSONResponse({"error": "not found"}, 404)
        await response(scope, receive, send)


@pytest.fixture
async def cpamp() -> AsyncIterator[tuple[FakeCPAMP, str]]:
    app = FakeCPAMP()
    async with serve_asgi(app, log_level=None, log_config=None, access_log=False) as url:
        yield app, url


def source(url: str, key: str = ADMIN) -> CPAMPSource:
    return CPAMPSource(CPAMPConfig(name="cpamp", base_url=url, admin_key=SecretStr(key), cpa="main"))


async def test_pending_reauth_candidate_is_evidence_confirmed_by_probe(
    sim: SimServer, client: CPAClient, cpamp: tuple[FakeCPAMP, str]
) -> None:
    app, url = cpamp
    victim = scenarios.add_credential(sim.state, "codex")
    other = scenarios.add_credential(sim.state, "claude")
    scenarios.revoke(sim.state, victim.name)  # silent: only CPAMP's inspection noticed
    app.candidates = [
        {"id": 1, "actionType": "reauth", "status": "pending", "authFileName": victim.name,
         "reasonCode": "token_revoked", "reason": "OAuth token was revoked for bob@example.com"},
        {"id": 2, "actionType": "review", "status": "pending", "authIndex": other.auth_index,
         "reasonCode": "authentication_review", "reason": "review"},
        {"id": 3, "actionType": "reauth", "status": "resolved", "authIndex": other.auth_index, "reason": "old"},
    ]  # fmt: skip
    src = source(url)
    engine = DetectionEngine({"main": client}, cpamp=[src])
    try:
        await engine.cycle()
        assert await engine.poll_cpamp(src) == 1
        event = await asyncio.wait_for(engine.confirmed.get(), 5)
        assert event.ref.name == victim.name and event.kind is VerdictKind.NEEDS_REAUTH
        view = engine.verdict_for("main", other.auth_index)
        assert view is not None and view.verdict.kind is VerdictKind.HEALTHY
    finally:
        await engine.aclose()
        await src.aclose()
    assert any("status=pending" in r for r in app.requests)
    assert not any("usage-queue" in r for r in app.requests)


async def test_inspection_reauth_and_deactivated(cpamp: tuple[FakeCPAMP, str]) -> None:
    app, url = cpamp
    app.results = [
        {"authIndex": "a" * 16, "fileName": "codex-a.json", "action": "reauth", "actionReason": "token invalidated",
         "statusCode": 401},
        {"authIndex": "b" * 16, "action": "delete", "actionReason": "workspace deactivated", "statusCode": 402},
        {"authIndex": "c" * 16, "action": "reauth", "actionStatus": "resolved"},
        {"authIndex": "d" * 16, "action": "keep"},
    ]  # fmt: skip
    src = source(url)
    try:
        findings = await src.fetch(datetime.now(UTC))
    finally:
        await src.aclose()
    assert findings is not None
    assert [(f.auth_index, f.evidence.code) for f in findings] == [
        ("a" * 16, "reauth"),
        ("b" * 16, "workspace_deactivated"),
    ]


async def test_refused_admin_key_stops_the_source(cpamp: tuple[FakeCPAMP, str]) -> None:
    app, url = cpamp
    src = source(url, key="wrong")
    try:
        assert await src.fetch(datetime.now(UTC)) is None
        assert await src.fetch(datetime.now(UTC)) is None
    finally:
        await src.aclose()
    assert len(app.requests) == 1  # never fight the key
    assert src.stopped is not None and "wrong" not in src.stopped


@pytest.mark.parametrize("raw", [b"garbage", b'{"items": 5}', json.dumps({"items": [1, "x", None]}).encode()])
async def test_garbage_from_cpamp_builds_nothing(cpamp: tuple[FakeCPAMP, str], raw: bytes) -> None:
    app, url = cpamp
    app.raw_candidates = raw
    src = source(url)
    try:
        findings = await src.fetch(datetime.now(UTC))
    finally:
        await src.aclose()
    assert not findings
