"""The simulator's control API under `/_sim/` and the fake provider login pages.

Unauthenticated and clearly apart from CPA's routes; every operation is also a method of SimState.
"""

from __future__ import annotations

import html
import json
from typing import Any
from urllib.parse import urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from reauthd.sim import flows, scenarios
from reauthd.sim.credentials import Identity
from reauthd.sim.responses import read_form
from reauthd.sim.state import SimState
from reauthd.sim.upstream import dumps


def ok(payload: Any = None, status: int = 200) -> Response:
    return Response(
        dumps({"status": "ok"} if payload is None else payload).encode(),
        status,
        media_type="application/json",
    )


def bad(message: str, status: int = 400) -> Response:
    return Response(dumps({"error": message}).encode(), status, media_type="application/json")


def summary(state: SimState, name: str) -> dict[str, Any]:
    auth = scenarios.find(state, name)
    return {
        "name": auth.name,
        "auth_index": auth.auth_index,
        "provider": auth.provider,
        "email": auth.metadata.get("email", ""),
        "status": auth.status,
    }


async def handle(request: Request, state: SimState) -> Response:
    path = request.url.path.removeprefix("/_sim")
    if path.startswith("/provider/"):
        return await provider_page(request, state, path.removeprefix("/provider/"))
    body: dict[str, Any] = {}
    if request.method in ("POST", "PUT", "PATCH"):
        raw = await request.body()
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            return bad("invalid json")
        if not isinstance(parsed, dict):
            return bad("body must be an object")
        body = parsed
    try:
        return dispatch(request.method, path, body, state)
    except scenarios.UnknownCredential as exc:
        return bad(f"unknown credential {exc}", 404)
    except (ValueError, TypeError) as exc:
        return bad(str(exc))


CONTROL_ROUTES = [
    "POST /_sim/credentials {provider, email?, plan?, account_id?, project_id?, name?, disabled?, prefix?, "
    "note?, priority?, runtime_only?, expires_in?|expired?, extra?, subscription_until?}",
    "POST /_sim/credentials/bulk {count, providers?, failing_fraction?, seed?, live?}",
    "GET  /_sim/credentials/{name|auth_index}/file",
    "POST /_sim/credentials/{name}/revoke {kind?, live?}  kinds: token_invalidated, refresh_token_reused, "
    "claude_revoked, invalid_grant, xai_bad_credentials, unauthorized, vertex_key_deleted",
    "POST /_sim/credentials/{name}/condition {condition: ok|quota|deactivated|cloudflare|transient, live?}",
    "POST /_sim/credentials/{name}/request {model?, no_model?}",
    "POST /_sim/credentials/{name}/auto-refresh",
    "POST /_sim/credentials/{name}/neutral-failure {code?: request_scoped|connection_lifecycle, status?, model?}",
    "POST /_sim/credentials/{name}/probe {status|null, body}",
    "POST /_sim/credentials/{name}/relogin-as {plan?, exchange_fails?}",
    "POST /_sim/next-login {provider?, email?, plan?, account_id?, project_id?, exchange_fails?}",
    "POST /_sim/oauth/{state}/login {email?, plan?, account_id?, deny?} -> {callback_url}",
    "POST /_sim/oauth/{state}/approve {email?}",
    "POST /_sim/faults {kind, path?, method?, count?|null, status?, body?, delay?}   DELETE /_sim/faults",
    "POST /_sim/resp/disconnect  (close every RESP connection)",
    "POST /_sim/clock/advance {seconds}   GET /_sim/clock",
    "POST /_sim/timing {watcher_delay?, exchange_delay?, device_poll_interval?, auto_refresh?}",
    "GET  /_sim/oplog   GET /_sim/counters   POST /_sim/restart (CPA restart)   POST /_sim/reset",
]


