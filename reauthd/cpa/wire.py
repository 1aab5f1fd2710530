"""One management request on the wire: key gate, retries, body caps, and CPA answers mapped to typed errors.

This is the only place in reauthd that retries a CPA call (design: one retry policy per call path).

Retry rule (decided here, documented in the report):
- connect errors, connect/pool timeouts: the request never reached CPA → retried for every route;
- read/write timeouts, dropped connections, and 5xx answers that are *not* CPA's own (no `X-CPA-VERSION`
  header, which CPA's key middleware puts on every keyed answer, and either a 502/503/504 or no
  `{"error": ...}` body: a reverse proxy's page, a restart) → retried only for idempotent routes;
- CPA's own error answers are never retried: 4xx, `500 {"error":..}`, `503 core auth manager unavailable`
  (a configuration state, not a blip) and `/api-call`'s `502 request failed` (the *upstream* failed).
Bounded attempts with full-jitter exponential backoff; the gate is checked again before every retry.

404 with an empty body (contract §1 and §4.1, internal/api/server_management.go pluginManagementNoRoute):
- on the key-less callback route it can only mean "management is off" → ManagementNotEnabled;
- with `X-CPA-VERSION` set, CPA's key middleware ran and accepted the key, so management is on and the
  route is unknown to this version → FeatureMissing;
- without that header it is either "management is off" or an older CPA without the plugin NoRoute
  handler → one probe of `GET /get-auth-status` (no state; answers `200 {"status":"ok"}` on every
  version) decides: 200 → FeatureMissing, empty 404 → ManagementNotEnabled.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

import httpx
import structlog
from pydantic import SecretStr

from reauthd.cpa.errors import (
    AuthManagerUnavailable,
    CPAError,
    CPARequestError,
    FeatureMissing,
    KeyProblem,
    MalformedResponse,
    ManagementBanned,
    ManagementKeyNotSet,
    ManagementKeyRejected,
    ManagementNotEnabled,
    RemoteManagementDisabled,
    ResponseTooLarge,
    TransientCPAError,
    UpstreamRequestFailed,
    parse_ban_retry_after,
)
from reauthd.cpa.gate import KeyGate
from reauthd.cpa.kind import (
    ClusterNodeRefused,
    ConfiguredKind,
    FoundKind,
    HomeVersion,
    NodeProbe,
    home_version_of,
    kind_from_headers,
    refusal,
)

log = structlog.get_logger(__name__)

MANAGEMENT_PREFIX = "/v0/management"
_ERROR_TEXT_MAX = 300
KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded, jittered exponential backoff. `attempts` counts the first try."""

    attempts: int = 3
    base_delay_s: float = 0.25
    max_delay_s: float = 4.0

    def delay(self, retry_number: int) -> float:
        """Full jitter: uniform in [0, min(max, base·2^n)] so many daemons do not retry in lockstep."""
        return random.uniform(0.0, min(self.max_delay_s, self.base_delay_s * (2**retry_number)))


@dataclass(frozen=True, slots=True)
class Route:
    """A management endpoint as the client uses it."""

    method: str
    path: str  # relative to /v0/management, e.g. "/auth-files"
    idempotent: bool
    max_bytes: int = 1 * MiB
    keyed: bool = True  # False only for /oauth-callback, which sits outside the key middleware
    feature: str | None = None  # named in FeatureMissing ("iflow login")
    read_timeout_s: float | None = None
    upstream_proxy: bool = False  # /api-call: a 502 means the upstream failed

    @property
    def full_path(self) -> str:
        return MANAGEMENT_PREFIX + self.path

    @property
    def label(self) -> str:
        return f"{self.method} {self.full_path}"


#: The major versions of CPA whose management API reauthd was checked against (contract §13: v7.2.140).
CHECKED_MAJORS = frozenset({7})
_MAJOR = re.compile(r"^\s*v?(\d+)\.")


