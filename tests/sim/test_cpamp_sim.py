"""The CPAMP simulator against the CPAMP facts it copies (each test names the CPAMP file)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from reauthd.sim import SimServer, scenarios
from reauthd.sim.cpamp import CPAMPSimServer, Policy

ADMIN = "cpamp-admin-SECRET"


@pytest.fixture
async def cpamp(sim: SimServer) -> AsyncIterator[CPAMPSimServer]:
    async with CPAMPSimServer(ADMIN, cpa=sim.state, policy=Policy(queue_enabled=True)) as server:
        yield server


@pytest.fixture
async def http(cpamp: CPAMPSimServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=cpamp.base_url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10
    ) as c:
        yield c


async def test_health_is_unauthenticated(cpamp: CPAMPSimServer) -> None:
    # controller/health/handler.go: GET /health → {"ok": true, "service": id}, no key needed.
    async with httpx.AsyncClient(base_url=cpamp.base_url) as anon:
        r = await anon.get("/health")
        assert r.status_code == 200 and r.json()["ok"] is True
        assert (await anon.post("/health")).status_code == 405


async def test_wrong_key_gets_cpamps_exact_401(cpamp: CPAMPSimServer) -> None:
    # middleware/auth.go AuthorizePanel + response/error.go UsageServiceErrorCode.
    async with httpx.AsyncClient(base_url=cpamp.base_url, headers={"Authorization": "Bearer nope"}) as bad:
        for path in (
            "/v0/management/account-action-candidates",
            "/v0/management/codex-inspection/runs",
            "/usage-service/account-processing-policy",
        ):
            r = await bad.get(path)
            assert r.status_code == 401
            assert r.json() == {"error": "invalid admin key", "code": "invalid_admin_key"}


async def test_unknown_path_is_go_not_found(http: httpx.AsyncClient) -> None:
    # router.go rootHandler → http.NotFound for anything outside /v0/management/.
    r = await http.get("/nothing")
    assert r.status_code == 404 and r.text == "404 page not found\n"


async def test_list_shape_order_and_pending_count(cpamp: CPAMPSimServer, http: httpx.AsyncClient) -> None:
    # service/accountaction/service.go ListResponse {items, pendingCount}; repository.go List ordering.
    old = cpamp.sim.add_candidate("codex-a.json", "token_revoked", auth_index="a1", seen_at_ms=1_000)
    new = cpamp.sim.add_candidate("codex-b.json", "invalid_credentials", auth_index="b1", seen_at_ms=2_000)
    done = cpamp.sim.add_candidate("codex-c.json", "token_revoked", seen_at_ms=3_000)
    cpamp.sim.set_status(done["id"], "resolved")
    body = (await http.get("/v0/management/account-action-candidates", params={"status": "pending"})).json()
    assert set(body) == {"items", "pendingCount"}
    assert [i["id"] for i in body["items"]] == [new["id"], old["id"]]
    assert body["pendingCount"] == 2
    item = body["items"][0]
    assert item["actionType"] == "reauth" and item["reasonCode"] == "invalid_credentials"
    assert item["autoDisableEligible"] is True and "autoDisabledAtMs" not in item
    for name in ("firstSeenAtMs", "lastSeenAtMs", "createdAtMs", "updatedAtMs", "hitCount"):
        assert isinstance(item[name], int)
    everything = (await http.get("/v0/management/account-action-candidates")).json()
    assert [i["status"] for i in everything["items"]] == ["pending", "pending", "resolved"]


async def test_repeat_is_an_upsert_not_a_new_row(cpamp: CPAMPSimServer) -> None:
    # repository.go Upsert: same pending (file, action, reason code, auth index) → hitCount + 1.
    first = cpamp.sim.add_candidate("codex-a.json", "token_revoked", auth_index="a1", seen_at_ms=1_000)
    again = cpamp.sim.add_candidate("codex-a.json", "token_revoked", auth_index="a1", seen_at_ms=5_000)
    other = cpamp.sim.add_candidate("codex-a.json", "invalid_credentials", auth_index="a1", seen_at_ms=6_000)
    assert again is first and first["hitCount"] == 2 and first["lastSeenAtMs"] == 5_000
    assert first["firstSeenAtMs"] == 1_000 and other["id"] != first["id"]


@pytest.mark.parametrize(
    ("asked", "served"), [(1000, 100), (501, 100), (500, 500), (0, 100), (-3, 100), (250, 250)]
)
async def test_limit_cap(cpamp: CPAMPSimServer, http: httpx.AsyncClient, asked: int, served: int) -> None:
    # handler.go handleList (default 100, positive only) + repository.go List (≤0 or >500 → 100).
    for n in range(600):
        cpamp.sim.add_candidate(f"codex-{n}.json", "token_revoked", seen_at_ms=1_000 + n)
    body = (await http.get("/v0/management/account-action-candidates", params={"limit": asked})).json()
    assert len(body["items"]) == served and body["pendingCount"] == 600


async def test_auto_disable_disables_the_file_in_cpa(sim: SimServer, cpamp: CPAMPSimServer) -> None:
    # worker/account_action_candidate.go maybeAutoDisable + repository.go MarkAutoDisabled.
    cpamp.sim.policy.auto_disable = True
    auth = scenarios.add_credential(sim.state, "codex")
    review = scenarios.add_credential(sim.state, "codex")
    item = cpamp.sim.add_candidate(auth.name, "token_revoked", auth_index=auth.auth_index)
    assert sim.state.auth_by_name(auth.name).disabled is True  # type: ignore[union-attr]
    assert item["autoDisabledAtMs"] == item["updatedAtMs"] > 0
    # authentication_review is not eligible (credentialpolicy/policy.go): left enabled, no marker.
    kept = cpamp.sim.add_candidate(review.name, "authentication_review", auth_index=review.auth_index)
    assert sim.state.auth_by_name(review.name).disabled is False  # type: ignore[union-attr]
    assert "autoDisabledAtMs" not in kept


async def test_auto_disable_needs_the_queue_switch_too(sim: SimServer, cpamp: CPAMPSimServer) -> None:
    # service/automation/service.go: auto-disable is effective only with the queue on.
    cpamp.sim.policy = Policy(queue_enabled=False, auto_disable=True)
    auth = scenarios.add_credential(sim.state, "codex")
    cpamp.sim.add_candidate(auth.name, "token_revoked", auth_index=auth.auth_index)
    assert sim.state.auth_by_name(auth.name).disabled is False  # type: ignore[union-attr]


async def test_policy_shape(cpamp: CPAMPSimServer, http: httpx.AsyncClient) -> None:
    # service/automation/service.go Status JSON names.
    cpamp.sim.policy = Policy(queue_enabled=False, auto_disable=True)
    body = (await http.get("/usage-service/account-processing-policy")).json()
    assert body["authIssueQueue"]["enabled"] is False
    assert body["authIssueAutoDisable"] == {
        "enabled": False,
        "configured": True,
        "source": "startup",
        "locked": False,
        "envKey": "USAGE_ACCOUNT_ACTIONS_AUTO_DISABLE",
        "configFileKey": "accountActionsAutoDisable",
        "dependsOn": "authIssueQueue",
    }


async def test_runs_and_results_with_chinese_reasons(cpamp: CPAMPSimServer, http: httpx.AsyncClient) -> None:
    # service/codexinspection/service.go resolveDeactivatedWorkspaceProbeAction, RunDetail {run, results, logs}.
    sim = cpamp.sim
    gone = sim.inspection_result("codex-b.json", "deactivated_workspace", auth_index="b1")
    dead = sim.inspection_result("codex-a.json", "token_revoked", auth_index="a1")
    ok = sim.inspection_result("codex-c.json", "healthy", auth_index="c1")
    run_id = sim.add_run([gone, dead, ok])
    runs = (await http.get("/v0/management/codex-inspection/runs", params={"limit": 5})).json()
    assert runs["items"][0]["id"] == run_id and runs["items"][0]["status"] == "completed"
    detail = (await http.get(f"/v0/management/codex-inspection/runs/{run_id}")).json()
    assert set(detail) == {"run", "results", "logs"}
    by_file = {r["fileName"]: r for r in detail["results"]}
    assert [r["fileName"] for r in detail["results"]] == ["codex-a.json", "codex-b.json", "codex-c.json"]
    assert by_file["codex-b.json"]["action"] == "delete" and by_file["codex-b.json"]["statusCode"] == 402
    assert by_file["codex-b.json"]["actionReason"] == "接口返回 402，工作区已停用，建议删除账号"
    assert "deactivated_workspace" in by_file["codex-b.json"]["errorDetail"]
    assert "deactivated" not in by_file["codex-b.json"]["actionReason"]
    assert by_file["codex-a.json"]["action"] == "reauth" and by_file["codex-a.json"]["statusCode"] == 401
    assert "errorKind" not in by_file["codex-c.json"] and by_file["codex-c.json"]["action"] == "keep"
    missing = await http.get("/v0/management/codex-inspection/runs/999")
    assert missing.status_code == 404 and missing.json()["error"] == "codex inspection run not found"


async def test_injected_faults_answer_once(cpamp: CPAMPSimServer, http: httpx.AsyncClient) -> None:
    cpamp.sim.fail_next("/v0/management/codex-inspection/runs", 503, b"busy", "text/plain")
    assert (await http.get("/v0/management/codex-inspection/runs")).status_code == 503
    assert (await http.get("/v0/management/codex-inspection/runs")).status_code == 200


def test_reauthd_sim_serves_cpamp_beside_cpa() -> None:
    """`reauthd sim --cpamp-port` serves both; the CPAMP side answers /health and never prints its key."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.support.servers import free_port

    port, cpamp_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "reauthd", "sim", "--port", str(port), "--cpamp-port", str(cpamp_port),
         "--cpamp-admin-key", ADMIN],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{cpamp_port}/health")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert r.json()["ok"] is True
        policy = httpx.get(
            f"http://127.0.0.1:{cpamp_port}/usage-service/account-processing-policy",
            headers={"Authorization": f"Bearer {ADMIN}"},
        ).json()
        assert policy["authIssueQueue"]["enabled"] is True
        os.kill(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
        assert f"CPAMP simulator listening on http://127.0.0.1:{cpamp_port}" in out
        assert ADMIN not in out + err
    finally:
        if proc.poll() is None:
            proc.kill()