def dispatch(method: str, path: str, body: dict[str, Any], state: SimState) -> Response:
    parts = [p for p in path.split("/") if p]
    if method == "POST" and parts == ["credentials"]:
        auth = scenarios.add_credential(state, **body)
        return ok(summary(state, auth.name))
    if method == "POST" and parts == ["credentials", "bulk"]:
        provs = body.get("providers")
        names = scenarios.bulk_generate(
            state,
            int(body.get("count", 0)),
            providers=tuple(provs) if provs else None,
            failing_fraction=float(body.get("failing_fraction", 0.0)),
            seed=int(body.get("seed", 0)),
            live=bool(body.get("live", True)),
        )
        return ok({"status": "ok", "created": len(names)})
    if len(parts) == 3 and parts[0] == "credentials":
        name, action = parts[1], parts[2]
        if method == "GET" and action == "file":
            disk = state.disk.get(scenarios.find(state, name).name)
            return ok(disk.content if disk else None)
        if method != "POST":
            return bad("not found", 404)
        if action == "revoke":
            scenarios.revoke(state, name, body.get("kind"), live=bool(body.get("live", False)))
        elif action == "condition":
            scenarios.set_condition(
                state,
                name,
                str(body["condition"]),
                live=bool(body.get("live", False)),
                resets_in=float(body.get("resets_in", 5 * 3600)),
            )
        elif action == "request":
            ans = scenarios.simulate_request(
                state, name, body.get("model"), no_model=bool(body.get("no_model", False))
            )
            return ok({"status_code": ans.status, "body": ans.body})
        elif action == "neutral-failure":
            event = scenarios.neutral_failure(
                state,
                name,
                code=str(body.get("code", "request_scoped")),
                status=int(body.get("status", 401)),
                model=str(body.get("model", "")),
            )
            return ok({"status": "ok", "event": event})
        elif action == "auto-refresh":
            ans = scenarios.auto_refresh(state, scenarios.find(state, name))
            return ok({"status_code": ans.status, "body": ans.body})
        elif action == "relogin-as":
            scenarios.relogin_as(
                state, name, plan=body.get("plan"), exchange_fails=bool(body.get("exchange_fails", False))
            )
        elif action == "probe":
            status = body.get("status")
            scenarios.set_probe(
                state, name, int(status) if status is not None else None, str(body.get("body", ""))
            )
        else:
            return bad("not found", 404)
        return ok(summary(state, name))
    if len(parts) == 3 and parts[0] == "oauth" and method == "POST":
        if parts[2] == "login":  # a person signing in at the provider page, without a browser
            url = state.provider_login(
                parts[1],
                email=body.get("email"),
                plan=str(body.get("plan", "")),
                account_id=str(body.get("account_id", "")),
                deny=bool(body.get("deny", False)),
            )
            return ok({"status": "ok", "callback_url": url})
        if parts[2] == "approve":  # a person approving a device code
            return ok({"status": "ok", "approved": state.approve_device(parts[1], email=body.get("email"))})
    if parts == [] and method == "GET":
        return ok({"routes": CONTROL_ROUTES})
    if parts == ["faults"] and method == "POST":
        scenarios.inject_fault(state, str(body.pop("kind", "")), **body)
        return ok()
    if parts == ["resp", "disconnect"] and method == "POST":
        return ok({"status": "ok", "closed": state.disconnect_resp()})
    if parts == ["faults"] and method == "DELETE":
        state.faults.clear()
        return ok()
    if parts == ["next-login"] and method == "POST":
        scenarios.set_next_login(state, **body)
        return ok()
    if parts == ["clock", "advance"] and method == "POST":
        return ok({"status": "ok", "now": state.advance(float(body.get("seconds", 0))).isoformat()})
    if parts == ["clock"] and method == "GET":
        return ok({"now": state.now().isoformat(), "offset_seconds": state.clock.offset_seconds})
    if parts == ["timing"] and method == "POST":
        for key in ("watcher_delay", "exchange_delay", "device_poll_interval"):
            if key in body:
                setattr(state.settings, key, float(body[key]))
        if "auto_refresh" in body:
            state.enable_auto_refresh(bool(body["auto_refresh"]))
        return ok()
    if parts == ["oplog"] and method == "GET":
        return ok(state.oplog)
    if parts == ["counters"] and method == "GET":
        return ok(scenarios.counters(state))
    if parts == ["restart"] and method == "POST":
        state.restart()
        return ok()
    if parts == ["reset"] and method == "POST":
        state.reset()
        return ok()
    return bad("not found", 404)


