"""A CLIProxyAPIHome ("Home") simulator, and a CPA cluster node (`-home-jwt`) simulator (issue 15).

Follows `shared/home-contract.md` (Home snapshot 44034f3 ≈ v1.0.67, its embedded CPA v7.2.83 management
middleware, CPA v7.2.140 for the node). Every behaviour names the Home source (`file:line` as cited by the
contract, paths relative to the Home repo) or the contract section it copies. Like the CPA simulator it must
never be kinder than the real thing.

Not simulated (reauthd does not use them yet): plugins, vertex import, uploads, quota snapshots, /usage/*,
topology, several Home instances sharing one database (each HomeSim is one Home instance with its own ban
table), TLS, the trusted-proxies list (its default, empty, is what is simulated: the TCP peer is the client).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from reauthd.sim.bans import BanTable
from reauthd.sim.clock import SimClock
from reauthd.sim.server import LoopbackServer, wait_for_stop_signal

MANAGEMENT = "/v0/management"
RESP_FIRST_BYTES = b"*$+-:"  # Home internal/protocolmux/mux.go:44-101 (CPA protocol_multiplexer.go alike)

# Home oauth_login.go:33-51 and §3.9: session provider → (state prefix, redirect_uri, saved `type`).
OAUTH_PROVIDERS: dict[str, tuple[str, str, str]] = {
    "anthropic": ("cla", "http://localhost:54545/callback", "claude"),
    "codex": ("cdx", "http://localhost:1455/auth/callback", "codex"),
    "antigravity": ("agv", "http://localhost:51121/oauth-callback", "antigravity"),
    "kimi": ("kmi", "", "kimi"),
    # xAI is a PKCE *callback* flow in Home (internal/auth/xai/types.go:15-20), not CPA's device flow.
    "xai": ("xai", "http://127.0.0.1:56121/callback", "xai"),
}
# oauth_login.go:1151-1166: callback provider aliases.
PROVIDER_ALIASES = {
    "claude": "anthropic", "anthropic": "anthropic", "openai": "codex", "codex": "codex",
    "anti-gravity": "antigravity", "antigravity": "antigravity", "x-ai": "xai", "x.ai": "xai",
    "grok": "xai", "xai": "xai", "kimi": "kimi",
}  # fmt: skip
# authStatusMessage, oauth_login.go:1169-1181.
EXCHANGE_FAILED = {
    "anthropic": "Failed to exchange authorization code for tokens",
    "codex": "Failed to exchange authorization code for tokens",
    "xai": "Failed to exchange authorization code for tokens",
    "antigravity": "Failed to exchange token",
    "kimi": "Authentication failed",
}
OAUTH_SESSION_TTL = timedelta(minutes=20)  # internal/cluster/oauth_sessions.go:15 OAuthSessionTTL
COMPLETED_SESSION_TTL = timedelta(minutes=1)  # oauth_sessions.go:16 oauthCompletedSessionTTL
UNAUTHORIZED_RETRY = timedelta(minutes=1)  # internal/cliproxy/auth/result.go:20 unauthorizedRetryBackoff
FORBIDDEN_RETRY = timedelta(minutes=30)  # result.go:206-214 (402/403)
REQUEST_EVENTS_MAX_LIMIT = 200  # home-contract §4.2 ("limit is at most 200")
NODE_RESP_REFUSAL = b"-ERR redis usage output disabled in home mode\r\n"  # CPA redis_queue_protocol.go:61-65
#: A code the simulated providers accept: "ok-" + base64url(email). Anything else fails the exchange.
CODE_PREFIX = "ok-"


def not_found() -> JSONResponse:
    """Home's envelope for DB-backed 404s (internal/cluster/management/server.go:133-139)."""
    return JSONResponse({"error": "not_found", "message": "not_found"}, status_code=404)


def empty_404() -> Response:
    return Response(status_code=404)


def code_for(email: str) -> str:
    """The authorization code a simulated provider hands out for `email` (a test's "log in as")."""
    return CODE_PREFIX + base64.urlsafe_b64encode(email.encode()).decode().rstrip("=")


def _email_of_code(code: str) -> str | None:
    if not code.startswith(CODE_PREFIX):
        return None
    raw = code[len(CODE_PREFIX) :]
    try:
        return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None


