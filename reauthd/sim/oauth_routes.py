"""The OAuth management routes: auth URLs, get-auth-status, cancel and the oauth-callback checks.

The callback is unauthenticated and checks in the exact order of contract §4.3 (oauth_callback.go).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from reauthd.sim import flows
from reauthd.sim.oauth import CALLBACK_PROVIDERS, DEVICE_PROVIDERS, normalize_provider, valid_state
from reauthd.sim.responses import Handler, gin_json, read_json
from reauthd.sim.state import SimState


def _is_webui(request: Request) -> bool:
    """isWebUIRequest (auth_files_oauth_callback.go): `is_webui` = 1/true/yes/on, any case."""
    return request.query_params.get("is_webui", "").strip().lower() in ("1", "true", "yes", "on")


def auth_url_handler(provider: str) -> Handler:
    async def handler(request: Request, state: SimState) -> Response:
        if provider in DEVICE_PROVIDERS:
            return gin_json(200, flows.start_device_flow(state, provider))
        if provider in CALLBACK_PROVIDERS:
            try:
                url, st = flows.start_callback_flow(state, provider, webui=_is_webui(request))
            except flows.CallbackServerUnavailable:
                return gin_json(500, {"error": "failed to start callback server"})
        else:  # a configured plugin provider with a callback flow
            url, st = flows.start_plugin_flow(state, provider)
        return gin_json(200, {"status": "ok", "url": url, "state": st})

    return handler


async def get_auth_status(request: Request, state: SimState) -> Response:
    st = request.query_params.get("state", "").strip()
    if not st:
        return gin_json(200, {"status": "ok"})
    if not valid_state(st):
        return gin_json(400, {"status": "error", "error": "invalid state"})
    session = state.sessions.get(st, state.now())
    if session is None:
        return gin_json(200, {"status": "error", "error": "unknown or expired state"})
    if session.completed:
        return gin_json(200, {"status": "ok"})
    if session.status:
        return gin_json(200, {"status": "error", "error": session.status})
    return gin_json(200, {"status": "wait"})


async def cancel_session(request: Request, state: SimState) -> Response:
    st = request.query_params.get("state", "").strip()
    if not st:
        return gin_json(400, {"status": "error", "error": "missing state"})
    if not valid_state(st):
        return gin_json(400, {"status": "error", "error": "invalid state"})
    return gin_json(200, {"status": "ok", "cancelled": state.sessions.cancel(st, state.now())})


async def oauth_callback(request: Request, state: SimState) -> Response:
    """oauth_callback.go: the exact order of checks of contract §4.3."""
    if request.method == "POST":
        try:
            body = await read_json(request)
            if not isinstance(body, dict) or not all(
                isinstance(body.get(k, ""), str)
                for k in ("provider", "redirect_url", "code", "state", "error")
            ):
                raise ValueError
        except ValueError:
            return gin_json(400, {"status": "error", "error": "invalid body"})
        provider, code, st = (str(body.get(k, "")).strip() for k in ("provider", "code", "state"))
        error = str(body.get("error", "")).strip()
        redirect = str(body.get("redirect_url", "")).strip()
    else:
        q = request.query_params
        provider, code, st = (
            q.get("provider", "").strip(),
            q.get("code", "").strip(),
            q.get("state", "").strip(),
        )
        error = q.get("error", "").strip() or q.get("error_description", "").strip()
        redirect = ""
    if redirect:
        try:
            # Go's url.Parse: control characters, a bad port or a bad %-escape in the path fail;
            # the query is not validated (Query() ignores malformed pairs).
            parts = urlsplit(redirect)
            if any(ord(c) < 0x20 or c == "\x7f" for c in redirect):
                raise ValueError("control character in URL")
            _ = parts.port
            if re.search(r"%(?![0-9A-Fa-f]{2})", parts.path):
                raise ValueError("invalid URL escape")
        except ValueError:
            return gin_json(400, {"status": "error", "error": "invalid redirect_url"})
        from urllib.parse import parse_qs

        rq = parse_qs(parts.query)
        st = st or rq.get("state", [""])[0].strip()
        code = code or rq.get("code", [""])[0].strip()
        if not error:
            error = rq.get("error", [""])[0].strip() or rq.get("error_description", [""])[0].strip()
    if not st:
        return gin_json(400, {"status": "error", "error": "state is required"})
    if not valid_state(st):
        return gin_json(400, {"status": "error", "error": "invalid state"})
    if not code and not error:
        return gin_json(400, {"status": "error", "error": "code or error is required"})
    session = state.sessions.get(st, state.now())
    if session is None:
        return gin_json(404, {"status": "error", "error": "unknown or expired state"})
    if session.completed:
        return gin_json(409, {"status": "error", "error": "oauth flow is already completed"})
    canonical = normalize_provider(provider or session.provider)
    if canonical is None:
        return gin_json(400, {"status": "error", "error": "unsupported provider"})
    if session.status:
        return gin_json(409, {"status": "error", "error": session.status})
    if canonical != session.provider:
        return gin_json(400, {"status": "error", "error": "provider does not match state"})
    if session.flow == "callback":
        flows.write_callback(state, session, code, error)
    # A device flow's waiter never reads the written file: CPA still answers ok.
    return gin_json(200, {"status": "ok"})
