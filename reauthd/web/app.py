"""The web application: recipient page, operator view, static files and the ops routes, in one ASGI app.

`create_app` returns the app wrapped in the security-header middleware (outermost, so even Starlette's
own 500 page carries the headers) and a path-prefix layer: behind a reverse proxy that keeps the prefix of
`web.public_url` (e.g. https://example.org/reauth/...), requests arrive with it; without a proxy they
arrive without it. Both work, and every link the app writes carries the prefix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Protocol
from urllib.parse import urlsplit

import structlog
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reauthd.core.model import ReauthTask, TaskState
from reauthd.login.flow import LoginFlow
from reauthd.store.records import AuditEntry, LoginSession
from reauthd.web.actions import OperatorActions
from reauthd.web.operator import OperatorPages
from reauthd.web.pages import SiteLinks, message_page
from reauthd.web.recipient import RecipientPages
from reauthd.web.security import (
    CookieSigner,
    ForwardedClient,
    RateLimits,
    SecurityHeaders,
    parse_trusted_proxies,
)

log = structlog.get_logger(__name__)


class WebStore(Protocol):
    """The store methods the pages read (reauthd.store.Store satisfies it)."""

    def resolve_link_token(self, token: str, now: datetime) -> str | None: ...

    def get_task(self, task_id: str, *, with_history: bool = True) -> ReauthTask: ...

    def get_login_session(self, task_id: str) -> LoginSession | None: ...

    def list_tasks(
        self, states: Iterable[TaskState] | None = None, *, with_history: bool = False
    ) -> list[ReauthTask]: ...

    def audit_for(self, task_id: str | None = None, *, limit: int = 1000) -> list[AuditEntry]: ...

    def kv_prefix(self, prefix: str) -> dict[str, Any]: ...


def _utcnow() -> datetime:
    return datetime.now(UTC)


def site_links(public_url: str, operator_name: str = "", operator_contact: str = "") -> SiteLinks:
    parts = urlsplit(public_url)
    prefix = parts.path.rstrip("/")
    return SiteLinks(
        prefix=prefix,
        secure=parts.scheme == "https",
        origin=f"{parts.scheme}://{parts.netloc}",
        operator_name=operator_name,
        operator_contact=operator_contact,
    )


class PathPrefix:
    """Accept requests with or without the public URL's path prefix (reverse proxies differ)."""

    def __init__(self, app: ASGIApp, prefix: str) -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.prefix and scope["type"] == "http":
            path: str = scope["path"]
            if path == self.prefix or path.startswith(self.prefix + "/"):
                scope = {**scope, "path": path[len(self.prefix) :] or "/", "raw_path": None}
        await self.app(scope, receive, send)


class AccessLog:
    """One log line per request with the matched route template, never the raw path (it may hold a token)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or (
                "/static/…" if scope["path"].startswith("/static/") else "?"
            )
            log.debug("http", method=scope["method"], route=template, status=status)


def create_app(
    *,
    store: WebStore,
    login: LoginFlow,
    public_url: str,
    operator_token: SecretStr | None = None,
    extra_routes: Sequence[BaseRoute] = (),
    clock: Callable[[], datetime] = _utcnow,
    cookie_key: bytes | None = None,
    limits: RateLimits | None = None,
    trusted_proxies: Sequence[str] = (),
    operator_name: str = "",
    operator_contact: str = "",
    actions: OperatorActions | None = None,
) -> ASGIApp:
    """The whole web app. `extra_routes` are the ops routes (/livez, /readyz, /metrics).

    `actions`: what the operator view's buttons do (cancel, resend, new link, raise); None shows no buttons.
    `trusted_proxies` (`web.trusted_proxies`): reverse proxies whose X-Forwarded-For names the client the
    per-address rate limits count; empty trusts none, so every client is its socket peer.
    """
    trusted = parse_trusted_proxies(trusted_proxies)
    links = site_links(public_url, operator_name, operator_contact)
    signer = CookieSigner(cookie_key)
    rate_limits = limits or RateLimits.default()
    recipient = RecipientPages(store, login, links, signer, rate_limits, clock)
    operator = OperatorPages(store, operator_token, links, signer, rate_limits, clock, actions)
    static = StaticFiles(directory=str(resources.files("reauthd.web").joinpath("static")))

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        if status == 405:
            return message_page(
                links, 405, "Not allowed", "This address does not accept that kind of request."
            )
        return message_page(
            links, status if 400 <= status < 500 else 404, "Not found", "There is no page at this address."
        )

    async def server_error(request: Request, exc: Exception) -> Response:
        # The exception's text is never shown (it could quote a secret); its type goes to the log.
        log.error("web request failed", error_type=type(exc).__name__)
        return message_page(
            links,
            500,
            "Something went wrong",
            "reauthd could not finish this request. Try again in a minute.",
        )

    favicon_svg = resources.files("reauthd.web").joinpath("static", "favicon.svg").read_bytes()

    async def favicon(request: Request) -> Response:
        # Browsers ask for /favicon.ico on pages that name no icon (JSON, /metrics): no 404 in the console.
        return Response(favicon_svg, media_type="image/svg+xml")

    app = Starlette(
        routes=[
            Route("/favicon.ico", favicon, methods=["GET", "HEAD"]),
            *recipient.routes(),
            *operator.routes(),
            Mount("/static", app=static, name="static"),
            *extra_routes,
        ],
        exception_handlers={HTTPException: not_found, 500: server_error},
    )
    return SecurityHeaders(ForwardedClient(PathPrefix(AccessLog(app), links.prefix), trusted))
