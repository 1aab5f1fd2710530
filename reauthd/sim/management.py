"""The `/v0/management/*` routes of the simulated CPA, answering exactly as shared/cpa-contract.md
§1-§7 describes (status codes, error strings, ordering of checks)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response

from reauthd.sim import flows
from reauthd.sim.auths import AUTH_DIR
from reauthd.sim.credentials import service_account
from reauthd.sim.oauth import CALLBACK_PROVIDERS, DEVICE_PROVIDERS, normalize_provider, valid_state
from reauthd.sim.scenarios import refresh, token_of
from reauthd.sim.state import SimState
from reauthd.sim.upstream import PROVIDER_MODELS, dumps, vertex_file_name

Handler = Callable[[Request, SimState], Awaitable[Response]]


def gin_json(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    """gin's c.JSON: compact JSON with a charset."""
    return Response(
        dumps(payload).encode(), status, headers=headers, media_type="application/json; charset=utf-8"
    )


def err(status: int, error: str, **extra: Any) -> Response:
    return gin_json(status, {"error": error, **extra})


async def read_form(request: Request) -> tuple[dict[str, str], list[tuple[str, str, bytes]]]:
    """Read a form fully (text fields, and (field, filename, bytes) per file) and close its temp files."""
    form = await request.form()
    try:
        fields: dict[str, str] = {}
        files: list[tuple[str, str, bytes]] = []
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                files.append((key, value.filename or "", await value.read()))
            else:
                fields.setdefault(key, value)
        return fields, files
    finally:
        await form.close()


async def read_json(request: Request) -> Any:
    raw = await request.body()
    return json.loads(raw)


# -- auth files ------------------------------------------------------------------------------------


async def list_auth_files(request: Request, state: SimState) -> Response:
    state.counters.list_requests += 1
    q = request.query_params
    body = state.listing(q.get("name", "").strip(), q.get("auth_index", "").strip())
    return Response(body, 200, media_type="application/json; charset=utf-8")


def _check_name(name: str) -> Response | None:
    if not name or "/" in name or "\\" in name or (len(name) > 1 and name[1] == ":"):
        return err(400, "invalid name")
    if not name.lower().endswith(".json"):
        return err(400, "name must end with .json")
    return None


