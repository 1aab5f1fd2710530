"""What happens to credentials: proxied requests, refreshes, and the control operations on them.

Request path per shared/cpa-contract.md §2.3 A/B and §9.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta
from typing import Any

from reauthd.sim.auths import Failure, SimAuth, content_hash
from reauthd.sim.clock import go_time
from reauthd.sim.credentials import ACCESS_LIFETIME, PROVIDERS, Identity, file_content
from reauthd.sim.state import DiskFile, Fault, LoginPlan, SimState
from reauthd.sim.upstream import DEFAULT_REVOCATION, PROVIDER_MODELS, REVOCATION_KINDS, UpstreamAnswer, dumps


class UnknownCredential(LookupError):
    """The control API named a credential the simulator does not hold."""


def _json(body: str) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def classify(provider: str, ans: UpstreamAnswer) -> tuple[int, str]:
    """The executors' rewrites: Codex auth errors → auth_unavailable (code dropped); xAI 403 → 401."""
    status, body = ans.status, ans.body
    if status == 200:
        return status, body
    if (
        provider == "xai"
        and status == 403
        and ("bad-credentials" in body or "access token could not be validated" in body)
    ):
        return 401, body
    if provider == "codex":
        err = _json(body).get("error")
        err = err if isinstance(err, dict) else {}
        if (
            status == 401
            or err.get("type") == "authentication_error"
            or err.get("code") == "invalid_api_key"
            or "invalid or expired token" in body
            or "refresh_token_reused" in body
        ):
            message = err.get("message") or body
            return 401, dumps(
                {"error": {"message": message, "type": "authentication_error", "code": "auth_unavailable"}}
            )
    return status, body


def request_scoped(status: int, body: str) -> bool:
    """internal/clienterror/client_error.go: faults of the request, not of the credential."""
    if status in (400, 409, 413, 422) and "invalid_grant" not in body:
        return True
    parsed = _json(body)
    err = parsed.get("error") if isinstance(parsed.get("error"), dict) else parsed
    if not isinstance(err, dict):
        return False
    if "invalid_request_error" in (err.get("type"), err.get("code")):
        return not (status == 401 and err.get("type") == "authentication_error")
    return False


def token_of(auth: SimAuth) -> str:
    if auth.provider == "vertex":
        sa = auth.metadata.get("service_account")
        return str(sa.get("private_key_id", "")) if isinstance(sa, dict) else ""
    return auth.access_token


def refresh(state: SimState, auth: SimAuth) -> UpstreamAnswer:
    """One refresh; on success the new tokens go to memory and the file (no model-state reset)."""
    now = state.now()
    rt = auth.metadata.get("refresh_token")
    ans = state.upstream.refresh_with(auth.provider, rt if isinstance(rt, str) else "")
    if ans.status != 200:
        return ans
    old = state.upstream.refresh[str(rt)]
    acct = state.upstream.accounts[old.account]
    old.dead_kind = "refresh_token_reused"  # rotation: the used refresh token is spent
    expires = now + ACCESS_LIFETIME.get(auth.provider, timedelta(hours=1))
    access, new_rt = state.upstream.mint(acct, expires)
    auth.metadata.update(
        {
            "access_token": access,
            "refresh_token": new_rt,
            "expired": expires.isoformat(),
            "last_refresh": now.isoformat(),
        }
    )
    auth.last_refreshed_at = now
    for model, ms in list(auth.model_states.items()):
        if ms.status == "error" and auth.last_error and auth.last_error.get("http_status") == 401:
            del auth.model_states[model]
    state.persist_runtime(auth)
    return ans


def execute(state: SimState, auth: SimAuth, model: str | None) -> UpstreamAnswer:
    """A proxied request served by this auth: refresh once on 401, then MarkResult (§2.3 A)."""
    now = state.now()
    first = state.upstream.request(auth.provider, token_of(auth), model or "", now)
    status, body = classify(auth.provider, first)
    retry_after = first.retry_after_s
    if status == 401 and auth.metadata.get("refresh_token"):
        # tryRefreshAfterUnauthorized: one refresh, one retry; only a 401 refresh failure is visible.
        ref = refresh(state, auth)
        if ref.status == 200:
            ans = state.upstream.request(auth.provider, token_of(auth), model or "", now)
            status, body = classify(auth.provider, ans)
            retry_after = ans.retry_after_s
        elif ref.status == 401:
            auth.mark_refresh_unauthorized(ref.body)
        else:
            auth.next_refresh_after = now + timedelta(minutes=5)
    if status == 200:
        auth.mark_success(model, now)
        _usage(state, auth, model, 200, "")
        return UpstreamAnswer(200, body)
    if request_scoped(status, body):
        return UpstreamAnswer(status, body)
    failure = Failure(status, body, model, retry_after, cloudflare="Just a moment" in body)
    auth.mark_failure(failure, now)
    state.publish("errors", auth.error_event(failure, now))
    _usage(state, auth, model, status, body)
    return UpstreamAnswer(status, body)