@dataclass(slots=True)
class HomeRow:
    """One row of Home's `auth` table (internal/cluster/repository.go), projected by oauth.go:545-600."""

    id: str  # UUID; also auth_index (repository.go:72-80 AuthToRecord enforces ID == Index)
    provider: str  # saved `type` (claude, codex, ...)
    name: str  # metadata.filename; NOT unique (every login adds a row, home-contract §5.4)
    email: str | None
    created_at: datetime
    updated_at: datetime
    status: str = "active"  # synthesizer/file.go:140-155: new rows start active
    status_message: str = ""
    disabled: bool = False
    unavailable: bool = False
    next_retry_after: datetime | None = None
    deleted: bool = False  # soft delete (repository.go:730-772): gone from listings
    version: int = 1
    metadata: dict[str, Any] = field(default_factory=dict)  # prefix, note, proxy_url, tokens, ...
    access_token: str = field(default_factory=lambda: "sim-at-" + secrets.token_hex(8))
    upstream_accepts: bool = True  # what the simulated provider says to this token


@dataclass(slots=True)
class OAuthSession:
    """A row of Home's `oauth_sessions` table (internal/cluster/oauth_sessions.go)."""

    state: str
    provider: str  # session provider (anthropic, codex, antigravity, kimi, xai)
    created_at: datetime
    status: str = "pending"  # pending | complete | error
    error: str = ""
    completed_at: datetime | None = None
    callback_at: datetime | None = None
    code: str = ""


@dataclass(slots=True)
class HomeSimState:
    management_key: str | None
    clock: SimClock
    version: str = "v1.0.67-sim"
    commit: str = "44034f3"
    build_date: str = "2026-08-05T13:06:00Z"
    home_id: str = "127.0.0.1:8327"
    #: Seconds between a callback and the stored credential (the exchange goroutine, oauth_login.go:411).
    exchange_delay_s: float = 0.2
    bans: BanTable = field(default_factory=BanTable)
    rows: dict[str, HomeRow] = field(default_factory=dict)
    sessions: dict[str, OAuthSession] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    #: Next N `PATCH /auth-files/status` lose the version race: 200, nothing written (repository.go:198-203).
    lost_status_writes: int = 0
    requests: list[tuple[str, str, int]] = field(default_factory=list)  # (method, path, status)

    def now(self) -> datetime:
        return self.clock.now()

    # ------------------------------------------------------------------ what happens inside Home

    def add_credential(self, provider: str, email: str | None = None, *, name: str | None = None) -> HomeRow:
        now = self.now()
        row = HomeRow(
            id=str(uuid.uuid4()),  # cluster/uuid.go:40-50: a new random UUID per stored credential
            provider=provider,
            name=name or file_name(provider, email, now),
            email=email,
            created_at=now,
            updated_at=now,
            metadata={"type": provider, **({"email": email} if email else {})},
        )
        self.rows[row.id] = row
        return row

    def live_rows(self) -> list[HomeRow]:
        return [r for r in self.rows.values() if not r.deleted]

    def find(self, params: dict[str, str], *, by_index: bool = True) -> HomeRow | None:
        """Selectors of oauth.go:443-454/457-473: id/uuid/auth_index, then name/file/filename, then index."""
        for key in ("id", "uuid", "auth_index"):
            if params.get(key):
                return next((r for r in self.live_rows() if r.id == params[key]), None)
        for key in ("name", "file", "filename"):
            if params.get(key):
                # First in UUID order wins (oauth.go:492-503): ambiguous after a re-login.
                hits = sorted((r for r in self.live_rows() if r.name == params[key]), key=lambda r: r.id)
                return hits[0] if hits else None
        if by_index and params.get("index", "").isdigit():
            ordered = sorted(self.live_rows(), key=lambda r: r.id)  # repository.go:706: by id, not listing
            i = int(params["index"])
            return ordered[i] if i < len(ordered) else None
        return None

    def record_result(
        self, row: HomeRow, status_code: int, body: str = "", *, model: str = "sim-model"
    ) -> None:
        """A node's `LPUSH usage` result applied by MarkResult (internal/cliproxy/auth/result.go:48-255) and
        persisted as a request event (management/request_events.go, shape :162-196)."""
        now = self.now()
        failed = status_code >= 400
        if failed:
            row.status = "error"
            row.status_message = body or _status_text(status_code)  # result.go:186-194,251; NewUsageResult
            if status_code == 401:
                row.next_retry_after = now + UNAUTHORIZED_RETRY  # 1 min in Home, 30 min in CPA
            elif status_code in (402, 403):
                row.next_retry_after = now + FORBIDDEN_RETRY
            row.unavailable = row.next_retry_after is not None  # one model tracked: all blocked
        else:
            row.status, row.status_message, row.unavailable, row.next_retry_after = "active", "", False, None
        row.updated_at = now
        row.version += 1
        self.events.append(
            {
                "id": f"evt_{len(self.events) + 1}",
                # record.Timestamp.UTC().Format(time.RFC3339Nano) (request_events.go:169)
                "timestamp": now.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                "status": "failed" if failed else "success",
                "failed": failed,
                "status_code": status_code,
                "upstream_status_code": status_code if failed else None,
                "provider": row.provider,
                "model": model,
                "runtime": {"home_id": self.home_id, "cpa_node_id": "sim-node-1", "cpa_ip": "127.0.0.1"},
                "credential": {
                    "credential_type": "oauth",
                    "credential_id": row.id,
                    "auth_index": row.id,
                    "provider": row.provider,
                    "label": row.email or row.provider,
                    "source": "db",
                },
                "error": {
                    "status_code": status_code if failed else None,
                    "upstream_status_code": status_code if failed else None,
                    "reason": None,
                    "message": body or None,
                    "body_preview": (body[:500] or None) if failed else None,  # usage_observability.go:2681
                },
                "_at": now,
            }
        )

    def refresh_failed_terminally(self, row: HomeRow) -> None:
        """The master's refresh met invalid_grant & co.: disableAuthAfterUnauthorized (result.go:703-734)."""
        row.disabled = True
        row.status = "disabled"
        row.status_message = "unauthorized"
        row.unavailable = True
        row.next_retry_after = None
        row.upstream_accepts = False
        row.updated_at = self.now()
        row.version += 1

    def revoke(self, row: HomeRow) -> None:
        """The account's grant died: the next node request gets 401, Home's refresh fails terminally and
        Home disables the credential itself (home-contract §3.2)."""
        row.upstream_accepts = False
        self.record_result(row, 401, '{"error":{"type":"authentication_error","message":"invalid token"}}')
        self.refresh_failed_terminally(row)

    def settle(self) -> None:
        """Finish code exchanges whose time has come (the goroutine of oauth_login.go:424-465)."""
        now = self.now()
        for session in self.sessions.values():
            if session.status != "pending" or session.callback_at is None:
                continue
            if (now - session.callback_at).total_seconds() < self.exchange_delay_s:
                continue
            email = _email_of_code(session.code)
            if email is None:
                session.status, session.error = "error", EXCHANGE_FAILED[session.provider]
                continue
            self.store_login(session, email)

    def approve_device(self, state: str, email: str) -> HomeRow:
        """The person approved a kimi device code: the poll Home runs in the background for that session
        (oauth_login.go:468-511, at most 16 min) stores the credential. Raises KeyError for an unknown state."""
        session = self.sessions[state]
        if session.provider != "kimi" or session.status != "pending":
            raise ValueError("not a pending kimi login")
        return self.store_login(session, email)

    def store_login(self, session: OAuthSession, email: str) -> HomeRow:
        """storeOAuthPayloadWithContext (oauth.go:328-349): always a NEW row, nothing merged or carried over;
        the session completes only after the row is stored (CompleteOAuthSession, oauth_login.go:462)."""
        saved_type = OAUTH_PROVIDERS[session.provider][2]
        row = self.add_credential(saved_type, email)
        session.status, session.completed_at = "complete", self.now()
        return row