async def download(request: Request, state: SimState) -> Response:
    name = request.query_params.get("name", "").strip()
    bad = _check_name(name)
    if bad is not None:
        return bad
    disk = state.disk.get(name)
    if disk is None:
        return err(404, "file not found")
    return Response(
        disk.raw,
        200,
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def _store_upload(state: SimState, name: str, raw: bytes) -> str | None:
    """Validate then write (invalid JSON never overwrites), and register or update at once."""
    if not name.lower().endswith(".json"):
        return "file must be .json"
    try:
        content = json.loads(raw)
        if not isinstance(content, dict):
            raise ValueError("json: cannot unmarshal non-object into auth file")
        if "weight" in content and content["weight"] is not None and not isinstance(content["weight"], int):
            raise ValueError("weight must be an integer")
    except ValueError as exc:
        return f"invalid auth file: {exc}"
    state.write_file(name, content, reload=False)
    auth = state.auths.get(name)
    if auth is None:
        state.register(name, content)
    else:
        auth.load(content, state.now())
    if content.get("type") == "vertex" and isinstance(content.get("service_account"), dict):
        _ensure_vertex_key(state, content)
    return None


async def upload(request: Request, state: SimState) -> Response:
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        try:
            _, parts = await read_form(request)
        except Exception as exc:  # any parse failure is CPA's "invalid multipart form"
            return err(400, f"invalid multipart form: {exc}")
        if not parts:
            return err(400, "no files uploaded")
        results: list[tuple[str, str | None]] = []
        for _, filename, data in sorted(parts, key=lambda p: p[0]):
            name = filename.rsplit("/", 1)[-1]
            results.append((name, _store_upload(state, name, data)))
        if len(results) == 1:
            name, problem = results[0]
            if problem is None:
                return gin_json(200, {"status": "ok"})
            return err(400 if problem == "file must be .json" else 500, problem)
        ok = [n for n, p in results if p is None]
        failed = [{"name": n, "error": p} for n, p in results if p is not None]
        if failed:
            return gin_json(207, {"status": "partial", "uploaded": len(ok), "files": ok, "failed": failed})
        return gin_json(200, {"status": "ok", "uploaded": len(ok), "files": ok})
    name = request.query_params.get("name", "").strip()
    bad = _check_name(name)
    if bad is not None:
        return bad
    problem = _store_upload(state, name, await request.body())
    if problem is not None:
        return err(500, problem)
    return gin_json(200, {"status": "ok"})


async def delete(request: Request, state: SimState) -> Response:
    q = request.query_params
    if q.get("all", "").lower() in ("true", "1", "*"):
        names = list(state.disk)
        for name in names:
            del state.disk[name]
            state.remove_auth(name)
        return gin_json(200, {"status": "ok", "deleted": len(names)})
    names = [n.strip() for n in q.getlist("name")]
    if not names:
        try:
            body = await read_json(request)
        except ValueError:
            return err(400, "invalid request body")
        if isinstance(body, dict):
            names = [body["name"]] if isinstance(body.get("name"), str) else list(body.get("names") or [])
        elif isinstance(body, list):
            names = body
        if not all(isinstance(n, str) for n in names):
            return err(400, "invalid request body")
    if not names:
        return err(400, "invalid name")
    done, failed = [], []
    for raw in names:
        name = raw.strip()
        if not name or "/" in name or "\\" in name:
            problem: tuple[int, str] | None = (400, "invalid name")
        else:
            auth = state.auth_by_name(name)
            file_name = auth.name if auth is not None else name
            if file_name not in state.disk:
                problem = (404, "auth file not found")
            else:
                del state.disk[file_name]
                state.remove_auth(file_name)
                problem = None
        if problem is None:
            done.append(name)
        else:
            failed.append((name, problem))
    if len(names) == 1:
        return gin_json(200, {"status": "ok"}) if done else err(*failed[0][1])
    if failed:
        return gin_json(
            207,
            {
                "status": "partial",
                "deleted": len(done),
                "files": done,
                "failed": [{"name": n, "error": p[1]} for n, p in failed],
            },
        )
    return gin_json(200, {"status": "ok", "deleted": len(done), "files": done})


async def patch_status(request: Request, state: SimState) -> Response:
    try:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise ValueError
    except ValueError:
        return err(400, "invalid request body")
    name = str(body.get("name") or "").strip()
    if not name:
        return err(400, "name is required")
    if not isinstance(body.get("disabled"), bool):
        return err(400, "disabled is required")
    auth = state.auth_by_name(name)
    index = str(body.get("auth_index") or "").strip()
    if auth is None or (index and auth.auth_index != index):
        return err(404, "auth file not found")
    disabled = bool(body["disabled"])
    auth.disabled = disabled
    auth.clear_failures()
    auth.status = "disabled" if disabled else "active"
    auth.status_message = "disabled via management API" if disabled else ""
    auth.updated_at = state.now()
    auth.touch()
    state.persist_runtime(auth)
    return gin_json(200, {"status": "ok", "disabled": disabled})


KEBAB: dict[str, str] = {
    "proxy-url": "proxy_url",
    "excluded-models": "excluded_models",
    "model-aliases": "model_aliases",
    "request-retry": "request_retry",
    "disable-cooling": "disable_cooling",
    "fingerprint-profile": "fingerprint_profile",
    "refresh-interval-seconds": "refresh_interval_seconds",
}


async def patch_fields(request: Request, state: SimState) -> Response:
    try:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise ValueError
    except ValueError:
        return err(400, "invalid request body")
    name = str(body.pop("name", "") or "").strip()
    if not name:
        return err(400, "name is required")
    body.pop("auth_index", None)
    if not body:
        return err(400, "no fields to update")
    seen: dict[str, str] = {}
    for key in body:
        if not key.strip():
            return err(400, "field name is required")
        norm: str = KEBAB.get(str(key), str(key))
        if norm in seen:
            return err(400, f'auth file fields "{seen[norm]}" and "{key}" refer to the same field')
        seen[norm] = key
        root = norm.split(".", 1)[0]
        if root in ("weight", "request_retry") and "." in norm:
            return err(400, f"{root} does not support nested fields")
        if (
            norm == "weight"
            and body[key] is not None
            and (isinstance(body[key], bool) or not isinstance(body[key], int))
        ):
            return err(400, "weight must be an integer")
        if (
            norm == "request_retry"
            and body[key] is not None
            and (isinstance(body[key], bool) or not isinstance(body[key], int))
        ):
            return err(400, "request_retry must be an integer or null")
    auth = state.auth_by_name(name)
    if auth is None:
        return err(404, "auth file not found")
    md = auth.metadata
    for key, value in body.items():
        norm = KEBAB.get(str(key), str(key))
        if norm == "headers" and isinstance(value, dict):
            headers = dict(md.get("headers") or {})
            for hk, hv in value.items():
                if hv in ("", None):
                    headers.pop(hk, None)
                else:
                    headers[hk] = hv
            md["headers"] = headers
        elif norm == "weight" and value is None:
            md.pop("weight", None)
        elif norm == "request_retry" and (value is None or value < 0):
            md.pop("request_retry", None)
        elif "." in norm:
            node = md
            parts = norm.split(".")
            for part in parts[:-1]:
                nxt = node.get(part)
                if not isinstance(nxt, dict):
                    nxt = {}
                    node[part] = nxt
                node = nxt
            node[parts[-1]] = value
        else:
            md[norm] = value
    if isinstance(body.get("disabled"), bool):
        auth.disabled = body["disabled"]
        auth.status = "disabled" if auth.disabled else "active"
        auth.status_message = "disabled via management API" if auth.disabled else ""
    auth.touch()
    # Persist the whole in-memory record; the watcher then reloads it (§3, §12 trap).
    content = dict(md)
    content["disabled"] = auth.disabled
    state.write_file(auth.name, content)
    return gin_json(200, {"status": "ok"})


async def models(request: Request, state: SimState) -> Response:
    name = request.query_params.get("name", "").strip()
    if not name:
        return err(400, "name is required")
    auth = state.auth_by_name(name)
    if auth is None:
        return gin_json(200, {"models": []})
    return gin_json(
        200,
        {
            "models": [
                {"id": m, "display_name": m, "type": auth.provider, "owned_by": auth.provider}
                for m in PROVIDER_MODELS.get(auth.provider, ())
            ]
        },
    )


async def reset_quota(request: Request, state: SimState) -> Response:
    try:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise ValueError
    except ValueError:
        return err(400, "invalid request body")
    index = str(body.get("auth_index") or "").strip()
    if not index:
        return err(400, "auth_index is required")
    auth = state.by_index.get(index)
    if auth is None:
        return err(404, "auth not found")
    reset = sorted(auth.model_states)
    auth.clear_failures()
    if not auth.disabled:
        auth.status, auth.status_message = "active", ""
    auth.touch()
    return gin_json(200, {"status": "ok", "auth_index": index, "models": reset})


# -- OAuth -----------------------------------------------------------------------------------------


def auth_url_handler(provider: str) -> Handler:
    async def handler(request: Request, state: SimState) -> Response:
        if provider in DEVICE_PROVIDERS:
            return gin_json(200, flows.start_device_flow(state, provider))
        if provider in CALLBACK_PROVIDERS:
            url, st = flows.start_callback_flow(state, provider)
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
            parts = urlsplit(redirect)
            if any(c in redirect for c in " \x7f") or any(ord(c) < 0x20 for c in redirect):
                raise ValueError("control character in URL")
            _ = parts.port
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
    if session.flow != "callback":
        return gin_json(409, {"status": "error", "error": "oauth flow is not pending"})
    flows.write_callback(state, session, code, error)
    return gin_json(200, {"status": "ok"})


# -- api-call and vertex ---------------------------------------------------------------------------

PROBE_HOSTS = {
    "chatgpt.com": "codex",
    "api.anthropic.com": "claude",
    "api.kimi.com": "kimi",
    "api.x.ai": "xai",
    "grok.com": "xai",
    "cloudcode-pa.googleapis.com": "antigravity",
    "daily-cloudcode-pa.googleapis.com": "antigravity",
}


def _expires_soon(expired: Any, now: datetime) -> bool:
    if not isinstance(expired, str) or not expired:
        return False
    try:
        when = datetime.fromisoformat(expired.replace("Z", "+00:00"))
    except ValueError:
        return False
    return when - now < timedelta(seconds=30)


async def api_call(request: Request, state: SimState) -> Response:
    """api_tools.go APICall; the sim is offline, so only the providers' probe URLs answer (§5)."""
    state.counters.api_calls += 1
    try:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise ValueError
        header = body.get("header") or {}
        if not isinstance(header, dict) or not all(isinstance(v, str) for v in header.values()):
            raise ValueError
    except ValueError:
        return err(400, "invalid body")
    method = str(body.get("method") or "").strip().upper()
    if not method:
        return err(400, "missing method")
    url = str(body.get("url") or "").strip()
    if not url:
        return err(400, "missing url")
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return err(400, "invalid url")
    proxy = str(body.get("proxy_url") or "").strip()
    if (
        proxy
        and proxy not in ("direct", "none")
        and urlsplit(proxy).scheme not in ("http", "https", "socks5", "socks5h")
    ):
        return err(400, "invalid proxy_url")
    index = next(
        (
            str(body[k]).strip()
            for k in ("auth_index", "authIndex", "AuthIndex")
            if isinstance(body.get(k), str) and body[k].strip()
        ),
        "",
    )
    auth = state.by_index.get(index) if index else None
    headers = dict(header)
    token = ""
    resolved = False
    for key, value in headers.items():
        if "$TOKEN$" not in value:
            continue
        if not resolved:
            resolved = True
            if auth is not None:
                soon = auth.provider == "antigravity" and _expires_soon(
                    auth.metadata.get("expired"), state.now()
                )
                if soon and refresh(state, auth).status != 200:
                    return err(400, "auth token refresh failed")
                token = "" if auth.provider == "vertex" else auth.access_token
        if auth is not None and not token:
            return err(400, "auth token not found")
        if token:
            headers[key] = value.replace("$TOKEN$", token)
    host = (parts.hostname or "").lower()
    provider = PROBE_HOSTS.get(host)
    if provider is None:
        return err(502, "request failed")
    sent = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    sent = sent[7:] if sent.lower().startswith("bearer ") else sent
    ans = state.upstream.probe(provider, url, sent.strip(), state.now())
    resp_headers = {
        "Content-Type": ["application/json"],
        "Date": [state.now().astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")],
    }
    if provider == "antigravity" and auth is not None:
        auth.touch()
    return gin_json(200, {"status_code": ans.status, "header": resp_headers, "body": ans.body})


def _ensure_vertex_key(state: SimState, content: dict[str, Any]) -> None:
    sa = content["service_account"]
    key_id = str(sa.get("private_key_id", ""))
    if key_id and key_id not in state.upstream.access:
        acct = state.upstream.account(
            "vertex", str(sa.get("client_email", "")), project_id=str(content.get("project_id", ""))
        )
        from reauthd.sim.upstream import TokenRecord

        state.upstream.access[key_id] = TokenRecord(acct.key, "vertex")


async def vertex_import(request: Request, state: SimState) -> Response:
    try:
        fields, parts = await read_form(request)
    except Exception:  # not multipart: CPA reports the missing file
        return err(400, "file required")
    raw = next((data for key, _, data in parts if key == "file"), None)
    if raw is None:
        return err(400, "file required")
    try:
        sa = json.loads(raw)
        if not isinstance(sa, dict):
            raise ValueError("service account must be a JSON object")
    except ValueError as exc:
        return err(400, "invalid json", message=str(exc))
    if not sa.get("private_key") or not sa.get("client_email"):
        return err(400, "invalid service account", message="private_key and client_email are required")
    project = str(sa.get("project_id") or "").strip()
    if not project:
        return err(400, "project_id missing")
    location = str(fields.get("location") or request.query_params.get("location") or "us-central1").strip()
    email = str(sa["client_email"])
    name = vertex_file_name(project)
    normalised = dict(sa)
    normalised["private_key"] = str(sa["private_key"]).replace("\\n", "\n")
    content = {
        "service_account": normalised,
        "project_id": project,
        "email": email,
        "location": location,
        "type": "vertex",
        "label": f"{project} ({email})",
        "disabled": False,
    }
    _ensure_vertex_key(state, content)
    state.write_file(name, content)
    return gin_json(
        200,
        {
            "status": "ok",
            "auth-file": f"{AUTH_DIR}/{name}",
            "project_id": project,
            "email": email,
            "location": location,
        },
    )


async def usage_queue(request: Request, state: SimState) -> Response:
    raw = request.query_params.get("count", "1")
    try:
        count = int(raw)
        if count <= 0:
            raise ValueError
    except ValueError:
        return err(400, "count must be a positive integer")
    items: list[Any] = []
    while state.usage_queue and len(items) < count:
        items.append(json.loads(state.usage_queue.popleft()))
    return gin_json(200, items)


ROUTES: dict[tuple[str, str], Handler] = {
    ("GET", "/auth-files"): list_auth_files,
    ("GET", "/auth-files/download"): download,
    ("POST", "/auth-files"): upload,
    ("DELETE", "/auth-files"): delete,
    ("PATCH", "/auth-files/status"): patch_status,
    ("PATCH", "/auth-files/fields"): patch_fields,
    ("GET", "/auth-files/models"): models,
    ("POST", "/reset-quota"): reset_quota,
    ("GET", "/get-auth-status"): get_auth_status,
    ("DELETE", "/oauth-session"): cancel_session,
    ("POST", "/api-call"): api_call,
    ("POST", "/vertex/import"): vertex_import,
    ("GET", "/usage-queue"): usage_queue,
}
for _p in ("anthropic", "codex", "antigravity", "kimi", "xai"):
    ROUTES[("GET", f"/{_p}-auth-url")] = auth_url_handler(_p)
UNAUTHENTICATED: dict[tuple[str, str], Handler] = {
    ("GET", "/oauth-callback"): oauth_callback,
    ("POST", "/oauth-callback"): oauth_callback,
}


def route_for(method: str, sub: str, state: SimState) -> Handler | None:
    found = ROUTES.get((method, sub))
    if found is None and method == "GET" and sub.endswith("-auth-url"):
        plugin = sub[1:].removesuffix("-auth-url")
        if plugin in state.settings.plugin_providers:
            return auth_url_handler(plugin)
    return found


_ = service_account, token_of