# sdk/cliproxy/auth/errors.go: failures CPA does not hold against the credential.
NEUTRAL_ERROR_CODES = ("request_scoped", "connection_lifecycle")


def neutral_failure(
    state: SimState, name: str, *, code: str = "request_scoped", status: int = 401, model: str = ""
) -> dict[str, Any]:
    """A failed request CPA does not count against the credential (conductor_cooldown.go
    resultErrorFromError sets `code` request_scoped or connection_lifecycle; shouldSkipCredentialCooldown
    then leaves status and cooldowns alone). MarkResult still counts it (failed, recent requests) and
    publishErrorEvent still publishes it on the `errors` channel with that `code` and the unchanged
    auth status (error_events.go buildErrorEventPayload: `code` is the result's own error code).
    Since 2026-08-15 some 401s are request-scoped (contract §7, §13). Returns the event."""
    if code not in NEUTRAL_ERROR_CODES:
        raise ValueError(f"code must be one of {', '.join(NEUTRAL_ERROR_CODES)}")
    auth = find(state, name)
    now = state.now()
    auth.failed += 1
    auth.record_recent(now, False)
    auth.touch()
    body = dumps(
        {"error": {"message": "request-scoped failure (simulated)", "type": "invalid_request_error"}}
    )
    event = auth.error_event(Failure(status, body, model or None, None), now)
    event["code"] = code
    event.pop("retryable", None)
    state.publish("errors", event)
    return event


def _usage(state: SimState, auth: SimAuth, model: str | None, status: int, body: str) -> None:
    if not state.settings.usage_statistics:
        return
    state.publish(
        "usage",
        {
            "timestamp": go_time(state.now()),
            "latency_ms": 420,
            "source": auth.metadata.get("email", ""),
            "auth_index": auth.auth_index,
            "provider": auth.provider,
            "model": model or "",
            "failed": status != 200,
            "fail": {"status_code": status, "body": body},
            "auth_type": "oauth",
            "tokens": {"input_tokens": 12, "output_tokens": 3, "total_tokens": 15},
        },
    )


def auto_refresh(state: SimState, auth: SimAuth) -> UpstreamAnswer:
    """The background refresh loop's attempt (§2.3 B): only a 401 is visible."""
    ans = refresh(state, auth)
    if ans.status == 401:
        auth.mark_refresh_unauthorized(ans.body)
    return ans


# -- control operations ----------------------------------------------------------------------------


def add_credential(
    state: SimState,
    provider: str,
    *,
    email: str | None = None,
    plan: str | None = None,
    account_id: str | None = None,
    project_id: str | None = None,
    name: str | None = None,
    disabled: bool = False,
    prefix: str | None = None,
    note: str | None = None,
    priority: int | None = None,
    runtime_only: bool = False,
    expires_in: float | None = None,
    expired: datetime | str | None = None,
    extra: dict[str, Any] | None = None,
    subscription_until: datetime | str | None = None,
) -> SimAuth:
    """A credential that already exists when the scenario starts (registered at once, no watcher lag).

    `subscription_until` (a datetime or ISO string): Codex's id_token `chatgpt_subscription_active_until`.

    `expires_in` (seconds from now, may be negative) or `expired` (a datetime or ISO string) set the
    access token's expiry, written to the file's `expired` as CPA does.
    """
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}")
    now = state.now()
    if expired is not None:
        when = datetime.fromisoformat(expired.replace("Z", "+00:00")) if isinstance(expired, str) else expired
        expires_in = (when - now).total_seconds()
    ident = Identity.fresh(provider)
    ident.email = email if email is not None else ident.email
    ident.plan = plan if plan is not None else ident.plan
    ident.account_id = account_id if account_id is not None else ident.account_id
    ident.project_id = project_id if project_id is not None else ident.project_id
    if isinstance(subscription_until, str):
        subscription_until = datetime.fromisoformat(subscription_until.replace("Z", "+00:00"))
    ident.subscription_until = subscription_until
    return _install(
        state,
        ident,
        now,
        name=name,
        disabled=disabled,
        prefix=prefix,
        note=note,
        priority=priority,
        runtime_only=runtime_only,
        expires_in=expires_in,
        extra=extra,
    )


