"""The simulator's ASGI app: dispatches to management, control, provider pages, /v1 and callbacks.

Management requests pass CPA's middleware order: availability → CORS → key gate → route.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.types import Receive, Scope, Send

from reauthd.sim import control, flows
from reauthd.sim.clock import go_time
from reauthd.sim.management import UNAUTHENTICATED, route_for
from reauthd.sim.oauth import CALLBACK_PROVIDERS
from reauthd.sim.responses import err, gin_json
from reauthd.sim.scenarios import execute
from reauthd.sim.state import SimState
from reauthd.sim.upstream import PROVIDER_MODELS, dumps

MGMT = "/v0/management"
CALLBACK_PATHS = {path: provider for provider, (_, _, path) in CALLBACK_PROVIDERS.items()}


# internal/safemode/example_api_keys.go: the template keys of config.example.yaml.
EXAMPLE_API_KEYS = frozenset({"your-api-key-1", "your-api-key-2", "your-api-key-3"})
UNSAFE_EXAMPLE_KEY_MESSAGE = (
    "Proxy API endpoints are disabled because api-keys contains template values. Open "
    "/management.html?safe-mode=configure, update api-keys in Management, then retry."
)


class DropConnection(Exception):
    """Raised after the response started: uvicorn then closes the connection mid-response."""


def _forwarded(header: str) -> str | None:
    """gin's validateHeader with every proxy trusted: all entries must be IPs; the leftmost wins."""
    items = [item.strip() for item in header.split(",")]
    try:
        parsed = [ipaddress.ip_address(item) for item in items]
    except ValueError:
        return None
    return str(parsed[0]) if parsed else None


def client_ip(request: Request) -> str:
    """gin's c.ClientIP() with every proxy trusted: X-Forwarded-For, then X-Real-IP, then the peer."""
    for name in ("x-forwarded-for", "x-real-ip"):
        value = request.headers.get(name, "")
        if value:
            found = _forwarded(value)
            if found is not None:
                return found
    return request.client.host if request.client else ""


def management_key(request: Request) -> str:
    """Bearer (case-insensitive scheme) or the whole Authorization value, then X-Management-Key.

    As handler.go does it: `SplitN(ah, " ", 2)` and the part after the first space *untrimmed*, so
    "Bearer  key" offers " key" and is refused. (The HTTP layer already drops the value's outer
    whitespace, in Go's net/http as in uvicorn.)"""
    auth = request.headers.get("authorization", "")
    scheme, space, rest = auth.partition(" ")
    key = rest if space and scheme.lower() == "bearer" else auth
    return key or request.headers.get("x-management-key", "")


