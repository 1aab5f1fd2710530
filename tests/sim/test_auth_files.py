"""GET /auth-files and the other auth-file endpoints; the failure model (contract §2, §3, §11.2-§11.6)."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import httpx
import pytest

from reauthd.sim import SimServer

GO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)$")


async def entry(client: httpx.AsyncClient, name: str) -> dict[str, Any]:
    r = await client.get("/auth-files", params={"name": name})
    files = r.json()["files"]
    assert len(files) == 1, files
    return dict(files[0])


async def test_entry_schema_and_auth_index(sim: SimServer, client: httpx.AsyncClient) -> None:
    """§2.1/§11.2: every field, 16-hex auth_index from sha256("<type>:<abs path>"), claims object."""
    a = sim.state.add_credential(
        "codex", email="u@x.com", plan="plus", account_id="acc-1", priority=5, note="n1"
    )
    e = await entry(client, a.name)
    assert (
        e["name"]
        == e["id"]
        == a.name
        == f"codex-{hashlib.sha256(b'acc-1').hexdigest()[:8]}-u@x.com-plus.json"
    )
    assert e["auth_index"] == hashlib.sha256(f"codex:/sim/auths/{a.name}".encode()).hexdigest()[:16]
    assert e["type"] == e["provider"] == "codex"
    assert (e["label"], e["email"], e["account_type"], e["account"]) == (
        "u@x.com",
        "u@x.com",
        "oauth",
        "u@x.com",
    )
    assert (e["status"], e["status_message"], e["disabled"], e["unavailable"]) == ("active", "", False, False)
    assert (e["runtime_only"], e["source"], e["path"]) == (False, "file", f"/sim/auths/{a.name}")
    assert e["size"] > 0
    assert (e["success"], e["failed"], e["priority"], e["note"]) == (0, 0, 5, "n1")
    assert len(e["recent_requests"]) == 20
    assert all(re.fullmatch(r"\d\d:\d\d-\d\d:\d\d", b["time"]) for b in e["recent_requests"])
    assert e["id_token"]["chatgpt_account_id"] == "acc-1"
    assert e["id_token"]["plan_type"] == "plus"
    assert set(e["id_token"]) == {
        "chatgpt_account_id",
        "plan_type",
        "chatgpt_subscription_active_start",
        "chatgpt_subscription_active_until",
    }
    for key in ("created_at", "modtime", "updated_at"):
        assert GO_TIME.match(e[key]), e[key]
    # runtime LastRefreshedAt: zero on load (filestore.go), so absent until CPA's first refresh
    assert "last_refresh" not in e
    assert "next_retry_after" not in e
    for hidden in ("last_error", "quota", "model_states", "prefix", "access_token", "refresh_token"):
        assert hidden not in e


async def test_sorting_and_filters(sim: SimServer, client: httpx.AsyncClient) -> None:
    """§2: sorted case-insensitively by name; only `name` and `auth_index` filter."""
    names = ["claude-Zed@x.com.json", "claude-alice@x.com.json", "kimi-1.json", "Antigravity-b@x.com.json"]
    added = {n: sim.state.add_credential("claude" if "claude" in n else "kimi", name=n) for n in names}
    listed = [f["name"] for f in (await client.get("/auth-files")).json()["files"]]
    assert listed == sorted(names, key=str.lower)
    idx = added["kimi-1.json"].auth_index
    assert [
        f["name"] for f in (await client.get("/auth-files", params={"auth_index": idx})).json()["files"]
    ] == ["kimi-1.json"]
    both = await client.get("/auth-files", params={"auth_index": idx, "name": "claude-alice@x.com.json"})
    assert both.json() == {"files": []}
    assert len((await client.get("/auth-files", params={"provider": "kimi"})).json()["files"]) == 4
    kimi = await entry(client, "kimi-1.json")
    assert kimi["label"] == "kimi"


async def test_empty_listing(client: httpx.AsyncClient) -> None:
    """§2: `{"files":[]}` when empty."""
    assert (await client.get("/auth-files")).json() == {"files": []}


@pytest.mark.parametrize(
    ("provider", "kind", "status_code", "check"),
    [
        (
            "codex",
            "token_invalidated",
            401,
            lambda m: (
                m
                == {
                    "error": {
                        "message": "Your authentication token has been invalidated. Please try "
                        "signing in again.",
                        "type": "authentication_error",
                        "code": "auth_unavailable",
                    }
                }
            ),
        ),
        ("codex", "refresh_token_reused", 401, lambda m: m["error"]["code"] == "auth_unavailable"),
        ("claude", "claude_revoked", 403, lambda m: m["error"]["type"] == "permission_error"),
        ("xai", "xai_bad_credentials", 401, lambda m: m["code"] == "bad-credentials"),
        ("antigravity", "invalid_grant", 401, lambda m: m["error"]["status"] == "UNAUTHENTICATED"),
    ],
)
async def test_revocation_marks_raw_body(
    sim: SimServer, client: httpx.AsyncClient, provider: str, kind: str, status_code: int, check: Any
) -> None:
    """§2.3 A/§11.3-5: a live request through a revoked credential → status error, raw body as message,
    unavailable with next_retry_after +30 min (one tracked model); Codex body reshaped, code dropped."""
    a = sim.state.add_credential(provider, email="r@x.com")
    assert sim.state.simulate_request(a.name).status == 200
    sim.state.revoke(a.name, kind)
    ans = sim.state.simulate_request(a.name)
    assert ans.status == status_code
    e = await entry(client, a.name)
    assert e["status"] == "error"
    assert check(json.loads(e["status_message"]))
    assert "token_invalidated" not in e["status_message"]
    assert e["unavailable"] is True
    assert GO_TIME.match(e["next_retry_after"])
    assert (e["failed"], e["success"]) == (1, 1)
    assert sum(b["failed"] for b in e["recent_requests"]) == 1


async def test_claude_403_is_not_refreshed(sim: SimServer) -> None:
    """§11.5: Claude revocation is a 403, so no refresh is attempted (the refresh token is not spent)."""
    a = sim.state.add_credential("claude", email="c@x.com")
    before = a.metadata["refresh_token"]
    sim.state.revoke(a.name, "claude_revoked", live=True)
    assert a.metadata["refresh_token"] == before
    assert a.last_error == {"message": a.status_message, "http_status": 403}


async def test_expired_token_is_refreshed_transparently(sim: SimServer, client: httpx.AsyncClient) -> None:
    """§2.3 A.2: a 401 with a live refresh token refreshes once, retries and stays active."""
    a = sim.state.add_credential("claude", email="e@x.com", expires_in=-5)
    old_token = a.access_token
    assert sim.state.simulate_request(a.name).status == 200
    e = await entry(client, a.name)
    assert (e["status"], e["status_message"], e["success"]) == ("active", "", 1)
    assert a.access_token != old_token
    sim.state.run_due()


async def test_per_model_aggregation(sim: SimServer, client: httpx.AsyncClient) -> None:
    """§2.3 A.4/§11.4: a clean state for another model → error with message but unavailable false."""
    a = sim.state.add_credential("codex", email="m@x.com")
    assert sim.state.simulate_request(a.name, "gpt-5-codex").status == 200
    sim.state.revoke(a.name, "token_invalidated")
    sim.state.simulate_request(a.name, "gpt-5")
    e = await entry(client, a.name)
    assert (e["status"], e["unavailable"]) == ("error", False)
    assert "next_retry_after" not in e
    assert e["status_message"].startswith("{")
    sim.state.simulate_request(a.name, "gpt-5-codex")
    e = await entry(client, a.name)
    assert e["unavailable"] is True
    assert "next_retry_after" in e
    sim.state.advance(31 * 60)
    e = await entry(client, a.name)
    assert e["status"] == "error"  # error persists after the retry time (§11.4)


@pytest.mark.parametrize(
    ("setup", "message", "unavailable"),
    [
        ("revoke", "unauthorized", True),
        ("quota", "quota exhausted", True),
        ("deactivated", "payment_required", True),
        ("transient", "transient upstream error", True),
    ],
)
async def test_no_model_fixed_strings(
    sim: SimServer, client: httpx.AsyncClient, setup: str, message: str, unavailable: bool
) -> None:
    """§2.3 A.5: fixed-string messages appear only on the no-model path."""
    a = sim.state.add_credential("codex", email="f@x.com")
    if setup == "revoke":
        sim.state.revoke(a.name, "token_invalidated")
    else:
        sim.state.set_condition(a.name, setup)
    sim.state.simulate_request(a.name, no_model=True)
    e = await entry(client, a.name)
    assert (e["status"], e["status_message"], e["unavailable"]) == ("error", message, unavailable)


async def test_auto_refresh_unauthorized(sim: SimServer, client: httpx.AsyncClient) -> None:
    """§2.3 B: background refresh answered 401 → error/"unauthorized", unavailable, no next_retry_after."""
    a = sim.state.add_credential("kimi")
    sim.state.revoke(a.name, "unauthorized", live=True)
    e = await entry(client, a.name)
    assert (e["status"], e["status_message"], e["unavailable"]) == ("error", "unauthorized", True)
    assert "next_retry_after" not in e


async def test_quota_and_deactivated_bodies(sim: SimServer, client: httpx.AsyncClient) -> None:
    """§2.3: 429 usage limit keeps its body and sets a retry from the reset; 402 deactivated_workspace."""
    q = sim.state.add_credential("codex", email="q@x.com")
    d = sim.state.add_credential("codex", email="d@x.com")
    sim.state.exhaust_quota(q.name, live=True, resets_in=3600)
    sim.state.deactivate_workspace(d.name, live=True)
    eq, ed = await entry(client, q.name), await entry(client, d.name)
    assert json.loads(eq["status_message"])["error"]["type"] == "usage_limit_reached"
    assert json.loads(ed["status_message"]) == {"detail": {"code": "deactivated_workspace"}}
    assert eq["unavailable"] and ed["unavailable"]


async def test_patch_status(sim: SimServer, client: httpx.AsyncClient) -> None:
    """§3/§11.6: disable persists `disabled` into the file and clears cooldown; enable → active."""
    a = sim.state.add_credential("codex", email="p@x.com")
    sim.state.revoke(a.name, live=True)
    r = await client.patch(
        "/auth-files/status", json={"name": a.name, "disabled": True, "auth_index": a.auth_index}
    )
    assert r.json() == {"status": "ok", "disabled": True}
    e = await entry(client, a.name)
    assert (e["status"], e["status_message"], e["disabled"], e["unavailable"]) == (
        "disabled",
        "disabled via management API",
        True,
        False,
    )
    assert "next_retry_after" not in e
    raw = (await client.get("/auth-files/download", params={"name": a.name})).json()
    assert raw["disabled"] is True
    r = await client.patch("/auth-files/status", json={"name": a.name, "disabled": False})
    e = await entry(client, a.name)
    assert (e["status"], e["status_message"], e["disabled"]) == ("active", "", False)
    for body, code, msg in [
        ({"name": a.name, "disabled": True, "auth_index": "0" * 16}, 404, "auth file not found"),
        ({"name": "nope.json", "disabled": True}, 404, "auth file not found"),
        ({"disabled": True}, 400, "name is required"),
        ({"name": a.name}, 400, "disabled is required"),
        ({"name": a.name, "disabled": "true"}, 400, "invalid request body"),
    ]:
        r = await client.patch("/auth-files/status", json=body)
        assert (r.status_code, r.json()) == (code, {"error": msg})


async def test_patch_fields(sim: SimServer, client: httpx.AsyncClient) -> None:
    """§3 PATCH /auth-files/fields: merges headers, validates weight, normalises kebab keys."""
    a = sim.state.add_credential("claude", email="f@x.com", extra={"headers": {"A": "1", "B": "2"}})
    r = await client.patch(
        "/auth-files/fields",
        json={
            "name": a.name,
            "prefix": "probe1",
            "proxy-url": "direct",
            "headers": {"A": "", "C": "3"},
            "weight": 3,
            "x.y": 1,
        },
    )
    assert r.json() == {"status": "ok"}
    raw = (await client.get("/auth-files/download", params={"name": a.name})).json()
    assert (raw["prefix"], raw["proxy_url"], raw["headers"], raw["weight"], raw["x"]) == (
        "probe1",
        "direct",
        {"B": "2", "C": "3"},
        3,
        {"y": 1},
    )
    for body, msg in [
        ({"name": a.name}, "no fields to update"),
        ({"prefix": "x"}, "name is required"),
        ({"name": a.name, "weight": "3"}, "weight must be an integer"),
        ({"name": a.name, "weight.x": 1}, "weight does not support nested fields"),
        ({"name": a.name, "request_retry": "x"}, "request_retry must be an integer or null"),
        (
            {"name": a.name, "note": "a", " note ": "b"},
            'auth file fields "note" and " note " refer to the same field',
        ),
    ]:
        r = await client.patch("/auth-files/fields", json=body)
        assert (r.status_code, r.json()) == (400, {"error": msg})
    r = await client.patch("/auth-files/fields", json={"name": "none.json", "note": "x"})
    assert (r.status_code, r.json()) == (404, {"error": "auth file not found"})
    r = await client.patch(
        "/auth-files/fields", json={"name": a.name, "proxy-url": "alias", "proxy_url": "canon"}
    )
    assert r.json() == {"status": "ok"}  # the canonical spelling wins silently
    r = await client.patch("/auth-files/fields", json={"name": a.name, "auth_index": a.auth_index})
    assert r.json() == {"status": "ok"}
    raw = (await client.get("/auth-files/download", params={"name": a.name})).json()
    assert (raw["proxy_url"], raw["auth_index"]) == ("canon", a.auth_index)  # CPA stores it as a field
    r = await client.patch("/auth-files/status", json={"name": a.name, "disabled": "true"})
    assert (r.status_code, r.json()) == (400, {"error": "invalid request body"})


async def test_patch_fields_refusing_one_key_changes_nothing(
    sim: SimServer, client: httpx.AsyncClient
) -> None:
    """auth_files_fields.go edits a clone (Manager.GetByID) and persists it only at the end: a 400 on a
    later key leaves the earlier ones unapplied, in memory and on disk."""
    a = sim.state.add_credential("claude", email="g@x.com", note="keep")
    before = dict(sim.state.disk[a.name].content)
    for bad, msg in [
        ({"a..b": 1}, "invalid field path: a..b"),  # setAuthFileMetadataValue's message
        ({"weight": 2.5}, "weight must be an integer"),
        ({"weight.x": 1}, "weight does not support nested fields"),
    ]:
        # Earlier keys in the body: a Go map has no order, so the refusal must not depend on position.
        body = {"name": a.name, "note": "changed", "prefix": "p1", "headers": {"X": "1"}, **bad}
        r = await client.patch("/auth-files/fields", json=body)
        assert (r.status_code, r.json()) == (400, {"error": msg})
        raw = (await client.get("/auth-files/download", params={"name": a.name})).json()
        assert raw == before
        assert sim.state.auths[a.name].metadata == before
        (entry,) = (await client.get("/auth-files", params={"name": a.name})).json()["files"]
        assert entry["note"] == "keep"


async def test_download_upload_delete(sim: SimServer, client: httpx.AsyncClient) -> None:
    """§3: download errors; invalid JSON never overwrites; upload registers at once; delete hides."""
    a = sim.state.add_credential("kimi", name="kimi-1.json")
    for name, code, msg in [
        ("", 400, "invalid name"),
        ("../x.json", 400, "invalid name"),
        ("x.txt", 400, "name must end with .json"),
        ("no.json", 404, "file not found"),
    ]:
        r = await client.get("/auth-files/download", params={"name": name})
        assert (r.status_code, r.json()) == (code, {"error": msg})
    r = await client.get("/auth-files/download", params={"name": a.name})
    assert r.headers["content-disposition"] == f'attachment; filename="{a.name}"'
    original = r.content
    r = await client.post("/auth-files", params={"name": a.name}, content=b"{not json")
    assert r.status_code == 500
    assert r.json()["error"].startswith("invalid auth file: ")
    assert (await client.get("/auth-files/download", params={"name": a.name})).content == original
    files = {"a": ("up-1.json", b'{"type":"claude","email":"z@x.com"}'), "b": ("bad.txt", b"{}")}
    r = await client.post("/auth-files", files=files)
    assert r.status_code == 207
    assert r.json() == {
        "status": "partial",
        "uploaded": 1,
        "files": ["up-1.json"],
        "failed": [{"name": "bad.txt", "error": "file must be .json"}],
    }
    assert (await entry(client, "up-1.json"))["status"] == "active"
    r = await client.request("DELETE", "/auth-files", params=[("name", "up-1.json"), ("name", "ghost.json")])
    assert r.status_code == 207
    assert r.json()["failed"] == [{"name": "ghost.json", "error": "auth file not found"}]
    assert (await client.get("/auth-files", params={"name": "up-1.json"})).json() == {"files": []}
    r = await client.request("DELETE", "/auth-files", json={"name": a.name})
    assert r.json() == {"status": "ok"}
    r = await client.request("DELETE", "/auth-files", params={"name": a.name})
    assert (r.status_code, r.json()) == (404, {"error": "auth file not found"})


async def test_models_and_reset_quota(sim: SimServer, client: httpx.AsyncClient) -> None:
    """§3: models by name (unknown → empty list); reset-quota by auth_index clears the error."""
    a = sim.state.add_credential("codex", email="z@x.com")
    assert [
        m["id"] for m in (await client.get("/auth-files/models", params={"name": a.name})).json()["models"]
    ]
    assert (await client.get("/auth-files/models", params={"name": "x.json"})).json() == {"models": []}
    assert (await client.get("/auth-files/models")).status_code == 400
    sim.state.exhaust_quota(a.name, live=True)
    r = await client.post("/reset-quota", json={"auth_index": a.auth_index})
    assert r.json() == {"status": "ok", "auth_index": a.auth_index, "models": ["gpt-5"]}
    e = await entry(client, a.name)
    assert (e["status"], e["status_message"], e["unavailable"]) == ("active", "", False)
    assert (await client.post("/reset-quota", json={"name": a.name})).json() == {
        "error": "auth_index is required"
    }
    assert (await client.post("/reset-quota", json={"auth_index": "f" * 16})).status_code == 404


async def test_runtime_only_and_memory_source(sim: SimServer, client: httpx.AsyncClient) -> None:
    """§2: runtime-only auths are listed unless disabled; a vanished file shows source memory."""
    sim.state.add_credential("claude", email="rt@x.com", runtime_only=True, name="rt.json")
    e = await entry(client, "rt.json")
    assert (e["runtime_only"], e["source"], e["size"]) == (True, "memory", 0)
    b = sim.state.add_credential("claude", email="gone@x.com")
    del sim.state.disk[b.name]
    b.touch()
    assert (await entry(client, b.name))["source"] == "memory"


async def test_listing_50k_is_fast(sim: SimServer, client: httpx.AsyncClient) -> None:
    """§12 "the list grows fast": bulk-generate many credentials; cached entries keep listing quick."""
    import time

    t0 = time.perf_counter()
    sim.state.bulk_generate(5000, failing_fraction=0.1)
    gen = time.perf_counter() - t0
    await client.get("/auth-files")
    t1 = time.perf_counter()
    r = await client.get("/auth-files")
    second = time.perf_counter() - t1
    files = r.json()["files"]
    assert len(files) == 5000
    assert 300 < sum(1 for f in files if f["status"] == "error") < 700
    assert gen < 5 and second < 2, (gen, second)


async def test_background_refresh_loop() -> None:
    """§2.3 B (opt-in loop): tokens inside their lead time are refreshed every 5 s; a refresh answered
    401 gives error/"unauthorized" without next_retry_after; a non-401 failure stays invisible."""
    async with (
        SimServer("k", auto_refresh=True) as sim,
        httpx.AsyncClient(
            base_url=f"{sim.base_url}/v0/management", headers={"Authorization": "Bearer k"}
        ) as c,
    ):
        fine = sim.state.add_credential("kimi", expires_in=60)
        dead = sim.state.add_credential("xai", email="x@x.com", expires_in=60)
        grant = sim.state.add_credential("antigravity", email="g@x.com", expires_in=60)
        later = sim.state.add_credential("claude", email="c@x.com")  # 8 h left, lead 4 h: not yet
        sim.state.revoke(dead.name, "unauthorized")
        sim.state.revoke(grant.name, "invalid_grant")
        token, later_token = fine.access_token, later.access_token
        sim.state.advance(5.1)
        assert fine.access_token != token
        files = {f["name"]: f for f in (await c.get("/auth-files")).json()["files"]}
        assert (files[fine.name]["status"], files[fine.name]["status_message"]) == ("active", "")
        assert (files[dead.name]["status"], files[dead.name]["status_message"]) == ("error", "unauthorized")
        assert files[dead.name]["unavailable"] is True
        assert "next_retry_after" not in files[dead.name]
        assert (files[grant.name]["status"], files[grant.name]["status_message"]) == ("active", "")
        assert later.access_token == later_token
        sim.state.advance(4 * 3600 + 5)
        assert later.access_token != later_token


async def test_relogin_as_and_expired(sim: SimServer, client: httpx.AsyncClient) -> None:
    """Control API: `expired` sets the file's expiry; relogin_as signs the next login into the same account."""
    a = sim.state.add_credential("codex", email="same@x.com", plan="plus", expired="2020-01-01T00:00:00Z")
    raw = (await client.get("/auth-files/download", params={"name": a.name})).json()
    assert raw["expired"].startswith("2020-01-01")
    sim.state.relogin_as(a.name, plan="pro")
    st = (await client.get("/codex-auth-url")).json()["state"]
    await client.post("/oauth-callback", json={"redirect_url": sim.state.provider_login(st)})
    sim.state.advance(2)
    names = sorted(f["name"] for f in (await client.get("/auth-files")).json()["files"])
    assert names == sorted([a.name, a.name.replace("-plus.json", "-pro.json")])


