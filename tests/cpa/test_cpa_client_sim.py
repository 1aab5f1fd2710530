"""Every CPAClient method against the CPA simulator over loopback: happy paths and CPA's refusals."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from reauthd.cpa import (
    AuthManagerUnavailable,
    CPAClient,
    CPARequestError,
    FeatureMissing,
    HealthState,
    MalformedResponse,
    ResponseTooLarge,
    TransientCPAError,
    UpstreamRequestFailed,
)
from reauthd.sim.server import SimServer
from tests.cpa.conftest import FAST_RETRY

KEY = "sim-mgmt-key-0123"


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    async with SimServer(management_key=KEY, port=0) as server:
        server.state.set_timing(watcher_delay=0.05, exchange_delay=0.05, device_poll_interval=0.05)
        yield server


@pytest.fixture
async def cpa(sim: SimServer) -> AsyncIterator[CPAClient]:
    async with CPAClient("sim", sim.base_url, KEY, retry=FAST_RETRY) as client:
        yield client


def oplog_count(sim: SimServer, path: str) -> int:
    return sum(1 for op in sim.state.oplog if op["path"] == path)


async def test_list_and_filters(sim: SimServer, cpa: CPAClient) -> None:
    a = sim.state.add_credential("codex", email="a@example.com", plan="plus", note="team A", priority=3)
    b = sim.state.add_credential("claude", email="b@example.com")
    files = await cpa.list_auth_files()
    assert sorted(f.name for f in files) == sorted([a.name, b.name])
    codex = next(f for f in files if f.name == a.name)
    assert (codex.provider, codex.status, codex.email, codex.note, codex.priority) == (
        "codex",
        "active",
        "a@example.com",
        "team A",
        3,
    )
    assert codex.id_token is not None and codex.id_token.plan_type == "plus"
    cred = codex.to_credential("sim")
    assert (cred.cpa, cred.auth_index, cred.plan_type) == ("sim", a.auth_index, "plus")
    assert [f.name for f in await cpa.list_auth_files(name=b.name)] == [b.name]
    assert [f.name for f in await cpa.list_auth_files(auth_index=a.auth_index)] == [a.name]
    assert await cpa.list_auth_files(name=a.name, auth_index=b.auth_index) == []
    assert cpa.version is not None and cpa.version.version == "v7.2.140-sim"
    assert cpa.health.state is HealthState.OK


async def test_disable_enable_and_identity_check(sim: SimServer, cpa: CPAClient) -> None:
    a = sim.state.add_credential("codex", email="a@example.com")
    await cpa.set_disabled(a.name, True, auth_index=a.auth_index)
    (f,) = await cpa.list_auth_files(name=a.name)
    assert (f.status, f.disabled, f.status_message) == ("disabled", True, "disabled via management API")
    await cpa.set_disabled(a.name, False)
    (f,) = await cpa.list_auth_files(name=a.name)
    assert (f.status, f.disabled, f.status_message) == ("active", False, "")
    with pytest.raises(CPARequestError) as info:
        await cpa.set_disabled(a.name, True, auth_index="ffffffffffffffff")
    assert (info.value.status, info.value.error_text) == (404, "auth file not found")


async def test_patch_fields(sim: SimServer, cpa: CPAClient) -> None:
    a = sim.state.add_credential("codex", email="a@example.com")
    await cpa.patch_fields(a.name, {"note": "moved", "priority": 7})
    (f,) = await cpa.list_auth_files(name=a.name)
    assert (f.note, f.priority) == ("moved", 7)
    with pytest.raises(CPARequestError, match="weight must be an integer"):
        await cpa.patch_fields(a.name, {"weight": "heavy"})
    with pytest.raises(ValueError, match="cannot be patched"):
        await cpa.patch_fields(a.name, {"name": "other.json"})


async def test_download_upload_delete(sim: SimServer, cpa: CPAClient) -> None:
    a = sim.state.add_credential("claude", email="c@example.com")
    raw = await cpa.download_auth_file(a.name)
    content = json.loads(raw)
    assert content["type"] == "claude" and content["email"] == "c@example.com"

    content["note"] = "copy"
    result = await cpa.upload_auth_file("claude-copy.json", json.dumps(content).encode())
    assert result.status == "ok"
    names = {f.name for f in await cpa.list_auth_files()}
    assert {"claude-copy.json", a.name} <= names
    with pytest.raises(CPARequestError, match=r"name must end with \.json"):
        await cpa.upload_auth_file("claude-copy.txt", b"{}")

    await cpa.delete_auth_file("claude-copy.json")
    assert "claude-copy.json" not in {f.name for f in await cpa.list_auth_files()}
    with pytest.raises(CPARequestError) as info:
        await cpa.delete_auth_file("claude-copy.json")
    assert (info.value.status, info.value.error_text) == (404, "auth file not found")
    with pytest.raises(CPARequestError, match="file not found"):
        await cpa.download_auth_file("nope.json")


async def test_models_and_reset_quota(sim: SimServer, cpa: CPAClient) -> None:
    a = sim.state.add_credential("codex", email="a@example.com")
    models = await cpa.models(a.name)
    assert models and all(m.id for m in models)
    assert await cpa.models("unknown.json") == []
    result = await cpa.reset_quota(a.auth_index)
    assert result.auth_index == a.auth_index
    with pytest.raises(CPARequestError) as info:
        await cpa.reset_quota("ffffffffffffffff")
    assert (info.value.status, info.value.error_text) == (404, "auth not found")


@pytest.mark.parametrize(
    ("provider", "route", "flow"),
    [
        ("codex", "/codex-auth-url", "callback"),
        ("claude", "/anthropic-auth-url", "callback"),  # the auth file type maps to CPA's session provider
        ("antigravity", "/antigravity-auth-url", "callback"),
        ("kimi", "/kimi-auth-url", "device"),
        ("xai", "/xai-auth-url", "device"),
    ],
)
async def test_auth_url_status_and_cancel(
    sim: SimServer, cpa: CPAClient, provider: str, route: str, flow: str
) -> None:
    minted = await cpa.auth_url(provider)
    assert minted.flow == flow and minted.url.startswith("http")
    assert oplog_count(sim, "/v0/management" + route) == 1
    if flow == "device":
        assert minted.user_code
    assert (await cpa.get_auth_status(minted.state)).status == "wait"
    assert await cpa.cancel_oauth_session(minted.state) is True
    gone = await cpa.get_auth_status(minted.state)
    assert (gone.status, gone.error) == ("error", "unknown or expired state")
    assert await cpa.cancel_oauth_session(minted.state) is False


async def test_get_auth_status_refuses_an_empty_state(cpa: CPAClient) -> None:
    with pytest.raises(ValueError, match="needs the state"):
        await cpa.get_auth_status("")  # CPA would answer {"status":"ok"} (sic)


async def test_removed_login_route_is_feature_missing(cpa: CPAClient) -> None:
    with pytest.raises(FeatureMissing, match="too old or too new for iflow login"):
        await cpa.auth_url("iflow")


async def test_callback_flow_end_to_end(sim: SimServer, cpa: CPAClient) -> None:
    minted = await cpa.auth_url("codex")
    pasted = sim.state.provider_login(minted.state, email="new@example.com", plan="pro", account_id="acct-9")
    await cpa.post_oauth_callback(pasted)
    status = None
    for _ in range(100):
        status = await cpa.get_auth_status(minted.state)
        if status.status != "wait":
            break
        await asyncio.sleep(0.05)
    assert status is not None and status.status == "ok", status
    for _ in range(100):
        files = await cpa.list_auth_files()
        if any(f.email == "new@example.com" for f in files):
            break
        await asyncio.sleep(0.05)
    assert any(f.email == "new@example.com" and f.status == "active" for f in files)
    # The same URL again: CPA says the flow is over.
    with pytest.raises(CPARequestError) as info:
        await cpa.post_oauth_callback(pasted)
    assert info.value.status == 409


@pytest.mark.parametrize(
    ("pasted", "status", "text"),
    [
        ("http://localhost:1455/auth/callback?code=abc&state=0123456789abcdef0123456789abcdef", 404,
         "unknown or expired state"),
        ("http://localhost:1455/auth/callback?code=abc", 400, "state is required"),
        ("http://localhost:1455/auth/callback?state=0123456789abcdef0123456789abcdef", 400,
         "code or error is required"),
        ("http://localhost:1455/auth/callback?code=abc&state=bad/state", 400, "invalid state"),
    ],
)  # fmt: skip
async def test_callback_refusals_carry_cpas_message(
    cpa: CPAClient, pasted: str, status: int, text: str
) -> None:
    with pytest.raises(CPARequestError) as info:
        await cpa.post_oauth_callback(pasted)
    assert (info.value.status, info.value.error_text) == (status, text)
    assert "abc" not in str(info.value) and "localhost:1455" not in str(info.value)


async def test_api_call_probe(sim: SimServer, cpa: CPAClient) -> None:
    a = sim.state.add_credential("codex", email="a@example.com")
    headers = {"Authorization": "Bearer $TOKEN$", "Chatgpt-Account-Id": "x"}
    ok = await cpa.api_call(a.auth_index, "GET", "https://chatgpt.com/backend-api/wham/usage", headers)
    assert ok.status_code == 200 and ok.header["Content-Type"] == ["application/json"]
    sim.state.revoke(a.name)
    dead = await cpa.api_call(a.auth_index, "GET", "https://chatgpt.com/backend-api/wham/usage", headers)
    assert dead.status_code == 401
    with pytest.raises(UpstreamRequestFailed, match="request failed"):
        await cpa.api_call(a.auth_index, "GET", "https://unreachable.invalid/", headers)
    assert oplog_count(sim, "/v0/management/api-call") == 3  # never repeated
    with pytest.raises(CPARequestError, match="missing method"):
        await cpa.api_call(a.auth_index, "", "https://chatgpt.com/", headers)


async def test_vertex_import(sim: SimServer, cpa: CPAClient) -> None:
    sa = {
        "type": "service_account",
        "project_id": "proj-1",
        "private_key_id": "kid-1",
        "private_key": "-----BEGIN PRIVATE KEY-----\\nMIIB\\n-----END PRIVATE KEY-----\\n",
        "client_email": "sa@proj-1.iam.gserviceaccount.com",
    }
    result = await cpa.vertex_import(json.dumps(sa).encode(), "europe-west4")
    assert (result.project_id, result.email, result.location) == (
        "proj-1",
        "sa@proj-1.iam.gserviceaccount.com",
        "europe-west4",
    )
    assert result.auth_file.endswith("vertex-proj-1.json")
    with pytest.raises(CPARequestError, match="project_id missing"):
        await cpa.vertex_import(json.dumps({**sa, "project_id": ""}).encode(), "us-central1")


# ------------------------------------------------------------------------------------ faults


async def test_transient_5xx_is_retried_then_raised(sim: SimServer, cpa: CPAClient) -> None:
    sim.state.inject_fault("status", path="/auth-files", method="GET", status=502, count=None)
    with pytest.raises(TransientCPAError, match="after 3 attempts"):
        await cpa.list_auth_files()
    assert oplog_count(sim, "/v0/management/auth-files") == 3
    sim.state.clear_faults()
    sim.state.inject_fault("status", path="/auth-files", method="GET", status=503, count=2)
    assert await cpa.list_auth_files() == []
    assert cpa.health.state is HealthState.OK


async def test_dropped_connection_is_retried_for_reads(sim: SimServer, cpa: CPAClient) -> None:
    sim.state.inject_fault("drop", path="/auth-files", method="GET", count=1)
    assert await cpa.list_auth_files() == []
    sim.state.inject_fault("outage", path="/auth-files", method="GET", count=1)
    assert await cpa.list_auth_files() == []


async def test_auth_manager_unavailable(sim: SimServer, cpa: CPAClient) -> None:
    body = json.dumps({"error": "core auth manager unavailable"})
    sim.state.inject_fault("status", path="/auth-files", status=503, body=body, count=None)
    with pytest.raises(AuthManagerUnavailable):
        await cpa.list_auth_files()
    assert oplog_count(sim, "/v0/management/auth-files") == 1


async def test_malformed_json(sim: SimServer, cpa: CPAClient) -> None:
    sim.state.add_credential("codex", email="a@example.com")
    sim.state.inject_fault("malformed_json", path="/auth-files", method="GET")
    with pytest.raises(MalformedResponse, match="/v0/management/auth-files"):
        await cpa.list_auth_files()


@pytest.mark.parametrize("kind", ["unknown_status", "missing_fields"])
async def test_bad_entries_are_skipped_not_fatal(sim: SimServer, cpa: CPAClient, kind: str) -> None:
    for i in range(3):
        sim.state.add_credential("codex", email=f"u{i}@example.com")
    sim.state.inject_fault(kind, path="/auth-files", method="GET")
    files = await cpa.list_auth_files()
    assert len(files) + len(cpa.last_skipped) == 3
    assert cpa.last_skipped, "the fault should have spoiled at least one entry"


async def test_huge_body(sim: SimServer) -> None:
    sim.state.inject_fault("huge_body", path="/auth-files", method="GET")
    async with CPAClient("sim", sim.base_url, KEY, retry=FAST_RETRY, listing_max_bytes=1024 * 1024) as cpa:
        with pytest.raises(ResponseTooLarge):
            await cpa.list_auth_files()


async def test_raw_listing_for_lean_parsers(sim: SimServer, cpa: CPAClient) -> None:
    a = sim.state.add_credential("codex", email="a@example.com")
    raw = await cpa.list_auth_files_raw(auth_index=a.auth_index)
    assert [f["name"] for f in json.loads(raw)["files"]] == [a.name]


async def test_plugin_provider_login_route() -> None:
    sim = SimServer(management_key=KEY, port=0, plugin_providers=("acme-ai",))
    async with sim, CPAClient("sim", sim.base_url, KEY, retry=FAST_RETRY) as cpa:
        minted = await cpa.auth_url("acme-ai")
        assert minted.state and oplog_count(sim, "/v0/management/acme-ai-auth-url") == 1
        with pytest.raises(FeatureMissing, match="other-ai login"):
            await cpa.auth_url("other-ai")
        with pytest.raises(ValueError, match="not a provider"):
            await cpa.auth_url("../config")