class SimApp:
    """ASGI entry point bound to one SimState."""

    def __init__(self, state: SimState, drop: Callable[[tuple[Any, ...]], None] | None = None) -> None:
        self.state = state
        self.drop = drop or (lambda peer: None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        self.state.run_due()
        path = request.url.path
        if path.startswith(MGMT + "/") or path == MGMT:
            response = await self.management(request)
        elif path.startswith("/_sim/"):
            response = await control.handle(request, self.state)
        elif path.startswith("/v1/"):
            response = await self.public(request)
        elif path in CALLBACK_PATHS and request.method == "GET":
            response = self.main_port_callback(request, CALLBACK_PATHS[path])
        else:
            response = Response(b"404 page not found", 404, media_type="text/plain")
        if isinstance(response, _Dropping):
            # A connection dropped mid-response: headers and part of the body, then a reset. Aborting
            # the transport (instead of raising) keeps uvicorn from logging an application error.
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"1000")],
                }
            )
            await send({"type": "http.response.body", "body": b'{"files":[', "more_body": True})
            client = scope.get("client")
            if client is not None:
                self.drop(tuple(client))
            for _ in range(3):
                await asyncio.sleep(0)
            return
        await response(scope, receive, send)

    async def management(self, request: Request) -> Response:
        state = self.state
        if not state.settings.management_enabled:
            return Response(b"", 404)
        state.counters.management_requests += 1
        cors = {"Access-Control-Allow-Origin": "*"}
        if request.method == "OPTIONS":
            return Response(
                b"",
                204,
                headers={
                    **cors,
                    "Access-Control-Allow-Methods": "GET, POST, PUT, PATCH, DELETE, OPTIONS",
                    "Access-Control-Allow-Headers": "*",
                },
            )
        sub = request.url.path[len(MGMT) :] or "/"
        ip = client_ip(request)
        body_for_log = await _json_or_none(request)
        fault = state.take_fault(request.method, request.url.path)
        if fault is not None and fault.kind == "slow":
            await asyncio.sleep(fault.delay)
            fault = None
        if fault is not None and fault.kind == "status":
            resp = Response(
                fault.body.encode() or dumps({"error": "upstream unavailable"}).encode(),
                fault.status,
                media_type="application/json",
            )
            self._log(request, body_for_log, resp.status_code, ip)
            return resp
        if fault is not None and fault.kind in ("drop", "outage"):
            self._log(request, body_for_log, 0, ip)
            return _Dropping()
        handler = UNAUTHENTICATED.get((request.method, sub))
        headers = {**cors, **self.version_headers()}
        if handler is not None:
            resp = await handler(request, state)
        else:
            local = ip in ("127.0.0.1", "::1")
            ok, status, message = state.authenticate(ip, local, management_key(request))
            if not ok:
                resp = err(status, message)
            elif (
                fault is not None
                and fault.kind == "disk_fallback"
                and (request.method, sub)
                == (
                    "GET",
                    "/auth-files",
                )
            ):
                resp = disk_fallback_listing(state, request.query_params.get("auth_index", ""))
            else:
                route = route_for(request.method, sub, state)
                resp = await route(request, state) if route is not None else Response(b"", 404)
            resp.headers.update(headers)
        if fault is not None and fault.kind == "drop_after":
            # The worst case for idempotency: CPA carried the request out, the client never hears.
            request.state.oplog_extra = {
                **(getattr(request.state, "oplog_extra", None) or {}),
                "dropped": True,
            }
            self._log(request, body_for_log, resp.status_code, ip)
            return _Dropping()
        if fault is not None and fault.kind != "disk_fallback" and resp.status_code == 200:
            resp = _shape_fault(fault.kind, resp)
            resp.headers.update(headers)
        resp.headers.update(cors)
        self._log(request, body_for_log, resp.status_code, ip)
        return resp

    def _log(self, request: Request, body: Any, status: int, ip: str) -> None:
        extra = getattr(request.state, "oplog_extra", None)
        self.state.log_operation(
            request.method,
            request.url.path,
            list(request.query_params.keys()),
            body,
            status,
            ip,
            extra=extra if isinstance(extra, dict) else None,
        )

    def version_headers(self) -> dict[str, str]:
        return {
            "X-CPA-VERSION": self.state.settings.version,
            "X-CPA-COMMIT": "simulator",
            "X-CPA-BUILD-DATE": "2026-11-01T00:00:00Z",
            "X-CPA-SUPPORT-PLUGIN": "true",
        }

    def main_port_callback(self, request: Request, provider: str) -> Response:
        """server_routes.go: writes the callback file when pending and always answers 200 HTML."""
        q = request.query_params
        st = q.get("state", "").strip()
        session = self.state.sessions.get(st, self.state.now()) if st else None
        if session is not None and session.pending and session.provider == provider:
            flows.write_callback(
                self.state,
                session,
                q.get("code", "").strip(),
                q.get("error", "").strip() or q.get("error_description", "").strip(),
            )
        return HTMLResponse(
            "<html><body><h1>Authentication successful!</h1><p>You can close this window.</p></body></html>"
        )

    async def public(self, request: Request) -> Response:
        """The proxy API subset used to verify a credential by prefix (§5 workaround, §12 Vertex)."""
        if EXAMPLE_API_KEYS.intersection(self.state.settings.proxy_api_keys):
            # server_middleware.go exampleAPIKeySafeModeMiddleware: with the template keys configured every
            # /v1 and /v1beta route answers 403 before any key check (safemode/example_api_keys.go).
            return Response(
                dumps({"error": "unsafe_example_api_key", "message": UNSAFE_EXAMPLE_KEY_MESSAGE}).encode(),
                403,
                media_type="application/json; charset=utf-8",
                headers={"X-CPA-SAFE-MODE": "example-api-key"},
            )
        auth = request.headers.get("authorization", "")
        key = auth[7:].strip() if auth[:7].lower() == "bearer " else request.headers.get("x-api-key", "")
        if not key:
            return gin_json(401, {"error": "Missing API key"})
        if key not in self.state.settings.proxy_api_keys:
            return gin_json(401, {"error": "Invalid API key"})
        if request.method == "GET" and request.url.path == "/v1/models":
            data = []
            for a in self.state.sorted_auths():
                if a.disabled:
                    continue
                prefix = route_prefix(a.routed_prefix)
                for m in PROVIDER_MODELS.get(a.provider, ()):
                    data.append(
                        {
                            "id": f"{prefix}/{m}" if prefix else m,
                            "object": "model",
                            "created": 0,
                            "owned_by": a.provider,
                        }
                    )
            unique = list({d["id"]: d for d in data}.values())
            return gin_json(200, {"object": "list", "data": unique})
        if request.method == "POST" and request.url.path in (
            "/v1/chat/completions",
            "/v1/responses",
            "/v1/messages",
        ):
            body = await _json_or_none(request)
            model = str(body.get("model", "")) if isinstance(body, dict) else ""
            return self._complete(model)
        return Response(b"404 page not found", 404, media_type="text/plain")

    def _complete(self, model: str) -> Response:
        prefix, _, bare = model.rpartition("/")
        candidates = [
            a
            for a in self.state.sorted_auths()
            if not a.disabled
            and bare in PROVIDER_MODELS.get(a.provider, ())
            and route_prefix(a.routed_prefix) == prefix
        ]
        if not candidates:
            # sdk/api/handlers/handlers_routing.go (since 2026-08-06): an unroutable model is the client's
            # error, 400 model_not_found, no longer 502.
            return gin_json(
                400,
                {
                    "error": {
                        "message": f"unknown provider for model {model}",
                        "type": "invalid_request_error",
                        "code": "model_not_found",
                        "param": "model",
                    }
                },
            )
        usable = [a for a in candidates if not a.unavailable] or candidates
        ans = execute(self.state, usable[0], bare)
        if ans.status != 200:
            return Response(ans.body.encode(), ans.status, media_type="application/json")
        return gin_json(
            200,
            {
                "id": f"chatcmpl-sim{int(self.state.now().timestamp())}",
                "object": "chat.completion",
                "created": int(self.state.now().timestamp()),
                "model": bare,
                "choices": [
                    {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            },
        )


def disk_fallback_listing(state: SimState, auth_index: str) -> Response:
    """CPA without an auth manager lists the auth dir itself (auth_files.go `listAuthFilesFromDisk`):
    per `*.json` file only `name`, `size`, `modtime` and the file's `type` and `email` — no `id`,
    `auth_index`, `status`, `disabled` (contract §2: an `auth_index` filter then always gives [])."""
    state.counters.list_requests += 1
    files: list[dict[str, Any]] = []
    if not auth_index.strip():
        for name in sorted(state.disk):
            if not name.lower().endswith(".json"):
                continue
            disk = state.disk[name]
            kind, email = disk.content.get("type"), disk.content.get("email")
            files.append(
                {
                    "name": name,
                    "size": len(disk.raw),
                    "modtime": go_time(disk.mtime),
                    "type": kind if isinstance(kind, str) else "",
                    "email": email if isinstance(email, str) else "",
                }
            )
    return gin_json(200, {"files": files})


def route_prefix(raw: Any) -> str:
    """synthesizer/file.go: a prefix is one segment; slashes are trimmed and an inner slash voids it."""
    if not isinstance(raw, str):
        return ""
    trimmed = raw.strip().strip("/")
    return "" if "/" in trimmed else trimmed


class _Dropping(Response):
    """Marker: send headers and part of the body, then close (a connection dropped mid-response)."""

    def __init__(self) -> None:
        super().__init__(b"", 200)


def _shape_fault(kind: str, resp: Response) -> Response:
    body = bytes(resp.body)
    if kind == "malformed_json":
        return Response(body[: max(1, len(body) // 2)] or b"{", 200, media_type="application/json")
    if kind == "huge_body":
        pad = b" " * (50 * 1024 * 1024)
        return Response(body[:-1] + b',"padding":"' + pad + b'"}', 200, media_type="application/json")
    try:
        parsed = json.loads(body)
    except ValueError:
        return resp
    files = parsed.get("files") if isinstance(parsed, dict) else None
    if isinstance(files, list):
        for entry in files:
            if kind == "missing_fields":
                for key in ("status", "auth_index", "status_message"):
                    entry.pop(key, None)
            elif kind == "unknown_status":
                entry["status"] = "refreshing" if entry.get("status") == "error" else "ready"
    elif kind == "missing_fields" and isinstance(parsed, dict):
        parsed = {k: v for i, (k, v) in enumerate(parsed.items()) if i % 2}
    return Response(dumps(parsed).encode(), 200, media_type="application/json; charset=utf-8")


async def _json_or_none(request: Request) -> Any:
    if "json" not in request.headers.get("content-type", "") and request.method in ("GET", "OPTIONS"):
        return None
    raw = await request.body()
    if not raw or "multipart" in request.headers.get("content-type", ""):
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None