def file_name(provider: str, email: str | None, now: datetime) -> str:
    """metadata.filename of a stored login (home-contract §5.4; codex oauth_login.go:1217-1231, non-team)."""
    if provider == "kimi":
        return f"kimi-{int(now.timestamp() * 1000)}.json"
    if provider == "xai" and email:
        # internal/auth/xai/token.go:10-43 CredentialFileName: "xai-<email>.json", other characters → "-".
        clean = "".join(c if c.isascii() and (c.isalnum() or c in "@._-") else "-" for c in email).strip("-")
        return f"xai-{clean}.json"
    return f"{provider}-{email}.json" if email else f"{uuid.uuid4()}.json"


def _status_text(code: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return ""


def _go_time(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def listing_entry(row: HomeRow) -> dict[str, Any]:
    """authFileEntry (oauth.go:545-582): UUID id == auth_index, name == file_name, source "db", the in-flight
    projections (in_flight.go:482-495), and none of CPA's last_refresh/next_retry_after/success/failed/
    recent_requests/size/path/id_token/account (home-contract §3.1)."""
    md = row.metadata
    entry: dict[str, Any] = {
        "id": row.id,
        "auth_index": row.id,
        "name": row.name,
        "file_name": row.name,
        "type": row.provider,
        "provider": row.provider,
        "label": row.email or row.provider,  # synthesizer/file.go:111-114
        "status": row.status,
        "status_message": row.status_message,
        "disabled": row.disabled,
        "unavailable": row.unavailable,  # persisted as of the last write, not live
        "runtime_only": False,
        "source": "db",
        "prefix": str(md.get("prefix", "")),
        "proxy_url": str(md.get("proxy_url", "")),
        "websockets": bool(md.get("websockets", False)),
        "created_at": _go_time(row.created_at),
        "updated_at": _go_time(row.updated_at),
        "modtime": _go_time(row.updated_at),  # = UpdatedAt, not a file time
        "in_flight": 0,
        "max_in_flight": None,
        "max_in_flight_by_model": None,
        "remaining": None,
        "total_saturated": False,
        "saturated_model_count": 0,
        "admitted_in_flight": 0,
        "observed": False,
        "limiter": None,
    }
    if row.email:
        entry["email"] = row.email
    for key in ("priority", "note"):
        if key in md:
            entry[key] = md[key]
    return entry


# ---------------------------------------------------------------------------------------- the app


class HomeApp:
    """Home's HTTP management server (internal/managementhttp/server.go)."""

    def __init__(self, state: HomeSimState) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        response = await self.handle(request)
        self.state.requests.append((request.method, request.url.path, response.status_code))
        await response(scope, receive, send)

    def home_headers(self) -> dict[str, str]:
        s = self.state
        # withBuildInfoHeaders runs first, on every /v0/management answer (server.go:657-671).
        return {
            "X-CPA-HOME-VERSION": s.version,
            "X-CPA-HOME-COMMIT": s.commit,
            "X-CPA-HOME-BUILD-DATE": s.build_date,
        }

    @staticmethod
    def cpa_headers() -> dict[str, str]:
        # The embedded CPA v7.2.83 Middleware sets these before its key check (CPA handler.go:265-270); Home's
        # release ldflags do not set the CPA library's build info (home-contract §2.5) [inferred].
        return {"X-CPA-VERSION": "dev", "X-CPA-COMMIT": "none", "X-CPA-BUILD-DATE": "unknown"}

    async def handle(self, request: Request) -> Response:
        path = request.url.path
        if path != MANAGEMENT and not path.startswith(MANAGEMENT + "/"):
            return empty_404()
        headers = self.home_headers()
        if not self.state.management_key:
            # clusterAvailabilityMiddleware (server.go:782-810): no secret → empty 404, Home headers only.
            return _with(empty_404(), headers)
        headers |= self.cpa_headers()
        denied = self.key_check(request)
        if denied is not None:
            return _with(denied, headers)
        route = self.routes().get((request.method, path[len(MANAGEMENT) :]))
        if route is None:
            # clusterManagementNoRoute (server.go:673-715): the key is checked (and a bad one counted) first,
            # then an empty 404: e.g. DELETE /oauth-session, not registered in this snapshot (§3.12).
            return _with(empty_404(), headers)
        self.state.settle()
        return _with(await route(request), headers)

    def key_check(self, request: Request) -> Response | None:
        """CPA v7.2.83 AuthenticateManagementKey (handler.go:265-394), ban table per Home process (§2). The
        client IP is the TCP peer: Home's trusted-proxies default is empty, so X-Forwarded-For is ignored."""
        ip = request.client.host if request.client else ""
        local = ip in ("127.0.0.1", "::1")
        provided = ""
        auth = request.headers.get("authorization", "")
        if auth:
            scheme, _, rest = auth.partition(" ")
            provided = rest if scheme.lower() == "bearer" and rest else auth
        if not provided:
            provided = request.headers.get("x-management-key", "")
        check = self.state.bans.check(
            ip, local, provided, secret=self.state.management_key, allow_remote=True, now=self.state.now()
        )
        if check.allowed:
            return None
        return JSONResponse({"error": check.error}, status_code=check.status)

    def routes(self) -> dict[tuple[str, str], Callable[[Request], Any]]:
        r: dict[tuple[str, str], Callable[[Request], Any]] = {
            ("GET", "/auth-files"): self.list_auth_files,
            ("GET", "/auth-files/download"): self.download,
            ("PATCH", "/auth-files/status"): self.patch_status,
            ("PATCH", "/auth-files/fields"): self.patch_fields,
            ("DELETE", "/auth-files"): self.delete,
            ("GET", "/get-auth-status"): self.auth_status,
            ("POST", "/oauth-callback"): self.oauth_callback,
            ("POST", "/api-call"): self.api_call,
            ("GET", "/request-events"): self.request_events,
            ("GET", "/capabilities"): self.capabilities,
        }
        for provider in OAUTH_PROVIDERS:
            route = "anthropic" if provider == "anthropic" else provider
            r[("GET", f"/{route}-auth-url")] = self._auth_url(provider)
        return r

    # ------------------------------------------------------------------------------ credentials

    async def list_auth_files(self, request: Request) -> Response:
        # oauth.go:24-73: the query is never read; byte-wise sort on name (case-sensitive, :65-67).
        files = sorted(
            (listing_entry(r) for r in self.state.live_rows()), key=lambda e: str(e["name"]).encode()
        )
        return JSONResponse({"in_flight_observed_at": None, "files": files})

    async def download(self, request: Request) -> Response:
        row = self.state.find(dict(request.query_params))  # oauth.go:76-97
        if row is None:
            return not_found()
        body = {**row.metadata, "access_token": row.access_token, "uuid": row.id, "filename": row.name}
        return Response(
            json.dumps(body, indent=2),
            media_type="application/json; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{row.name}"'},
        )

    async def patch_status(self, request: Request) -> Response:
        """oauth.go:184-227: only `name` is read (tried as id, then as display name); auth_index ignored."""
        body = await _json(request)
        if not isinstance(body, dict):
            return JSONResponse({"error": "invalid request body"}, status_code=400)
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            return JSONResponse({"error": "name is required"}, status_code=400)
        disabled = body.get("disabled")
        if not isinstance(disabled, bool):
            return JSONResponse({"error": "disabled is required"}, status_code=400)
        row = self.state.find({"id": name}) or self.state.find({"name": name})
        if row is None:
            return JSONResponse({"error": "auth file not found"}, status_code=404)
        if self.state.lost_status_writes > 0:
            # UpsertAuth skips a write whose version moved (repository.go:198-203); the handler says 200.
            self.state.lost_status_writes -= 1
            return JSONResponse({"status": "ok", "disabled": disabled})
        # applyAuthDisabledStatus (oauth.go:525-542): cooldown and `unavailable` are NOT cleared.
        row.disabled = disabled
        row.status = "disabled" if disabled else "active"
        row.status_message = "disabled via management API" if disabled else ""
        row.metadata["disabled"] = disabled
        row.updated_at = self.state.now()
        row.version += 1
        return JSONResponse({"status": "ok", "disabled": disabled})

    async def patch_fields(self, request: Request) -> Response:
        """oauth.go:230-291, applyOAuthFieldPatch :603-637: selectors in query or body, keys = metadata paths."""
        body = await _json(request)
        if not isinstance(body, dict):
            return JSONResponse({"error": "invalid body", "message": "invalid body"}, status_code=400)
        selectors = dict(request.query_params)
        for key in ("id", "uuid", "auth_index", "index", "name", "file", "filename"):
            if key in body and key not in selectors:
                selectors[key] = str(body[key])
        fields = {
            k: v
            for k, v in body.items()
            if k not in ("id", "uuid", "auth_index", "index", "name", "file", "filename", "version")
            and k not in ("max_in_flight", "max_in_flight_by_model")
        }
        row = self.state.find(selectors)
        if row is None:
            return not_found()
        if not fields:
            return JSONResponse(
                {"error": "no fields to update", "message": "no fields to update"}, status_code=400
            )
        for key, value in fields.items():
            key = "proxy_url" if key == "proxy-url" else key  # the only kebab name normalised
            if key == "headers" and isinstance(value, dict):
                merged = dict(row.metadata.get("headers") or {})
                for h, v in value.items():
                    if v in ("", None):
                        merged.pop(h, None)
                    else:
                        merged[h] = v
                row.metadata["headers"] = merged
            else:
                row.metadata[key] = value
            if key == "disabled" and isinstance(value, bool):
                row.disabled = value  # oauth.go:906-924: an earlier non-empty message is kept
                row.status = "disabled" if value else "active"
        row.updated_at = self.state.now()
        row.version += 1
        return JSONResponse({"status": "ok"})

    async def delete(self, request: Request) -> Response:
        """oauth.go:138-181: query selectors only, one target; all=true soft-deletes every OAuth row."""
        params = dict(request.query_params)
        if params.get("all", "").lower() in ("true", "1", "*"):
            rows = self.state.live_rows()
            for r in rows:
                r.deleted = True
            return JSONResponse({"status": "ok", "deleted": len(rows)})
        row = self.state.find(params)
        if row is None:
            return not_found()
        row.deleted = True  # soft delete: deleted_at set, gone from the listing (repository.go:730-772)
        row.version += 1
        return JSONResponse({"status": "ok"})

    # ------------------------------------------------------------------------------------ OAuth

    def _auth_url(self, provider: str) -> Callable[[Request], Any]:
        async def start(request: Request) -> Response:
            """oauth_login.go:73-242: query parameters ignored (no is_webui), a DB session row, state =
            prefix + 32 base64url chars (:1097-1107); kimi answers only url and state (:179)."""
            prefix, redirect, _ = OAUTH_PROVIDERS[provider]
            state = f"{prefix}-{secrets.token_urlsafe(24)}"
            self.state.sessions[state] = OAuthSession(state, provider, self.state.now())
            if provider == "kimi":
                url = f"https://auth.sim.invalid/kimi/device?{urlencode({'user_code': state[-8:]})}"
            else:
                query = {"response_type": "code", "redirect_uri": redirect, "state": state}
                url = f"https://auth.sim.invalid/{provider}/authorize?{urlencode(query)}"
            return JSONResponse({"status": "ok", "url": url, "state": state})

        return start

    def _session(self, state: str) -> OAuthSession | None:
        """oauth_sessions.go:107-128: completed rows are deleted on read after 60 s; pending rows older
        than 20 min turn into "OAuth flow timed out"; error rows are kept forever."""
        session = self.state.sessions.get(state)
        if session is None:
            return None
        now = self.state.now()
        if (
            session.status == "complete"
            and session.completed_at
            and now - session.completed_at > COMPLETED_SESSION_TTL
        ):
            del self.state.sessions[state]
            return None
        if session.status == "pending" and now - session.created_at > OAUTH_SESSION_TTL:
            session.status, session.error = "error", "OAuth flow timed out"
        return session

    async def auth_status(self, request: Request) -> Response:
        state = request.query_params.get("state", "")
        if not state:
            return JSONResponse({"status": "ok"})  # sic, as in CPA (oauth_login.go:247-250)
        if not _valid_state(state):
            return JSONResponse({"status": "error", "error": "invalid state"}, status_code=400)
        session = self._session(state)
        if session is None:
            return JSONResponse({"status": "error", "error": "unknown or expired state"})
        if session.status == "complete":
            return JSONResponse({"status": "ok"})
        if session.status == "error":
            return JSONResponse({"status": "error", "error": session.error})
        return JSONResponse({"status": "wait"})

    async def oauth_callback(self, request: Request) -> Response:
        """oauth_login.go:292-413, in its check order (home-contract §3.10). Behind the key (server.go:357)."""
        body = await _json(request)
        if not isinstance(body, dict):
            return _cb_error(400, "invalid body")
        values = {k: str(body.get(k) or "") for k in ("provider", "redirect_url", "code", "state", "error")}
        if values["redirect_url"]:
            try:
                query = dict(parse_qsl(urlsplit(values["redirect_url"]).query))
            except ValueError:
                return _cb_error(400, "invalid redirect_url")
            for key in ("state", "code"):
                values[key] = values[key] or query.get(key, "")
            values["error"] = values["error"] or query.get("error", "") or query.get("error_description", "")
        state = values["state"]
        if not state:
            return _cb_error(400, "state is required")
        if not _valid_state(state):
            return _cb_error(400, "invalid state")
        if not values["code"] and not values["error"]:
            return _cb_error(400, "code or error is required")
        session = self._session(state)
        if session is None:
            return _cb_error(404, "unknown or expired state")
        if session.status != "pending" or session.callback_at is not None:
            return _cb_error(409, "oauth flow is not pending")
        provider = (
            PROVIDER_ALIASES.get(values["provider"].strip().lower(), "")
            if values["provider"]
            else session.provider
        )
        if not provider or provider == "kimi":
            return _cb_error(400, "unsupported provider")  # kimi has no callback (:370)
        if provider != session.provider:
            return _cb_error(400, "provider does not match state")
        if values["error"]:
            session.status, session.error = "error", "Authentication failed"
            return JSONResponse({"status": "ok"})
        session.callback_at, session.code = self.state.now(), values["code"]
        return JSONResponse({"status": "ok"})

    # ------------------------------------------------------------------------------------ tools

    async def api_call(self, request: Request) -> Response:
        """management/api_call.go:39-150: run by Home itself, token from the stored row, no proxy_url."""
        body = await _json(request)
        if not isinstance(body, dict):
            return JSONResponse({"error": "invalid body"}, status_code=400)
        index = body.get("auth_index") or body.get("authIndex") or body.get("AuthIndex")
        if not body.get("method"):
            return JSONResponse({"error": "missing method"}, status_code=400)
        if not body.get("url"):
            return JSONResponse({"error": "missing url"}, status_code=400)
        row = self.state.find({"id": str(index)}) if index else None
        if row is None:
            return JSONResponse({"error": "auth not found"}, status_code=400)
        raw = body.get("header")
        headers: dict[str, Any] = raw if isinstance(raw, dict) else {}
        sent = {k: str(v).replace("$TOKEN$", row.access_token) for k, v in headers.items()}
        authorised = any(row.access_token in v for v in sent.values())
        if row.upstream_accepts and authorised:
            return JSONResponse({"status_code": 200, "header": {}, "body": '{"ok":true}'})
        upstream = '{"error":{"type":"authentication_error","message":"invalid bearer token"}}'
        return JSONResponse({"status_code": 401, "header": {}, "body": upstream})

    async def request_events(self, request: Request) -> Response:
        """management/request_events.go:21-46 ListRequestEvents → {items,total,limit,offset,sort}; the query
        rules of usage_observability.go parseUsageRecordHTTPQueryWithPagination (:529-640): limit default 50,
        clamped to 200, 400 `invalid_limit` unless a positive integer (:854-867); offset ≥ 0 (:869-879); sort
        one of a fixed list, default timestamp_desc (:881-892); `from` Unix seconds, YYYY-MM-DD or RFC3339,
        inclusive (:971-1030, cluster/usage_observability.go:2301-2302); status failed|failure|error or
        success|succeeded|ok (usageObservabilityStatusScope, :2471-2487)."""
        q = request.query_params
        raw_limit, raw_offset = q.get("limit", "").strip(), q.get("offset", "").strip()
        if raw_limit and (not raw_limit.isdigit() or int(raw_limit) <= 0):
            return _usage_error("invalid_limit", "limit must be a positive integer")
        if raw_offset and not raw_offset.isdigit():
            return _usage_error("invalid_offset", "offset must be a non-negative integer")
        sort = q.get("sort", "").strip() or "timestamp_desc"
        if sort not in ("timestamp_desc", "timestamp_asc", "tokens_desc", "tokens_asc", "cost_desc", "cost_asc",
                        "latency_desc", "latency_asc", "failed_first"):  # fmt: skip
            return _usage_error("invalid_sort", f"unsupported usage sort {sort!r}")
        since = _parse_from(q.get("from", "").strip())
        if since is False:
            return _usage_error(
                "invalid_time_range", "timestamp must be YYYY-MM-DD, Unix seconds, or RFC3339"
            )
        items = list(self.state.events)
        status = q.get("status", "").strip().lower()
        if status in ("failed", "failure", "error"):
            items = [e for e in items if e["failed"]]
        elif status in ("success", "succeeded", "ok"):
            items = [e for e in items if not e["failed"]]
        if q.get("status_code", "").isdigit():
            items = [e for e in items if e["status_code"] == int(q["status_code"])]
        if q.get("credential_id"):
            items = [e for e in items if e["credential"]["credential_id"] == q["credential_id"]]
        if isinstance(since, datetime):
            items = [e for e in items if e["_at"] >= since]
        items.sort(key=lambda e: e["_at"], reverse=sort != "timestamp_asc")
        limit = min(int(raw_limit), REQUEST_EVENTS_MAX_LIMIT) if raw_limit else 50
        offset = int(raw_offset) if raw_offset else 0
        page = [{k: v for k, v in e.items() if k != "_at"} for e in items[offset : offset + limit]]
        return JSONResponse(
            {"items": page, "total": len(items), "limit": limit, "offset": offset, "sort": sort}
        )

    async def capabilities(self, request: Request) -> Response:
        """management/usage_observability.go:26-82 (a subset of the flags)."""
        s = self.state
        return JSONResponse(
            {
                "capabilities": {
                    "request_events": True,
                    "quota_snapshots": True,
                    "credential_cooldown_reset": True,
                },
                "server_info": {
                    "home_version": s.version,
                    "home_commit": s.commit,
                    "home_build_date": s.build_date,
                },
            }
        )


def _with(response: Response, headers: dict[str, str]) -> Response:
    for k, v in headers.items():
        response.headers[k] = v
    return response


def _cb_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"status": "error", "error": message}, status_code=status)