async def test_cloudflare_challenge_message(sim: SimServer, client: httpx.AsyncClient) -> None:
    """§2.3 A.4: a Cloudflare challenge sets status_message "cloudflare challenge" (model path too)."""
    a = sim.state.add_credential("codex", email="cf@x.com")
    sim.state.set_condition(a.name, "cloudflare", live=True)
    e = await entry(client, a.name)
    assert (e["status"], e["status_message"]) == ("error", "cloudflare challenge")


async def test_success_clears_error(sim: SimServer, client: httpx.AsyncClient) -> None:
    """§2.3 C: a successful request on the model clears the error when no other model is in error."""
    a = sim.state.add_credential("codex", email="ok@x.com")
    sim.state.set_condition(a.name, "transient", live=True)
    assert (await entry(client, a.name))["status"] == "error"
    sim.state.set_condition(a.name, "ok", live=True)
    e = await entry(client, a.name)
    assert (e["status"], e["status_message"], e["unavailable"]) == ("active", "", False)


async def test_disabled_file_at_load_and_account_kind(sim: SimServer, client: httpx.AsyncClient) -> None:
    """synthesizer/file.go: `"disabled": true` in the file gives status disabled with an empty message;
    AccountInfo: every file auth is account_type oauth, `account` only with an email (§2.1)."""
    off = sim.state.add_credential("kimi", name="kimi-9.json", disabled=True)
    e = await entry(client, off.name)
    assert (e["status"], e["status_message"], e["disabled"]) == ("disabled", "", True)
    assert e["account_type"] == "oauth"
    assert "account" not in e
    assert "email" not in e


async def test_restart_forgets_runtime_state(
    sim: SimServer, client: httpx.AsyncClient, anon: httpx.AsyncClient
) -> None:
    """§2.2/§2.3 C: after a CPA restart every file auth starts active (or disabled), counters reset,
    auth_index unchanged; the dead token is still dead upstream."""
    a = sim.state.add_credential("codex", email="rs@x.com")
    off = sim.state.add_credential("claude", email="off@x.com", disabled=True)
    sim.state.revoke(a.name, live=True)
    assert (await anon.post("/_sim/restart")).json() == {"status": "ok"}
    files = {f["name"]: f for f in (await client.get("/auth-files")).json()["files"]}
    assert (files[a.name]["status"], files[a.name]["status_message"], files[a.name]["failed"]) == (
        "active",
        "",
        0,
    )
    assert files[a.name]["auth_index"] == a.auth_index
    assert files[off.name]["status"] == "disabled"
    assert sim.state.simulate_request(a.name).status == 401
