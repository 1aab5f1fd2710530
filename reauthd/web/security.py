"""The web page's defences: response headers, signed session cookies, CSRF tokens, rate limits, body caps.

Sessions are HMAC-signed cookies rather than server-side rows: a link landing (GET) must not write
anything (mail scanners fetch links first), and a cookie signed with a per-process key costs nothing to
check. A daemon restart ends open page sessions; the person opens the link from the message again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
from collections import deque
from collections.abc import Iterable, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import parse_qsl

from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# No inline script or style anywhere: the page's JS and CSS are files under /static.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), clipboard-write=(self)"),
)
_SECURITY_NAMES = frozenset(name for name, _ in SECURITY_HEADERS)


class SecurityHeaders:
    """ASGI middleware: every response, errors and static files included, carries the security headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _SECURITY_NAMES]
                headers.extend(SECURITY_HEADERS)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


# ------------------------------------------------------------------------------------------- signing


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class SessionClaim:
    """A verified cookie: who it is for (`subject`: a task id, or "operator"), until when, and its nonce."""

    subject: str
    expires: int
    nonce: str


class CookieSigner:
    """Signs and checks session cookies and the CSRF tokens bound to them (HMAC-SHA256)."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    def _mac(self, *parts: str) -> str:
        return _b64(hmac.new(self._key, "|".join(parts).encode(), hashlib.sha256).digest())

    def issue(self, kind: str, subject: str, expires: int) -> str:
        nonce = secrets.token_urlsafe(12)
        return f"{subject}.{expires}.{nonce}.{self._mac(kind, subject, str(expires), nonce)}"

    def verify(self, kind: str, value: str | None, now: datetime) -> SessionClaim | None:
        if not value or len(value) > 400:
            return None
        parts = value.split(".")
        if len(parts) != 4:
            return None
        subject, expires_text, nonce, mac = parts
        if not expires_text.isdigit():
            return None
        if not constant_time_equal(mac, self._mac(kind, subject, expires_text, nonce)):
            return None
        if int(expires_text) <= now.timestamp():
            return None
        return SessionClaim(subject, int(expires_text), nonce)

    def csrf_token(self, claim: SessionClaim) -> str:
        return self._mac("csrf", claim.subject, claim.nonce)

    def csrf_ok(self, claim: SessionClaim, token: str | None) -> bool:
        return bool(token) and constant_time_equal(str(token), self.csrf_token(claim))


def constant_time_equal(offered: str, expected: str) -> bool:
    """hmac.compare_digest on UTF-8 bytes: on `str` it raises TypeError for anything non-ASCII, which a
    client controls (found by tests/reliability/test_fuzz_forms.py)."""
    return hmac.compare_digest(
        offered.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def same_origin(request: Request, public_origin: str) -> bool:
    """A POST's Origin (when the browser sends one) must be this site; SameSite=Strict is the other half."""
    origin = request.headers.get("origin")
    # Absent: older browsers and non-browser clients. "null": what browsers send on a form POST from a page
    # with `Referrer-Policy: no-referrer` (Fetch spec, "append a request Origin header") — i.e. from our own
    # pages. Either way the CSRF token bound to the SameSite=Strict session cookie still has to match.
    if origin is None or origin == "null":
        return True
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    return origin in (public_origin, own)


# ------------------------------------------------------------------------------------------ rate limits