def _install(
    state: SimState,
    ident: Identity,
    now: datetime,
    *,
    name: str | None,
    disabled: bool = False,
    prefix: str | None = None,
    note: str | None = None,
    priority: int | None = None,
    runtime_only: bool = False,
    expires_in: float | None = None,
    extra: dict[str, Any] | None = None,
) -> SimAuth:
    from reauthd.sim.credentials import file_name_for

    acct = state.upstream.account(
        ident.provider, ident.email, account_id=ident.account_id, plan=ident.plan, project_id=ident.project_id
    )
    lifetime = (
        timedelta(seconds=expires_in)
        if expires_in is not None
        else ACCESS_LIFETIME.get(ident.provider, timedelta(hours=1))
    )
    expires = now + lifetime
    access, rt = state.upstream.mint(acct, expires if ident.provider != "vertex" else None)
    content = file_content(ident, access, rt, now, expires if ident.provider != "vertex" else None)
    content["disabled"] = disabled
    for key, value in (("prefix", prefix), ("note", note), ("priority", priority)):
        if value is not None:
            content[key] = value
    content.update(extra or {})
    fname = name or file_name_for(ident, now)
    if fname in state.auths and name is None and ident.provider == "kimi":
        fname = fname.replace(".json", f"-{len(state.auths)}.json")
    if not runtime_only:
        state.write_file(fname, content, reload=False)
    return state.register(fname, content, runtime_only=runtime_only)


def bulk_generate(
    state: SimState,
    count: int,
    *,
    providers: tuple[str, ...] | None = None,
    failing_fraction: float = 0.0,
    seed: int = 0,
    live: bool = True,
) -> list[str]:
    """N credentials of mixed providers; a fraction revoked (and, with `live`, marked by a request)."""
    rng = random.Random(seed)
    provs = providers or ("codex", "claude", "antigravity", "kimi", "xai")
    now = state.now()
    names = []
    for i in range(count):
        ident = Identity.fresh(provs[i % len(provs)], n=len(state.auths) + i)
        fname = f"{ident.provider}-bulk{i:06d}-{ident.email}.json"
        auth = _install(state, ident, now, name=fname)
        names.append(auth.name)
        if rng.random() < failing_fraction:
            revoke(state, auth.name, live=live)
    state.listing()  # serialise every entry now, so a benchmark's first listing measures the client
    return names


def find(state: SimState, name: str) -> SimAuth:
    auth = state.auth_by_name(name) or state.by_index.get(name)
    if auth is None:
        raise UnknownCredential(name)
    return auth


def revoke(state: SimState, name: str, kind: str | None = None, *, live: bool = False) -> SimAuth:
    """Kill the credential's tokens upstream. `live` also sends one request through it (or, for
    kind "unauthorized", lets the auto-refresh loop fail); otherwise only probes can tell."""
    auth = find(state, name)
    kind = kind or DEFAULT_REVOCATION.get(auth.provider, "unauthorized")
    if kind not in REVOCATION_KINDS:
        raise ValueError(f"unknown revocation kind {kind!r}")
    access, rt = token_of(auth), str(auth.metadata.get("refresh_token", ""))
    state.upstream.kill(access, rt, kind)
    if kind in ("unauthorized", "refresh_token_reused", "invalid_grant"):
        rec = state.upstream.access.get(access)
        if rec is not None:  # the access token is merely expired: the refresh decides
            rec.dead_kind = None
            rec.expires_at = state.now() - timedelta(seconds=1)
            _expire_on_file(state, auth, rec.expires_at)
    if live:
        if kind == "unauthorized":
            auto_refresh(state, auth)
        else:
            execute(state, auth, PROVIDER_MODELS.get(auth.provider, ("model",))[0])
    return auth


def _expire_on_file(state: SimState, auth: SimAuth, when: datetime) -> None:
    """In CPA `expired` comes from the token endpoint with the access token (contract §5, §8): a token
    the provider treats as expired is past `expired` in memory and on disk too. Time has passed, nobody
    wrote the file: the disk copy keeps its mtime and the watcher is not woken."""
    if not isinstance(auth.metadata.get("expired"), str):
        return  # no expiry recorded (Vertex, some Kimi files): nothing to keep in step
    stamp = when.isoformat()
    auth.metadata = {**auth.metadata, "expired": stamp}
    auth.touch()
    disk = state.disk.get(auth.name)
    if disk is not None and not auth.runtime_only:
        in_step = auth.loaded_hash == content_hash(disk.content)
        content = {**disk.content, "expired": stamp}
        raw = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
        state.disk[auth.name] = DiskFile(content, raw, disk.mtime)
        if in_step:  # a later watcher pass must not take this for a new file and reset the auth
            auth.loaded_hash = content_hash(content)


def set_condition(
    state: SimState, name: str, condition: str, *, live: bool = False, resets_in: float = 5 * 3600
) -> SimAuth:
    """Account-level trouble: quota, deactivated, cloudflare, transient, ok."""
    auth = find(state, name)
    rec = state.upstream.access.get(token_of(auth))
    if rec is None:
        raise UnknownCredential(name)
    acct = state.upstream.accounts[rec.account]
    acct.condition = condition
    acct.quota_resets_at = state.now() + timedelta(seconds=resets_in) if condition == "quota" else None
    if live:
        execute(state, auth, PROVIDER_MODELS.get(auth.provider, ("model",))[0])
    return auth


