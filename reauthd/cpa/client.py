"""The typed CPA management client: one `CPAClient` per CPA, one method per management endpoint reauthd uses.

Everything the methods share (key gate, retries, body caps, error mapping) lives in `wire.py`; this
module names the endpoints, shapes the requests and validates the answers with `models.py`.
"""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Self, TypeVar
from urllib.parse import parse_qsl, urlsplit

import httpx
import structlog
from pydantic import BaseModel, SecretStr, ValidationError

from reauthd.cpa.errors import (
    CPAError,
    CPARequestError,
    MalformedResponse,
    ManagementUnavailable,
    TransientCPAError,
)
from reauthd.cpa.gate import GateSnapshot, GateState, KeyGate
from reauthd.cpa.kind import ConfiguredKind, FoundKind, HomeVersion, describe, resp_node_probe
from reauthd.cpa.models import (
    APICallResult,
    AuthFile,
    AuthModel,
    AuthModels,
    AuthStatus,
    AuthURL,
    CancelResult,
    OkBody,
    ResetQuotaResult,
    SkippedEntry,
    UploadResult,
    VertexImportResult,
    parse_auth_file_listing,
)
from reauthd.cpa.wire import (
    Answer,
    BodyReader,
    CPAVersion,
    KiB,
    ManagementWire,
    MiB,
    RetryPolicy,
    Route,
)

log = structlog.get_logger(__name__)

# httpx logs every request URL (query string included: `get-auth-status?state=…`) at INFO. An OAuth
# state must never reach a log, so quieten it unless someone deliberately configured it.
for _name in ("httpx", "httpcore"):
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(logging.WARNING)

_M = TypeVar("_M", bound=BaseModel)
_T = TypeVar("_T")

#: Default cap for the listing: 50,000 entries are ~85 MiB (contract §12); leave room, stop garbage.
DEFAULT_LISTING_MAX_BYTES = 256 * MiB

# CPA's ValidateOAuthState (contract §4.2): 1-128 of [A-Za-z0-9._-], no "..".
_STATE_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_PLUGIN_PROVIDER_RE = re.compile(r"^[a-z0-9-]+$")

# Provider names used in auth files and by people → the `<x>-auth-url` route (contract §4.1).
_AUTH_URL_ROUTE = {
    "claude": "anthropic",
    "anthropic": "anthropic",
    "codex": "codex",
    "openai": "codex",
    "antigravity": "antigravity",
    "anti-gravity": "antigravity",
    "kimi": "kimi",
    "xai": "xai",
    "x-ai": "xai",
    "x.ai": "xai",
    "grok": "xai",
    # Removed built-ins, still present on older CPAs (contract §4.1).
    "iflow": "iflow",
    "qwen": "qwen",
    # Not a built-in any more (removed 2026-06-18, contract §4.1): Gemini CLI is a plugin, and CPA hands a
    # `type:"gemini"` file to plugins as provider "gemini-cli" (internal/watcher/synthesizer/file.go), so
    # its login is that plugin's `/gemini-cli-auth-url` (served by ServePluginAuthURL). Same as providers.py.
    "gemini": "gemini-cli",
}
_WEBUI_PROVIDERS = frozenset({"anthropic", "codex", "antigravity"})

# Routes. `idempotent` decides whether a timeout or a foreign 5xx may be retried (see wire.py).
_LIST = Route("GET", "/auth-files", idempotent=True, max_bytes=DEFAULT_LISTING_MAX_BYTES)
_STATUS = Route("PATCH", "/auth-files/status", idempotent=True, max_bytes=64 * KiB)
_FIELDS = Route("PATCH", "/auth-files/fields", idempotent=True, max_bytes=64 * KiB)
# Deleting one named file twice has the same effect; a 404 on a *retry* means the first try won.
_DELETE = Route("DELETE", "/auth-files", idempotent=True, max_bytes=64 * KiB)
_DOWNLOAD = Route("GET", "/auth-files/download", idempotent=True, max_bytes=8 * MiB)
# Same name, same bytes: a repeated upload leaves the same file.
_UPLOAD = Route("POST", "/auth-files", idempotent=True, max_bytes=64 * KiB)
_MODELS = Route("GET", "/auth-files/models", idempotent=True, max_bytes=4 * MiB, feature="model listing")
_AUTH_STATUS = Route("GET", "/get-auth-status", idempotent=True, max_bytes=64 * KiB)
_CANCEL = Route("DELETE", "/oauth-session", idempotent=True, max_bytes=64 * KiB, feature="cancelling logins")
# A repeated callback would meet "oauth flow is not pending": only connect failures are retried.
_CALLBACK = Route("POST", "/oauth-callback", idempotent=False, max_bytes=64 * KiB, keyed=False)
# /api-call makes an upstream request (CPA waits up to 60 s): never repeated here.
_API_CALL = Route(
    "POST",
    "/api-call",
    idempotent=False,
    max_bytes=16 * MiB,
    read_timeout_s=75.0,
    upstream_proxy=True,
    feature="credential probes",
)
_VERTEX = Route("POST", "/vertex/import", idempotent=True, max_bytes=64 * KiB, feature="Vertex import")
_RESET_QUOTA = Route("POST", "/reset-quota", idempotent=True, max_bytes=1 * MiB, feature="quota reset")