# -- fake provider pages ---------------------------------------------------------------------------

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title></head>
<body><h1>{title}</h1>{content}</body></html>"""


async def provider_page(request: Request, state: SimState, rest: str) -> Response:
    provider, _, page = rest.partition("/")
    if page == "authorize":
        return await authorize_page(request, state, provider)
    if page == "device":
        return await device_page(request, state, provider)
    return HTMLResponse(PAGE.format(title="Not found", content=""), 404)


def _login_defaults(state: SimState, provider: str, file_type: str) -> Identity:
    """Who the sign-in form proposes: the identity a test staged, else an account of this provider whose
    sign-in is dead (a person re-authorizing signs back into the same account), else a fresh one."""
    plan = state.next_login.get(provider) or state.next_login.get("*")
    if plan is not None and plan.identity is not None:
        return plan.identity
    for auth in sorted(state.auths.values(), key=lambda a: (a.status != "error", a.name)):
        if auth.provider != file_type:
            continue
        access = state.upstream.access.get(scenarios.token_of(auth))
        refresh = state.upstream.refresh.get(str(auth.metadata.get("refresh_token", "")))
        dead = (access is not None and access.dead_kind) or (refresh is not None and refresh.dead_kind)
        if dead or auth.status == "error":
            return scenarios.identity_of(state, auth.name)
    return Identity.fresh(file_type)


async def authorize_page(request: Request, state: SimState, provider: str) -> Response:
    """Sign-in form; on submit a 302 to the real localhost callback, as the provider does."""
    from reauthd.sim.oauth import CALLBACK_PROVIDERS

    file_type = CALLBACK_PROVIDERS[provider][0] if provider in CALLBACK_PROVIDERS else provider
    if request.method == "GET":
        q = request.query_params
        ident = _login_defaults(state, provider, file_type)
        fields = "".join(
            f'<p><label>{label} <input name="{key}" value="{html.escape(value)}"></label></p>'
            for key, label, value in (
                ("email", "Account e-mail", ident.email),
                ("plan", "Plan", ident.plan),
                ("account_id", "Account id", ident.account_id),
            )
        )
        hidden = "".join(
            f'<input type="hidden" name="{k}" value="{html.escape(q.get(k, ""))}">'
            for k in ("state", "redirect_uri")
        )
        form = (
            f"<p>Sign in to continue to CLIProxyAPI ({html.escape(provider)}).</p>"
            f'<form method="post">{hidden}{fields}<button type="submit" name="action" '
            f'value="allow">Sign in and allow</button> <button type="submit" name="action" '
            f'value="deny">Cancel</button></form>'
        )
        return HTMLResponse(PAGE.format(title=f"Sign in — {html.escape(provider)} (simulated)", content=form))
    form_data, _ = await read_form(request)
    st = str(form_data.get("state", ""))
    redirect = str(form_data.get("redirect_uri", ""))
    if not redirect or urlsplit(redirect).hostname not in ("localhost", "127.0.0.1"):
        return HTMLResponse(PAGE.format(title="Invalid request", content="bad redirect_uri"), 400)
    if form_data.get("action") == "deny":
        return RedirectResponse(f"{redirect}?{urlencode({'error': 'access_denied', 'state': st})}", 302)
    ident = Identity(
        file_type,
        str(form_data.get("email", "")).strip(),
        str(form_data.get("account_id", "")).strip(),
        str(form_data.get("plan", "")).strip(),
    )
    code = flows.issue_code(state, provider, st, ident if ident.email else None)
    return RedirectResponse(f"{redirect}?{urlencode({'code': code, 'state': st})}", 302)


async def device_page(request: Request, state: SimState, provider: str) -> Response:
    """The verification page of a device flow; approval completes the session at the next poll."""
    now = state.now()
    if request.method == "GET":
        user_code = request.query_params.get("user_code", "")
        ident = _login_defaults(state, provider, provider)
        form = (
            f"<p>Confirm the code <strong>{html.escape(user_code)}</strong> shown by the app.</p>"
            f'<form method="post"><input type="hidden" name="user_code" value="{html.escape(user_code)}">'
            f'<p><label>Account e-mail <input name="email" value="{html.escape(ident.email)}"></label></p>'
            f'<button type="submit" name="action" value="approve">Approve</button> '
            f'<button type="submit" name="action" value="deny">Deny</button></form>'
        )
        return HTMLResponse(
            PAGE.format(title=f"Device login — {html.escape(provider)} (simulated)", content=form)
        )
    form_data, _ = await read_form(request)
    user_code = str(form_data.get("user_code", ""))
    session = next(
        (
            s
            for s in state.sessions.sessions.values()
            if s.flow == "device" and s.user_code == user_code and s.provider == provider
        ),
        None,
    )
    if session is None or not state.sessions.is_pending(session.state, now):
        return HTMLResponse(PAGE.format(title="Code expired", content="<p>This code is not valid.</p>"), 400)
    if form_data.get("action") == "deny":
        session.denied = True
        return HTMLResponse(PAGE.format(title="Denied", content="<p>Access denied.</p>"))
    email = str(form_data.get("email", "")).strip()
    ident, fails = flows.device_identity(state, provider, Identity(provider, email) if email else None)
    if fails:
        session.denied = True
    else:
        session.approved = ident
    return HTMLResponse(PAGE.format(title="Approved", content="<p>You can return to the app.</p>"))