def _valid_state(state: str) -> bool:
    """validateOAuthState (oauth_login.go:1122-1148): 1-128 of [A-Za-z0-9._-], no '..', '/' or '\\'."""
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    return 0 < len(state) <= 128 and set(state) <= allowed and ".." not in state


def _parse_from(raw: str) -> datetime | bool | None:
    """optionalUsageTime (usage_observability.go:1000-1030): None when empty, False when unreadable."""
    if not raw:
        return None
    if raw.isdigit():
        return datetime.fromtimestamp(int(raw), UTC)
    with contextlib.suppress(ValueError):
        return datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=UTC)
    with contextlib.suppress(ValueError):
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        if parsed.tzinfo is not None and "T" in raw:
            return parsed
    return False


def _usage_error(code: str, message: str) -> JSONResponse:
    """respondUsageHTTPError (usage_observability.go:839-853): 400 in the DB-handler envelope."""
    return JSONResponse({"error": code, "message": message}, status_code=400)


async def _json(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        return None


# ---------------------------------------------------------------------------------------- servers


class _HomeMux(asyncio.Protocol):
    """One port for HTTP and RESP (protocolmux/mux.go:44-101). Home's RESP serves only mTLS peers."""

    def __init__(self, server: HomeSimServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.server.connections.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None
        if data[:1] and data[:1] in RESP_FIRST_BYTES:
            self.resp(transport, data)
            return
        proto = H11Protocol(self.server.config, self.server.server_state, {})
        proto.connection_made(transport)
        transport.set_protocol(proto)
        proto.data_received(data)

    def resp(self, transport: asyncio.Transport, data: bytes) -> None:
        if self.server.node:
            # A node refuses RESP on sight, before parsing (CPA redis_queue_protocol.go:61-65).
            transport.write(NODE_RESP_REFUSAL)
            transport.close()
            return
        # Home without a client certificate: AUTH → "-ERR RESP AUTH disabled; use mTLS" (respserver/
        # server.go:592-594), anything else → -NOAUTH (:560-563). Neither touches the HTTP ban table.
        self.buf += data
        if b"\r\n" not in self.buf:
            return
        reply = (
            b"-ERR RESP AUTH disabled; use mTLS\r\n"
            if b"AUTH" in self.buf.upper()[:32]
            else b"-NOAUTH Authentication required.\r\n"
        )
        self.buf = b""
        transport.write(reply)


class _NodeApp:
    """A CPA node in Home mode: every /v0/management/* is an empty 404 before the key middleware, so no
    X-CPA-* header (CPA internal/api/server_management.go:24-28,195-209)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await empty_404()(scope, receive, send)


class HomeSimServer(LoopbackServer):
    """`async with HomeSimServer() as home:` → `home.base_url`, `home.state`. `node=True`: a cluster node."""

    def __init__(
        self,
        management_key: str | None = "sim-key",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        node: bool = False,
        clock: SimClock | None = None,
    ) -> None:
        self.state = HomeSimState(management_key, clock or SimClock())
        self.node = node
        self.host = host
        self.port = port
        app: Any = _NodeApp() if node else HomeApp(self.state)
        self.config = uvicorn.Config(
            app, proxy_headers=False, lifespan="off", access_log=False, log_config=None, server_header=False
        )
        self.config.load()
        self.server_state = ServerState()
        self.connections: set[asyncio.Transport] = set()
        self._server: asyncio.Server | None = None
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _HomeMux(self), self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self.state.home_id = f"{self.host}:{self.port}"


def seed_home_demo(state: HomeSimState) -> list[HomeRow]:
    """A small Home world for trials: two healthy accounts, one Home disabled itself, one a node saw fail."""
    ok = state.add_credential("codex", "alice@example.com")
    state.add_credential("claude", "bob@example.com")
    dead = state.add_credential("claude", "carol@example.com")
    state.revoke(dead)
    failing = state.add_credential("codex", "dave@example.com")
    state.record_result(failing, 403, '{"error":{"message":"OAuth token has been revoked"}}')
    return [ok, dead, failing]


async def run_home_sim_cli(
    host: str, port: int, *, management_key: str = "sim-key", node: bool = False, seed_demo: bool = True
) -> None:
    """`reauthd sim --home` / `--node`: serve until SIGINT/SIGTERM, printing the base URL (never the key)."""
    server = HomeSimServer(management_key, host=host, port=port, node=node)
    await server.start()
    if node:
        print(f"CPA cluster node simulator (-home-jwt) listening on {server.base_url}", flush=True)
    else:
        if seed_demo:
            seed_home_demo(server.state)
        print(f"CLIProxyAPIHome simulator listening on {server.base_url}", flush=True)
        print(
            f"  management API: {server.base_url}/v0/management/  (key: the --management-key value)",
            flush=True,
        )
    try:
        await wait_for_stop_signal()
    finally:
        await server.stop()