class HealthState(StrEnum):
    OK = "ok"
    UNVERIFIED = "unverified"  # nothing has proved the key yet (fresh client or after a pause)
    KEY_REJECTED = "key_rejected"
    BANNED = "banned"
    UNREACHABLE = "unreachable"  # the last call ended in a transport failure


@dataclass(frozen=True, slots=True)
class CPAHealth:
    """What the daemon and the operator page show for one CPA. `last_error` is one sentence, secret-free."""

    cpa: str
    state: HealthState
    since: datetime | None
    paused_until: datetime | None
    last_error: str | None
    version: CPAVersion | None
    kind: FoundKind = FoundKind.UNKNOWN  # what answers at base_url (kind.py)
    kind_text: str = "not identified yet"  # e.g. "plain CPA v7.2.140", "CLIProxyAPIHome v1.0.67"


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class _Settings:
    timeout: float
    connect_timeout: float
    max_connections: int
    retry: RetryPolicy
    pause_after_rejection: timedelta | None
    listing_max_bytes: int


class CPAClient:
    """Typed client of one CPA's management API. Use as `async with CPAClient(...) as cpa:`.

    `max_connections` defaults to 3: with a server-side key change, every in-flight call can earn one
    failed attempt before the gate closes, and the RESP error stream holds one more connection; CPA
    bans at 5 (contract §1).
    """

    # CPA takes the pasted callback without the management key; a Home wants it (cpa/home.py).
    _callback_route: Route = _CALLBACK

    def __init__(
        self,
        name: str,
        base_url: str,
        management_key: SecretStr | str,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        max_connections: int = 3,
        retry: RetryPolicy | None = None,
        pause_after_rejection: timedelta | None = None,
        gate_snapshot: GateSnapshot | None = None,
        listing_max_bytes: int = DEFAULT_LISTING_MAX_BYTES,
        transport: httpx.AsyncBaseTransport | None = None,
        tls_verify: bool | str = True,
        clock: Callable[[], datetime] = _utcnow,
        kind: ConfiguredKind = "auto",
    ) -> None:
        """`tls_verify`: True (system CAs), a CA bundle path (a self-signed CPA), or False (not advised).
        `kind`: what the configuration says answers at base_url; the answers are checked against it (kind.py)."""
        self.configured_kind: ConfiguredKind = kind
        self.name = name
        self.base_url = base_url.rstrip("/")
        key = management_key if isinstance(management_key, SecretStr) else SecretStr(management_key)
        self._key = key
        self._transport = transport
        self.tls_verify = tls_verify
        self._clock = clock
        self._settings = _Settings(
            timeout, connect_timeout, max_connections, retry or RetryPolicy(), pause_after_rejection,
            listing_max_bytes,
        )  # fmt: skip
        self.gate = KeyGate.restore(
            gate_snapshot, name, key.get_secret_value(), pause_after_rejection=pause_after_rejection
        )
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            transport=transport,
            verify=tls_context(tls_verify),  # httpcore adds ALPN to it: never share it with RESP
            trust_env=False,  # a proxy from the environment must not see the management key
            follow_redirects=False,
        )
        self._wire = ManagementWire(
            name, self._http, key, self.gate, self._settings.retry, clock,
            configured_kind=kind, node_probe=resp_node_probe(self.base_url, lambda: tls_context(tls_verify)),
        )  # fmt: skip
        self._list_route = replace(_LIST, max_bytes=listing_max_bytes)
        self.last_skipped: list[SkippedEntry] = []

    def __repr__(self) -> str:
        return f"CPAClient(name={self.name!r}, base_url={self.base_url!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def on_error(self) -> Callable[[CPAError], None] | None:
        """Called with every typed error a management call ends with (metrics); never changes the call."""
        return self._wire.on_error

    @on_error.setter
    def on_error(self, observer: Callable[[CPAError], None] | None) -> None:
        self._wire.on_error = observer

    def rebuilt_with_key(self, management_key: SecretStr | str) -> CPAClient:
        """A new client (and a new, open gate) with the same settings and a new key. Close the old one."""
        s = self._settings
        return CPAClient(
            self.name,
            self.base_url,
            management_key,
            timeout=s.timeout,
            connect_timeout=s.connect_timeout,
            max_connections=s.max_connections,
            retry=s.retry,
            pause_after_rejection=s.pause_after_rejection,
            listing_max_bytes=s.listing_max_bytes,
            transport=self._transport,
            tls_verify=self.tls_verify,
            clock=self._clock,
            kind=self.configured_kind,
        )

    # ---------------------------------------------------------------------------------- status

    @property
    def clock(self) -> Callable[[], datetime]:
        """The injected clock; the error stream uses it so both transports judge the gate alike."""
        return self._clock

    @property
    def management_key(self) -> SecretStr:
        return self._key

    @property
    def version(self) -> CPAVersion | None:
        """The last `X-CPA-VERSION` / `-COMMIT` / `-BUILD-DATE` seen, or None before the first answer."""
        return self._wire.version

    @property
    def kind(self) -> FoundKind:
        """What answered at base_url so far: learnt from headers of ordinary keyed calls (kind.py, §8)."""
        return self._wire.found_kind

    @property
    def home_version(self) -> HomeVersion | None:
        """The last `X-CPA-HOME-*` seen (a Home only)."""
        return self._wire.home_version

    @property
    def kind_text(self) -> str:
        return describe(self.kind, self.home_version, self.version.version if self.version else None)

    @property
    def health(self) -> CPAHealth:
        gate = self.gate
        now = self._clock()
        last = self._wire.last_error
        if gate.paused(now):
            state = HealthState.BANNED if gate.state is GateState.BANNED else HealthState.KEY_REJECTED
            cause = gate.cause
            return CPAHealth(
                self.name,
                state,
                gate.since,
                gate.paused_until,
                cause.sentence if cause else None,
                self.version,
                self.kind,
                self.kind_text,
            )
        if isinstance(last, TransientCPAError | ManagementUnavailable):
            # Management off, a cluster node, a Home this client cannot serve: its sentence, not "key not
            # accepted yet" (nothing about the key was learnt).
            state = HealthState.UNREACHABLE
        elif gate.state is GateState.OK:
            state = HealthState.OK
        else:
            state = HealthState.UNVERIFIED
        since = self._wire.last_error_at if last else gate.since
        sentence = last.sentence if last else None
        return CPAHealth(self.name, state, since, None, sentence, self.version, self.kind, self.kind_text)

    @property
    def state(self) -> HealthState:
        return self.health.state

    # ------------------------------------------------------------------------------ auth files

    async def list_auth_files(
        self, *, name: str | None = None, auth_index: str | None = None
    ) -> list[AuthFile]:
        """`GET /auth-files`, optionally filtered (the only filters CPA has, contract §2).

        Entries that break the contract are skipped, logged and kept in `last_skipped`; a broken
        envelope (not JSON, no `files` list) raises MalformedResponse.
        """
        params = {k: v for k, v in (("name", name), ("auth_index", auth_index)) if v is not None}
        answer = await self._wire.call(self._list_route, params=params)
        try:
            listing = parse_auth_file_listing(answer.body)
        except ValidationError as exc:
            raise self._malformed(self._list_route, exc) from None
        self.last_skipped = listing.skipped
        if listing.skipped:
            log.warning(
                "cpa.listing.entries_skipped",
                cpa=self.name,
                skipped=len(listing.skipped),
                kept=len(listing.files),
                examples=[f"#{s.position} {s.name or '?'}: {s.problem}" for s in listing.skipped[:5]],
            )
        return listing.files

    async def list_auth_files_raw(
        self, *, name: str | None = None, auth_index: str | None = None
    ) -> bytes | bytearray:
        """The body of `GET /auth-files` unparsed (same gate, retries and cap) for callers with a leaner parser."""
        params = {k: v for k, v in (("name", name), ("auth_index", auth_index)) if v is not None}
        answer = await self._wire.call(self._list_route, params=params)
        return answer.body

    async def stream_auth_files(
        self,
        reader: Callable[[], BodyReader[_T]],
        *,
        name: str | None = None,
        auth_index: str | None = None,
    ) -> _T:
        """`GET /auth-files` fed to `reader()` chunk by chunk while it streams; returns what the reader built.

        The whole body is never held (50,000 entries are ~85 MiB, contract §12); the key gate, the
        retries and the byte cap are the other methods'. A retry starts a fresh `reader()` (a parse
        restarts from scratch); a BodyRejected from the reader becomes MalformedResponse naming the
        endpoint, so nothing is built from a partial listing.
        """
        params = {k: v for k, v in (("name", name), ("auth_index", auth_index)) if v is not None}
        answer = await self._wire.call(self._list_route, params=params, reader=reader)
        result: _T = answer.parsed
        return result

    async def set_disabled(self, name: str, disabled: bool, *, auth_index: str | None = None) -> None:
        """`PATCH /auth-files/status`. With `auth_index`, CPA refuses (404) if the file is no longer that auth."""
        body: dict[str, Any] = {"name": name, "disabled": disabled}
        if auth_index is not None:
            body["auth_index"] = auth_index
        answer = await self._wire.call(_STATUS, json_body=body)
        self._expect_ok(_STATUS, answer)

    async def patch_fields(self, name: str, fields: Mapping[str, object]) -> None:
        """`PATCH /auth-files/fields` (contract §3). Only patch after the listing shows the new file (§12)."""
        if not fields:
            raise ValueError("patch_fields needs at least one field")
        if "name" in fields:
            raise ValueError("'name' selects the file; it cannot be patched")
        answer = await self._wire.call(_FIELDS, json_body={"name": name, **fields})
        self._expect_ok(_FIELDS, answer)

    async def delete_auth_file(self, name: str) -> None:
        """`DELETE /auth-files?name=…`: removes the file and the runtime auth."""
        try:
            answer = await self._wire.call(_DELETE, params={"name": name})
        except CPARequestError as exc:
            if exc.status == 404 and exc.error_text == "auth file not found" and exc.attempt > 1:
                # An earlier attempt timed out after CPA had deleted the file: the goal is reached.
                log.info("cpa.delete.already_gone", cpa=self.name, auth_file=name)
                return
            raise
        self._expect_ok(_DELETE, answer)

    async def download_auth_file(self, name: str) -> bytes:
        """`GET /auth-files/download?name=…`: the raw file (it holds tokens: never log it)."""
        answer = await self._wire.call(_DOWNLOAD, params={"name": name})
        return bytes(answer.body)

    async def upload_auth_file(self, name: str, content: bytes) -> UploadResult:
        """`POST /auth-files?name=…` with the raw JSON body. CPA validates the JSON before writing (§3)."""
        answer = await self._wire.call(
            _UPLOAD,
            params={"name": name},
            content=content,
            extra_headers={"Content-Type": "application/json"},
        )
        return self._parse(_UPLOAD, answer, UploadResult)

    async def models(self, name: str) -> list[AuthModel]:
        """`GET /auth-files/models?name=…`: the registry's models for that auth (does not test it)."""
        answer = await self._wire.call(_MODELS, params={"name": name})
        return self._parse(_MODELS, answer, AuthModels).models

    async def reset_quota(self, auth_index: str) -> ResetQuotaResult:
        """`POST /reset-quota {"auth_index"}`: clears cooldown and quota state."""
        answer = await self._wire.call(_RESET_QUOTA, json_body={"auth_index": auth_index})
        return self._parse(_RESET_QUOTA, answer, ResetQuotaResult)

    # ---------------------------------------------------------------------------------- OAuth

    async def auth_url(self, provider: str, *, is_webui: bool = False) -> AuthURL:
        """`GET /<provider>-auth-url`: a fresh authorize URL (callback) or verification URL + code (device).

        `provider` may be an auth file `type` (`claude` → `/anthropic-auth-url`) or a plugin id.
        A route this CPA lacks raises FeatureMissing ("too old or too new for iflow login").
        """
        key = provider.strip().lower()
        route_name = _AUTH_URL_ROUTE.get(key)
        if route_name is None:
            if not _PLUGIN_PROVIDER_RE.fullmatch(key):
                raise ValueError(f"not a provider CPA can log in: {provider!r}")
            route_name = key
        route = Route("GET", f"/{route_name}-auth-url", idempotent=False, max_bytes=64 * KiB,
                      feature=f"{key} login")  # fmt: skip
        params = {"is_webui": "true"} if is_webui and route_name in _WEBUI_PROVIDERS else None
        answer = await self._wire.call(route, params=params)
        result = self._parse(route, answer, AuthURL)
        if not _STATE_RE.fullmatch(result.state) or ".." in result.state:
            raise MalformedResponse(self.name, route.full_path, "the OAuth state is not a valid CPA state")
        return result

    async def get_auth_status(self, state: str) -> AuthStatus:
        """`GET /get-auth-status?state=…`. A completed state is kept only 60 s: poll faster than that (§4.2)."""
        # Without a state CPA answers {"status":"ok"} (sic): never let an empty state read as success.
        if not state:
            raise ValueError("get_auth_status needs the state CPA returned with the auth URL")
        answer = await self._wire.call(_AUTH_STATUS, params={"state": state}, secrets=[state])
        return self._parse(_AUTH_STATUS, answer, AuthStatus)

    async def cancel_oauth_session(self, state: str) -> bool:
        """`DELETE /oauth-session?state=…`; True if a pending session was cancelled."""
        if not state:
            raise ValueError("cancel_oauth_session needs a state")
        answer = await self._wire.call(_CANCEL, params={"state": state}, secrets=[state])
        return self._parse(_CANCEL, answer, CancelResult).cancelled

    async def post_oauth_callback(self, redirect_url: str, *, provider: str | None = None) -> None:
        """`POST /oauth-callback {"redirect_url": <as pasted>}` (contract §4.3).

        The URL is sent unchanged: CPA extracts `state`/`code`/`error` itself. Its refusals (400 invalid
        redirect_url / state, 404 unknown or expired state, 409 already completed / not pending, 500)
        raise CPARequestError with CPA's message.
        """
        if not redirect_url.strip():
            raise ValueError("the pasted callback address is empty")
        body: dict[str, str] = {"redirect_url": redirect_url}
        if provider:
            body["provider"] = provider
        secrets = [redirect_url, *_query_values(redirect_url)]
        answer = await self._wire.call(self._callback_route, json_body=body, secrets=secrets)
        self._expect_ok(self._callback_route, answer)

    # ---------------------------------------------------------------------------------- tools

    async def api_call(
        self,
        auth_index: str,
        method: str,
        url: str,
        headers: Mapping[str, str],
        data: str = "",
    ) -> APICallResult:
        """`POST /api-call`: one upstream request with the credential's token (`$TOKEN$` in header values).

        Returns the upstream status/headers/body whatever they are. A 502 (CPA could not reach the
        upstream) raises UpstreamRequestFailed, a TransientCPAError the prober may treat as transient.
        """
        body = {"auth_index": auth_index, "method": method, "url": url, "header": dict(headers), "data": data}
        answer = await self._wire.call(_API_CALL, json_body=body)
        return self._parse(_API_CALL, answer, APICallResult)

    async def vertex_import(self, service_account_json: bytes, location: str) -> VertexImportResult:
        """`POST /vertex/import` (multipart `file` + `location`), contract §6."""
        answer = await self._wire.call(
            _VERTEX,
            files={"file": ("service-account.json", service_account_json, "application/json")},
            form={"location": location} if location else None,
        )
        return self._parse(_VERTEX, answer, VertexImportResult)

    # -------------------------------------------------------------------------------- parsing

    def _parse(self, route: Route, answer: Answer, model: type[_M]) -> _M:
        try:
            return model.model_validate_json(answer.body)
        except ValidationError as exc:
            raise self._malformed(route, exc) from None

    def _expect_ok(self, route: Route, answer: Answer) -> None:
        body = self._parse(route, answer, OkBody)
        if body.status != "ok":
            raise MalformedResponse(self.name, route.full_path, f"status is {body.status[:40]!r}, not 'ok'")

    def _malformed(self, route: Route, exc: ValidationError) -> MalformedResponse:
        first = exc.errors(include_input=False, include_url=False)[:1]
        if first:
            where = ".".join(str(p) for p in first[0]["loc"]) or "body"
            problem = f"{where}: {first[0]['msg']}"
        else:
            problem = "the body does not match the contract"
        return MalformedResponse(self.name, route.full_path, problem)


def tls_context(verify: bool | str) -> ssl.SSLContext:
    """A fresh TLS context without ALPN. The RESP stream relies on that: CPA hands a TLS connection that
    negotiated `h2`/`http/1.1` to HTTP and anything else to RESP (internal/api/protocol_multiplexer.go)."""
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)


def _query_values(url: str) -> list[str]:
    """The query values of a pasted callback URL (state, code), only so they can be redacted from errors."""
    try:
        return [v for _, v in parse_qsl(urlsplit(url).query) if v]
    except ValueError:
        return []