def set_probe(state: SimState, name: str, status: int | None, body: str = "") -> None:
    """Make this credential's current token answer probes with a fixed status/body (None clears)."""
    auth = find(state, name)
    rec = state.upstream.access.get(token_of(auth))
    if rec is None:
        raise UnknownCredential(name)
    rec.probe_override = None if status is None else (status, body)


def simulate_request(
    state: SimState, name: str, model: str | None = None, *, no_model: bool = False
) -> UpstreamAnswer:
    auth = find(state, name)
    use = None if no_model else (model or PROVIDER_MODELS.get(auth.provider, ("model",))[0])
    return execute(state, auth, use)


def identity_of(state: SimState, name: str) -> Identity:
    """The upstream account behind a credential, e.g. to log in again as the same person."""
    auth = find(state, name)
    rec = state.upstream.access.get(token_of(auth))
    if rec is None:
        email = auth.metadata.get("email")
        return Identity(auth.provider, email if isinstance(email, str) else "")
    acct = state.upstream.accounts[rec.account]
    return Identity(auth.provider, acct.email, acct.account_id, acct.plan, acct.project_id)


def relogin_as(state: SimState, name: str, *, plan: str | None = None, exchange_fails: bool = False) -> None:
    """The next login signs into the same account as credential `name` (optionally with a new plan)."""
    ident = identity_of(state, name)
    if plan is not None:
        ident.plan = plan
    session_provider = "anthropic" if ident.provider == "claude" else ident.provider
    state.next_login[session_provider] = LoginPlan(ident, exchange_fails)


# sdk/auth/*.go RefreshLead: how long before expiry the background loop refreshes.
REFRESH_LEAD: dict[str, timedelta] = {
    "codex": timedelta(days=5),
    "claude": timedelta(hours=4),
    "antigravity": timedelta(minutes=5),
    "kimi": timedelta(minutes=5),
    "xai": timedelta(minutes=5),
}
AUTO_REFRESH_EVERY = 5.0


def auto_refresh_tick(state: SimState) -> None:
    """One pass of CPA's 5-second refresh loop (§2.3 B): refresh what is inside its lead time, skipping
    disabled auths, auths whose last error was a 401 and auths told to wait (NextRefreshAfter)."""
    now = state.now()
    for auth in list(state.auths.values()):
        lead = REFRESH_LEAD.get(auth.provider)
        expired = auth.metadata.get("expired")
        if (
            lead is None
            or auth.disabled
            or not auth.metadata.get("refresh_token")
            or not isinstance(expired, str)
        ):
            continue
        if auth.last_error and (
            auth.last_error.get("http_status") == 401 or auth.last_error.get("code") == "unauthorized"
        ):
            continue
        if auth.next_refresh_after is not None and auth.next_refresh_after > now:
            continue
        try:
            when = datetime.fromisoformat(expired.replace("Z", "+00:00"))
        except ValueError:
            continue
        if when - lead > now:
            continue
        if auto_refresh(state, auth).status not in (200, 401):
            auth.next_refresh_after = now + timedelta(minutes=5)


def set_next_login(
    state: SimState,
    provider: str = "*",
    *,
    email: str | None = None,
    plan: str | None = None,
    account_id: str | None = None,
    project_id: str | None = None,
    exchange_fails: bool = False,
) -> None:
    """The identity the next login at the fake provider page signs into (None fields: fresh)."""
    ident = None
    if email is not None:
        ident = Identity(provider, email, account_id or "", plan or "", project_id or "")
    state.next_login[provider] = LoginPlan(ident, exchange_fails)


def inject_fault(
    state: SimState,
    kind: str,
    *,
    path: str = "",
    method: str = "",
    count: int | None = 1,
    status: int = 500,
    body: str = "",
    delay: float = 0.0,
) -> None:
    kinds = {
        "status",
        "slow",
        "drop",
        "outage",
        "malformed_json",
        "missing_fields",
        "unknown_status",
        "huge_body",
        "drop_after",
        "disk_fallback",  # GET /auth-files answers like CPA without an auth manager (app.py)
    }
    if kind not in kinds:
        raise ValueError(f"unknown fault {kind!r}; one of {sorted(kinds)}")
    state.faults.append(Fault(kind, path, method, count, status, body, delay))


def counters(state: SimState) -> dict[str, Any]:
    c = state.counters
    return {
        "failed_key_attempts": dict(c.failed_key_attempts),
        "list_requests": c.list_requests,
        "api_calls": c.api_calls,
        "management_requests": c.management_requests,
        "credentials": len(state.auths),
        "banned": {ip: round(state.ban_remaining(ip)) for ip in state.bans if state.ban_remaining(ip)},
    }