@dataclass(frozen=True, slots=True)
class CPAVersion:
    """From the `X-CPA-*` headers CPA sets on every management answer (handler.go Middleware)."""

    version: str
    commit: str | None = None
    build_date: str | None = None
    support_plugin: str | None = None

    @property
    def major(self) -> int | None:
        """`v7.2.140` → 7; None for a version without one (a dev build)."""
        match = _MAJOR.match(self.version)
        return int(match.group(1)) if match else None

    def unchecked_note(self, cpa: str) -> str | None:
        """One sentence when this is a major version reauthd was not checked against, else None."""
        major = self.major
        if major is None or major in CHECKED_MAJORS:
            return None
        checked = ", ".join(f"v{m}" for m in sorted(CHECKED_MAJORS))
        return (
            f"CPA {cpa!r} reports version {self.version[:40]}, a major version reauthd was not checked "
            f"against ({checked}); reauthd carries on while CPA's answers look as expected"
        )


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: httpx.Headers
    body: bytes | bytearray  # empty when a BodyReader consumed a 2xx body
    attempt: int
    parsed: Any = None  # what the BodyReader returned, for a streamed 2xx answer


class BodyRejected(ValueError):
    """Raised by a BodyReader: the 2xx body is unusable (garbage, cut short). Becomes MalformedResponse."""


_T_co = TypeVar("_T_co", covariant=True)


class BodyReader(Protocol[_T_co]):
    """Consumes a 2xx body chunk by chunk while it streams, so a huge answer is never held whole.

    `feed` and `close` raise BodyRejected for a body they cannot use; a retry starts a fresh reader.
    """

    def feed(self, chunk: bytes) -> None: ...

    def close(self) -> _T_co: ...


ReaderFactory = Callable[[], BodyReader[Any]]


_PROBE = Route("GET", "/get-auth-status", idempotent=True, max_bytes=4 * KiB)
_CONNECT_FAILURES = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_MIDWAY_FAILURES = (httpx.ReadTimeout, httpx.WriteTimeout, httpx.ReadError, httpx.WriteError,
                    httpx.RemoteProtocolError)  # fmt: skip


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every known secret in `text` and cut it short: CPA error texts end up in sentences and logs."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    text = " ".join(text.split())
    return text if len(text) <= _ERROR_TEXT_MAX else text[: _ERROR_TEXT_MAX - 1] + "…"


def error_text_of(body: bytes | bytearray) -> tuple[bool, str]:
    """(is CPA's JSON error envelope, `error` text + `: message` when present)."""
    if not body or len(body) > 64 * KiB:
        return False, ""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False, ""
    if not isinstance(data, dict) or not isinstance(data.get("error"), str):
        return False, ""
    text: str = data["error"]
    message = data.get("message")
    if isinstance(message, str) and message.strip():
        text = f"{text}: {message}"
    return True, text