class RateLimiter:
    """At most `limit` events per key within `window_s` seconds (sliding window). Pure: `now` is passed in.

    At most `max_keys` keys are tracked. To make room, idle keys go first, then the oldest keys that are not
    locked out; a lock-out is never forgotten before it ends (issue 11: 10,000 fresh addresses must not
    flush an attacker's lock-out). When every tracked key is locked out, new keys share one overflow bucket.
    """

    OVERFLOW = "*overflow*"

    def __init__(self, limit: int, window_s: float, *, max_keys: int = 10_000) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_keys = max_keys
        self._events: MutableMapping[str, deque[float]] = {}

    def _trim(self, events: deque[float], now: float) -> deque[float]:
        while events and events[0] <= now - self.window_s:
            events.popleft()
        return events

    def _recent(self, key: str, now: float) -> deque[float]:
        events = self._events.get(key)
        if events is None:
            if len(self._events) >= self.max_keys and not self._make_room(now):
                key = self.OVERFLOW
                events = self._events.get(key)
            if events is None:
                events = self._events.setdefault(key, deque())
        return self._trim(events, now)

    def _make_room(self, now: float) -> bool:
        for key in [k for k, v in self._events.items() if not self._trim(v, now)]:
            del self._events[key]
        if len(self._events) < self.max_keys:
            return True
        evictable = [k for k, v in self._events.items() if len(v) < self.limit and k != self.OVERFLOW]
        for key in evictable[: max(1, self.max_keys // 2)]:
            del self._events[key]
        return len(self._events) < self.max_keys

    def blocked(self, key: str, now: datetime) -> bool:
        return len(self._recent(key, now.timestamp())) >= self.limit

    def hit(self, key: str, now: datetime) -> bool:
        """Record one event; False if it exceeded the limit (the event is still counted)."""
        events = self._recent(key, now.timestamp())
        events.append(now.timestamp())
        return len(events) <= self.limit


@dataclass(frozen=True, slots=True)
class RateLimits:
    """The page's limits. Token guesses are counted per client address; logins per task (each mints at CPA)."""

    link_attempts: RateLimiter
    link_failures: RateLimiter
    callback_per_task: RateLimiter
    callback_per_client: RateLimiter
    start_per_task: RateLimiter
    operator_login: RateLimiter
    # A wrong link or token from a locked-out address is answered this much later (a right one at once).
    locked_out_delay_s: float = 1.0

    @classmethod
    def default(cls) -> RateLimits:
        return cls(
            link_attempts=RateLimiter(60, 60),
            link_failures=RateLimiter(10, 600),
            callback_per_task=RateLimiter(10, 300),
            callback_per_client=RateLimiter(30, 300),
            start_per_task=RateLimiter(10, 300),
            operator_login=RateLimiter(5, 300),
        )


def client_address(request: Request) -> str:
    """The key the per-client limits count under: the socket peer, or the client a trusted proxy names
    (ForwardedClient below rewrites the request's client before the routes see it)."""
    return request.client.host if request.client is not None else "unknown"


# ------------------------------------------------------------------------------------ reverse proxies

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_trusted_proxies(entries: Iterable[str]) -> tuple[Network, ...]:
    """`web.trusted_proxies`: IP addresses ("10.0.0.2") or networks ("10.0.0.0/8", "fd00::/8").

    Raises ValueError without quoting the entry (config errors never echo what the operator typed).
    """
    networks: list[Network] = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(
                'each entry must be an IP address or a network in CIDR form, e.g. "10.0.0.0/8"'
            ) from None
    return tuple(networks)


def _address(text: str) -> Address | None:
    """One hop of X-Forwarded-For: a bare IP, `1.2.3.4:port` or `[v6]:port`; None if it is none of these."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d
    return address


def _trusted(address: Address, trusted: Sequence[Network]) -> bool:
    return any(address in network for network in trusted)


def forwarded_client(
    peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[Network]
) -> str | None:
    """Who the request is from, for rate limits. Pure.

    X-Forwarded-For counts only when the socket peer is a trusted proxy; then the answer is the rightmost
    hop that is not itself a trusted proxy. Every hop left of that was written by the client and can say
    anything, so it is never used: a client cannot pick its own rate-limit bucket. A hop the trusted proxy
    wrote that is not an address (a misconfigured proxy) falls back to the peer: one shared bucket rather
    than one the client chooses. When every hop is trusted, the rightmost one (written by the peer itself)
    is the answer, never the leftmost, which the client may have written (issue 11).
    """
    if peer is None or not trusted:
        return peer
    peer_address = _address(peer)
    if peer_address is None or not _trusted(peer_address, trusted):
        return peer
    hops = [hop for value in forwarded_for for hop in value.split(",") if hop.strip()]
    if not hops:
        return peer
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            return peer
        if not _trusted(address, trusted):
            return str(address)
    # Every hop is a trusted proxy (the client sits inside a trusted network): the hop the peer wrote.
    last = _address(hops[-1])
    return str(last) if last is not None else peer


class ForwardedClient:
    """ASGI middleware: behind trusted reverse proxies, the request's client becomes the forwarded one.

    Without trusted proxies (the default) nothing changes: X-Forwarded-For is a header anyone can send.
    Only the client address is taken from the proxy, not X-Forwarded-Proto or Host: links and cookies
    follow `web.public_url`.
    """

    def __init__(self, app: ASGIApp, trusted: Sequence[Network]) -> None:
        self.app = app
        self.trusted = tuple(trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.trusted and scope["type"] == "http":
            client = scope.get("client")
            peer = str(client[0]) if client else None
            values = [v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"x-forwarded-for"]
            resolved = forwarded_client(peer, values, self.trusted)
            if resolved is not None and resolved != peer:
                scope = {**scope, "client": (resolved, 0)}
        await self.app(scope, receive, send)


# ------------------------------------------------------------------------------------------ body caps


class BodyTooLarge(Exception):
    """The request body exceeded the route's cap; reading stopped there."""


async def read_capped_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing (without reading further) anything over `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
    except ClientDisconnect:  # gone mid-body (or dropped as a slow sender): nobody reads the answer
        raise BodyTooLarge from None
    body = b"".join(chunks)
    # Starlette's form parser reads `_body` when present, so the capped bytes are parsed, not the socket.
    request._body = body
    return body


def parse_small_form(raw: bytes, max_fields: int) -> dict[str, str] | None:
    """A small urlencoded form, first value per field; None when it is not one (too many fields, bad bytes)."""
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=max_fields)
    except (UnicodeDecodeError, ValueError):
        return None
    form: dict[str, str] = {}
    for key, value in pairs:
        form.setdefault(key, value)
    return form