class ManagementWire:
    """Sends management requests for one CPA. Owns no client: `CPAClient` opens and closes the httpx client."""

    def __init__(
        self,
        cpa: str,
        http: httpx.AsyncClient,
        key: SecretStr,
        gate: KeyGate,
        retry: RetryPolicy,
        clock: Callable[[], datetime],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        *,
        configured_kind: ConfiguredKind = "auto",
        node_probe: NodeProbe | None = None,
    ) -> None:
        self.cpa = cpa
        self._http = http
        self._key = key
        self.gate = gate
        self.retry = retry
        self._clock = clock
        self._sleep = sleep
        self.version: CPAVersion | None = None
        self.last_error: CPAError | None = None
        self.last_error_at: datetime | None = None
        # Told about every typed error a call ends with (the daemon counts them by class in /metrics).
        self.on_error: Callable[[CPAError], None] | None = None
        self.last_ok_at: datetime | None = None
        # What answers at base_url (kind.py, home-contract §8): learnt from the headers of every answer.
        self.configured_kind: ConfiguredKind = configured_kind
        self.found_kind = FoundKind.UNKNOWN
        self.home_version: HomeVersion | None = None
        self._node_probe = node_probe
        self._is_node: bool | None = None  # the RESP probe runs at most once per client
        self.serves = FoundKind.CPA  # the Home adapter (reauthd/cpa/home.py) sets HOME

    async def call(
        self,
        route: Route,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        content: bytes | None = None,
        files: Mapping[str, tuple[str, bytes, str]] | None = None,
        form: Mapping[str, str] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        secrets: Iterable[str] = (),
        reader: ReaderFactory | None = None,
    ) -> Answer:
        """Send `route` and return a 2xx answer, or raise the typed error (see the module docstring).

        With `reader`, a 2xx body is fed to a fresh `reader()` as it streams (counted against the cap
        chunk by chunk) and `Answer.parsed` holds what it returned; every retry starts a new reader, so
        a parse never continues across attempts. A BodyRejected becomes MalformedResponse (not retried).
        """
        secret_list = [self._key.get_secret_value(), *secrets]
        rejected: BodyRejected | None = None
        async with self.gate.admit(route.full_path, self._clock):
            try:
                answer = await self._send_with_retries(
                    route, params, json_body, content, files, form, extra_headers, secret_list, reader
                )
                if answer.status not in (401, 403):
                    # Home or a kind mismatch: refused before anything is read (kind.py).
                    refused = refusal(
                        self.cpa, route.full_path, self.configured_kind, answer.headers,
                        self.version.version if self.version else None, self.serves,
                    )  # fmt: skip
                    if refused is not None:
                        raise refused
                if not 200 <= answer.status < 300:
                    raise await self._error_for(route, answer, secret_list)
            except CPAError as exc:
                self._remember(exc)
                raise
            except BodyRejected as exc:
                # CPA answered 2xx; the body is what is wrong. Like a buffered answer that fails its
                # parse afterwards, this is not a transport problem of the CPA connection.
                rejected = exc
        self.last_error = None
        self.last_ok_at = self._clock()
        if rejected is not None:
            raise MalformedResponse(self.cpa, route.full_path, str(rejected)) from None
        return answer

    def _remember(self, exc: CPAError) -> None:
        self.last_error = exc
        self.last_error_at = self._clock()
        if isinstance(exc, KeyProblem):
            self.gate.record_problem(exc, self._clock())
        if self.on_error is not None:
            try:
                self.on_error(exc)
            except Exception as failure:  # an observer (metrics) must never change what callers see
                log.warning("cpa.error_observer_failed", cpa=self.cpa, error=type(failure).__name__)

    # ---------------------------------------------------------------------------------- sending

    async def _send_with_retries(
        self,
        route: Route,
        params: Mapping[str, str] | None,
        json_body: Any,
        content: bytes | None,
        files: Mapping[str, tuple[str, bytes, str]] | None,
        form: Mapping[str, str] | None,
        extra_headers: Mapping[str, str] | None,
        secrets: list[str],
        reader: ReaderFactory | None = None,
    ) -> Answer:
        attempts = max(1, self.retry.attempts)
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                await self._sleep(self.retry.delay(attempt - 2))
                # Another call may have closed the gate while we slept.
                self.gate.check(route.full_path, self._clock())
            retryable_what: str | None = None
            try:
                answer = await self._send_once(
                    route, params, json_body, content, files, form, extra_headers, attempt, reader
                )
            except _CONNECT_FAILURES as exc:
                retryable_what = _describe(exc)
            except _MIDWAY_FAILURES as exc:
                if not route.idempotent:
                    raise TransientCPAError(self.cpa, route.full_path, _describe(exc), attempt) from None
                retryable_what = _describe(exc)
            except httpx.DecodingError:
                raise MalformedResponse(self.cpa, route.full_path, "the body could not be decoded") from None
            except httpx.HTTPError as exc:
                # Anything else httpx raises (proxy errors, protocol misuse): one sentence, no URL.
                raise TransientCPAError(self.cpa, route.full_path, _describe(exc), attempt) from None
            else:
                if not self._is_foreign_5xx(route, answer):
                    return answer
                if not route.idempotent:
                    what = f"HTTP {answer.status} from something other than CPA"
                    raise TransientCPAError(self.cpa, route.full_path, what, attempt)
                retryable_what = f"HTTP {answer.status} from something other than CPA"
            log.warning(
                "cpa.call.retry" if attempt < attempts else "cpa.call.gave_up",
                cpa=self.cpa,
                endpoint=route.label,
                attempt=attempt,
                what=retryable_what,
            )
        raise TransientCPAError(self.cpa, route.full_path, retryable_what or "no answer", attempts)

    async def _send_once(
        self,
        route: Route,
        params: Mapping[str, str] | None,
        json_body: Any,
        content: bytes | None,
        files: Mapping[str, tuple[str, bytes, str]] | None,
        form: Mapping[str, str] | None,
        extra_headers: Mapping[str, str] | None,
        attempt: int,
        reader: ReaderFactory | None = None,
    ) -> Answer:
        headers: dict[str, str] = dict(extra_headers or {})
        if route.keyed:
            headers["Authorization"] = "Bearer " + self._key.get_secret_value()
        timeout: httpx.Timeout | None = None
        if route.read_timeout_s is not None:
            base = self._http.timeout
            timeout = httpx.Timeout(
                connect=base.connect, read=route.read_timeout_s, write=base.write, pool=base.pool
            )
        started = time.monotonic()
        request = self._http.build_request(
            route.method,
            route.full_path,
            params=dict(params) if params else None,
            json=json_body,
            content=content,
            files=dict(files) if files else None,
            data=dict(form) if form else None,
            headers=headers,
            timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
        )
        response = await self._http.send(request, stream=True)
        # An answer call() will refuse (Home, a kind mismatch) is not read at all: nothing is parsed from it.
        unread = response.status_code not in (401, 403) and (
            refusal(self.cpa, route.full_path, self.configured_kind, response.headers, None, self.serves)
            is not None
        )
        streamed = reader is not None and 200 <= response.status_code < 300 and not unread
        body: bytearray = bytearray()
        parsed: Any = None
        size = 0
        try:
            if unread:
                pass
            elif reader is not None and streamed:
                # A 2xx already proves the key, whatever the body turns out to be.
                self._note_version(response.headers)
                if route.keyed:
                    self.gate.record_accepted(self._clock())
                parsed, size = await self._read_into(route, response, reader())
            else:
                body = await self._read_capped(route, response)
                size = len(body)
        finally:
            # Closing early (a cap, a rejected body) drops the connection instead of reading the rest.
            await response.aclose()
        self._note_version(response.headers)
        log.debug(
            "cpa.call",
            cpa=self.cpa,
            endpoint=route.label,  # a path: never the query string (it may carry an OAuth state)
            status=response.status_code,
            attempt=attempt,
            bytes=size,
            streamed=streamed,
            ms=round((time.monotonic() - started) * 1000),
        )
        answer = Answer(response.status_code, response.headers, body, attempt, parsed)
        if route.keyed and not streamed and self._proves_key(answer):
            self.gate.record_accepted(self._clock())
        return answer

    async def _read_capped(self, route: Route, response: httpx.Response) -> bytearray:
        limit = route.max_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise ResponseTooLarge(self.cpa, route.full_path, limit)
        buf = bytearray()
        async for chunk in response.aiter_bytes():
            buf += chunk
            if len(buf) > limit:
                raise ResponseTooLarge(self.cpa, route.full_path, limit)
        return buf

    async def _read_into(
        self, route: Route, response: httpx.Response, reader: BodyReader[Any]
    ) -> tuple[Any, int]:
        """Feed the body to `reader` as it arrives, counting bytes against the cap; (result, bytes)."""
        limit = route.max_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise ResponseTooLarge(self.cpa, route.full_path, limit)
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise ResponseTooLarge(self.cpa, route.full_path, limit)
            reader.feed(chunk)
        return reader.close(), size

    def _note_version(self, headers: httpx.Headers) -> None:
        found = kind_from_headers(headers)
        if found is not FoundKind.UNKNOWN:
            if found is not self.found_kind:
                log.info("cpa.kind", cpa=self.cpa, kind=found.value)
            self.found_kind = found
            self.home_version = home_version_of(headers)
        version = headers.get("x-cpa-version")
        if version:
            seen = CPAVersion(
                version=version,
                commit=headers.get("x-cpa-commit"),
                build_date=headers.get("x-cpa-build-date"),
                support_plugin=headers.get("x-cpa-support-plugin"),
            )
            if seen != self.version:
                log.info("cpa.version", cpa=self.cpa, version=seen.version, commit=seen.commit)
                note = seen.unchecked_note(self.cpa)
                if note is not None and (self.version is None or self.version.major != seen.major):
                    log.warning("cpa.version.unchecked", cpa=self.cpa, version=seen.version, problem=note)
                self.version = seen

    @staticmethod
    def _proves_key(answer: Answer) -> bool:
        if answer.status in (401, 403):
            return False
        if 200 <= answer.status < 300:
            return True
        # Any other answer that passed CPA's key middleware carries its headers.
        return "x-cpa-version" in answer.headers

    @staticmethod
    def _is_foreign_5xx(route: Route, answer: Answer) -> bool:
        """A 5xx that did not come from CPA's handlers (a proxy, a restart): the retryable kind."""
        if answer.status < 500 or "x-cpa-version" in answer.headers:
            return False  # CPA's key middleware sets the header on every keyed answer (handler.go)
        is_json, text = error_text_of(answer.body)
        if text == "core auth manager unavailable" or (
            route.upstream_proxy and answer.status == 502 and is_json
        ):
            return False  # CPA's own semantics, even if something on the way dropped its headers
        if answer.status in (502, 503, 504):
            return True
        return not is_json

    # ---------------------------------------------------------------------------------- mapping

    async def _error_for(self, route: Route, answer: Answer, secrets: list[str]) -> CPAError:
        path = route.full_path
        is_json, raw_text = error_text_of(answer.body)
        text = redact(raw_text, secrets)
        status = answer.status
        if status == 401 and route.keyed:
            return ManagementKeyRejected(self.cpa, path, text or "unauthorized")
        if status == 403 and route.keyed:
            if raw_text.startswith("IP banned"):
                return ManagementBanned(self.cpa, path, parse_ban_retry_after(raw_text))
            if raw_text == "remote management disabled":
                return RemoteManagementDisabled(self.cpa, path)
            if raw_text == "remote management key not set":
                return ManagementKeyNotSet(self.cpa, path)
        if status == 404 and not answer.body.strip():
            return await self._empty_404(route, answer)
        if status == 503 and raw_text == "core auth manager unavailable":
            return AuthManagerUnavailable(self.cpa, path)
        if status == 502 and route.upstream_proxy and is_json:
            return UpstreamRequestFailed(self.cpa, path, text)
        if self._is_foreign_5xx(route, answer):
            return TransientCPAError(
                self.cpa, path, f"HTTP {status} from something other than CPA", answer.attempt
            )
        return CPARequestError(self.cpa, path, status, text, answer.attempt)

    async def _empty_404(self, route: Route, answer: Answer) -> CPAError:
        path = route.full_path
        feature = route.feature or route.path.strip("/")
        if not route.keyed:
            return await self._off_or_node(path)
        if "x-cpa-version" in answer.headers:
            return FeatureMissing(self.cpa, path, feature, answer.headers.get("x-cpa-version"))
        try:
            probe = await self._send_once(_PROBE, None, None, None, None, None, None, 1)
        except (*_CONNECT_FAILURES, *_MIDWAY_FAILURES) as exc:
            return TransientCPAError(self.cpa, path, _describe(exc))
        if probe.status == 200:
            version = self.version.version if self.version else None
            return FeatureMissing(self.cpa, path, feature, version)
        if probe.status in (401, 403):
            return await self._error_for(_PROBE, probe, [self._key.get_secret_value()])
        return await self._off_or_node(path)

    async def _off_or_node(self, path: str) -> CPAError:
        """Empty 404s, no `X-CPA-*` header: management off, or a cluster node (kind.py, home-contract §8.3)."""
        if self._is_node is None and self._node_probe is not None:
            self._is_node = await self._node_probe()
            if self._is_node:
                self.found_kind = FoundKind.NODE
        if self._is_node:
            return ClusterNodeRefused(self.cpa, path)
        return ManagementNotEnabled(self.cpa, path)


def _describe(exc: httpx.HTTPError) -> str:
    """A short, secret-free description of a transport failure (never the request URL or headers)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return "its TLS certificate is not trusted (set the CA bundle)"
        cause = cause.__cause__ or cause.__context__
    names = {
        httpx.ConnectError: "connection failed",
        httpx.ConnectTimeout: "connect timed out",
        httpx.PoolTimeout: "no free connection in the pool",
        httpx.ReadTimeout: "read timed out",
        httpx.WriteTimeout: "write timed out",
        httpx.ReadError: "connection dropped while reading",
        httpx.WriteError: "connection dropped while writing",
        httpx.RemoteProtocolError: "the server broke the HTTP protocol",
    }
    for cls, text in names.items():
        if isinstance(exc, cls):
            return text
    return type(exc).__name__
