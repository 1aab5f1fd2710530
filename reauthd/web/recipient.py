"""The recipient page: link landing, Start login, callback paste, device code, Vertex upload, live progress.

Routes (relative to the path of `web.public_url`):
    GET/HEAD /r/{token}              landing: changes nothing, sets the task's session cookie, leaves the token
    GET      /t/{task_id}            the task's page for its current phase
    GET      /t/{task_id}/status.json   the same, as JSON for the page's script
    GET      /t/{task_id}/signin     303 to the provider's sign-in / verification page of the live login
    POST     /t/{task_id}/start      Start login            (CSRF)
    POST     /t/{task_id}/restart    Start again            (CSRF)
    POST     /t/{task_id}/callback   form field `callback_url`          (CSRF)
    POST     /t/{task_id}/vertex     multipart `file` + `location`      (CSRF)
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from reauthd.core.model import ReauthTask
from reauthd.login.flow import LoginFlow, Notice
from reauthd.login.providers import trusted_signin_url
from reauthd.login.vertex import MAX_SERVICE_ACCOUNT_BYTES
from reauthd.login.view import Phase, describe
from reauthd.login.wording import NextStep
from reauthd.store.records import LoginSession
from reauthd.web.pages import SiteLinks, message_page, page, task_body
from reauthd.web.render import Markup, escape, render
from reauthd.web.security import (
    BodyTooLarge,
    CookieSigner,
    RateLimits,
    SessionClaim,
    client_address,
    parse_small_form,
    read_capped_body,
    same_origin,
)
from reauthd.web.uploads import FormPart, UploadUnreadable, parse_form_data

log = structlog.get_logger(__name__)

COOKIE = "reauthd_session"
#: A page session lasts this long (or until the task's deadline); then the link from the message again.
SESSION_LIFETIME = timedelta(hours=12)
MAX_FORM_BYTES = 16 * 1024
MAX_UPLOAD_BYTES = 2 * MAX_SERVICE_ACCOUNT_BYTES
_TASK_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class RecipientStore(Protocol):
    def resolve_link_token(self, token: str, now: datetime) -> str | None: ...

    def get_task(self, task_id: str, *, with_history: bool = True) -> ReauthTask: ...

    def get_login_session(self, task_id: str) -> LoginSession | None: ...


_NOTICE_STATUS = {
    NextStep.PASTE_AGAIN: 400,
    NextStep.FIX_FILE: 400,
    NextStep.START_AGAIN: 409,
    NextStep.TRY_LATER: 503,
}


class RecipientPages:
    def __init__(
        self,
        store: RecipientStore,
        login: LoginFlow,
        links: SiteLinks,
        signer: CookieSigner,
        limits: RateLimits,
        clock: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.login = login
        self.links = links
        self.signer = signer
        self.limits = limits
        self.clock = clock

    def routes(self) -> list[Route]:
        return [
            Route("/r/{token}", self.landing, methods=["GET", "HEAD"]),
            Route("/t/{task_id}", self.task_page, methods=["GET", "HEAD"]),
            Route("/t/{task_id}/status.json", self.status, methods=["GET"]),
            Route("/t/{task_id}/signin", self.signin, methods=["GET"]),
            Route("/t/{task_id}/start", self.start, methods=["POST"]),
            Route("/t/{task_id}/restart", self.restart, methods=["POST"]),
            Route("/t/{task_id}/callback", self.callback, methods=["POST"]),
            Route("/t/{task_id}/vertex", self.vertex, methods=["POST"]),
        ]

    # ------------------------------------------------------------------------------------ landing

    async def landing(self, request: Request) -> Response:
        """GET/HEAD of the link. Writes nothing: it only sets this browser's session cookie for the task."""
        now = self.clock()
        client = client_address(request)
        # A locked-out address still opens a valid link (issue 11: one bad-link sender behind a shared NAT
        # must not lock out everyone else); its wrong guesses are refused slowly, so guessing stays expensive.
        locked = self.limits.link_failures.blocked(client, now) or not self.limits.link_attempts.hit(
            client, now
        )
        token = str(request.path_params["token"])
        task_id = self.store.resolve_link_token(token, now)
        task = self._task(task_id) if task_id else None
        if task is None:
            self.limits.link_failures.hit(client, now)
            log.info("link refused", reason="unknown, tampered or expired", locked_out=locked)
            if locked:
                await asyncio.sleep(self.limits.locked_out_delay_s)
                return message_page(
                    self.links,
                    429,
                    "Too many attempts",
                    "Too many link attempts from this address. Wait a few minutes.",
                )
            return message_page(
                self.links,
                404,
                "This link does not work",
                "The link is incomplete, has expired, or was replaced by a newer one. "
                "Use the newest message about this account, or ask the operator for a new link.",
            )
        if task.state.terminal:
            return message_page(
                self.links,
                410,
                "This request is closed",
                describe(task, None, now).headline + ". There is nothing more to do with this link.",
            )
        expires = min(now + SESSION_LIFETIME, max(task.deadline, now + timedelta(minutes=10)))
        cookie = self.signer.issue("recipient", task.id, int(expires.timestamp()))
        target = self.links.url(f"/t/{task.id}")
        # A 200 page that moves on by itself rather than a 3xx: browsers withhold SameSite=Strict cookies
        # on a redirect chain that began on another site (the mail or chat app), so the next page would
        # arrive without its session. A navigation this page starts is same-site.
        head = Markup(f'<meta http-equiv="refresh" content="0;url={escape(target)}">')
        body = render(
            "message.html",
            headline="Opening your request…",
            sentence="One moment.",
            extra=Markup(f'<p><a class="button primary" href="{escape(target)}">Continue</a></p>'),
        )
        response = page(self.links, "Opening", body, head=head)
        response.set_cookie(
            COOKIE,
            cookie,
            path=self.links.url(f"/t/{task.id}"),
            httponly=True,
            samesite="strict",
            secure=self.links.secure,
        )
        log.info("link opened", task_id=task.id)
        return response

    # ------------------------------------------------------------------------------------ helpers

    def _task(self, task_id: str) -> ReauthTask | None:
        try:
            return self.store.get_task(task_id)
        except Exception:  # TaskNotFound and friends: the same plain page as a bad link
            return None

    def _claim(self, request: Request) -> tuple[str, SessionClaim] | Response:
        task_id = str(request.path_params["task_id"])
        claim = self.signer.verify("recipient", request.cookies.get(COOKIE), self.clock())
        if not _TASK_ID.fullmatch(task_id) or claim is None or claim.subject != task_id:
            return message_page(
                self.links,
                403,
                "Please open the link from your message",
                "This page only works after opening the link in the message you received, in this browser.",
            )
        return task_id, claim

    async def _post_guard(
        self, request: Request, form: dict[str, str]
    ) -> tuple[str, SessionClaim] | Response:
        found = self._claim(request)
        if isinstance(found, Response):
            return found
        _, claim = found
        if not same_origin(request, self.links.origin) or not self.signer.csrf_ok(claim, form.get("csrf")):
            log.info("form refused", task_id=claim.subject, reason="csrf")
            return message_page(
                self.links,
                403,
                "This form has expired",
                "Go back, reload the page and try again.",
            )
        return found

    async def _posted_form(self, request: Request) -> tuple[dict[str, str], str, SessionClaim] | Response:
        """A small form POSTed from our own page, with a valid session and CSRF token; else the refusal."""
        form = await self._small_form(request)
        if isinstance(form, Response):
            return form
        found = await self._post_guard(request, form)
        if isinstance(found, Response):
            return found
        task_id, claim = found
        return form, task_id, claim

    async def _small_form(self, request: Request) -> dict[str, str] | Response:
        try:
            raw = await read_capped_body(request, MAX_FORM_BYTES)
        except BodyTooLarge:
            return message_page(
                self.links, 413, "That was too long", "What you sent is far larger than a sign-in address."
            )
        form = parse_small_form(raw, max_fields=10)
        if form is None:
            return message_page(self.links, 400, "That could not be read", "Reload the page and try again.")
        return form

    def _see_task(self, task_id: str) -> RedirectResponse:
        return RedirectResponse(self.links.url(f"/t/{task_id}"), status_code=303)

    def _after(self, task_id: str, claim: SessionClaim, notice: Notice | None) -> Response:
        if notice is None or notice.next_step is NextStep.COMPLETED:
            return self._see_task(task_id)
        return self._render_task(task_id, claim, notice, status=_NOTICE_STATUS.get(notice.next_step, 400))

    # ------------------------------------------------------------------------------------ pages

    async def task_page(self, request: Request) -> Response:
        found = self._claim(request)
        if isinstance(found, Response):
            return found
        task_id, claim = found
        return self._render_task(task_id, claim, None)

    async def status(self, request: Request) -> Response:
        found = self._claim(request)
        if isinstance(found, Response):
            return JSONResponse({"error": "open the link from your message again"}, status_code=403)
        task_id, _ = found
        task = self._task(task_id)
        if task is None:
            return JSONResponse({"error": "no such request"}, status_code=404)
        return JSONResponse(describe(task, self.store.get_login_session(task_id), self.clock()).to_json())

    async def signin(self, request: Request) -> Response:
        """Send the browser to the live login's provider page; a lapsed one goes back to the task page."""
        found = self._claim(request)
        if isinstance(found, Response):
            return found
        task_id, _ = found
        task = self._task(task_id)
        session = self.store.get_login_session(task_id)
        if task is None or session is None or not session.verification_url:
            return self._see_task(task_id)
        view = describe(task, session, self.clock())
        if view.phase not in (Phase.CALLBACK, Phase.DEVICE) or view.lapsed:
            return self._see_task(task_id)
        if not trusted_signin_url(session.provider, session.verification_url):
            log.warning(
                "sign-in address refused: not the provider's", task_id=task_id, provider=task.provider
            )
            return message_page(
                self.links,
                502,
                "This sign-in link cannot be used",
                "The proxy server gave a sign-in address that does not belong to the provider, so reauthd "
                "will not send you there. Tell the operator.",
            )
        # The one response that carries the sign-in URL (and so CPA's state): to the session holder only.
        return RedirectResponse(session.verification_url, status_code=303)

    def _render_task(
        self, task_id: str, claim: SessionClaim, notice: Notice | None, *, status: int = 200
    ) -> Response:
        task = self._task(task_id)
        if task is None:
            return message_page(
                self.links, 404, "This request no longer exists", "Ask the operator for a new link."
            )
        now = self.clock()
        session = self.store.get_login_session(task_id)
        view = describe(task, session, now)
        csrf = self.signer.csrf_token(claim)
        body = task_body(self.links, task, view, csrf, notice, webui=task.cpa in self.login.webui_cpas)
        live = view.phase in (Phase.CALLBACK, Phase.DEVICE, Phase.PROGRESS, Phase.OPERATOR)
        return page(
            self.links,
            view.headline,
            body,
            status=status,
            phase=view.phase.value,
            state=view.state.value,
            status_url=self.links.url(f"/t/{task_id}/status.json") if live else "",
        )

    async def start(self, request: Request) -> Response:
        return await self._action(request, "start")

    async def restart(self, request: Request) -> Response:
        return await self._action(request, "restart")

    async def _action(self, request: Request, which: str) -> Response:
        posted = await self._posted_form(request)
        if isinstance(posted, Response):
            return posted
        _, task_id, claim = posted
        now = self.clock()
        if not self.limits.start_per_task.hit(task_id, now):
            return self._render_task(task_id, claim, _TOO_MANY, status=429)
        notice = await (
            self.login.start(task_id, now) if which == "start" else self.login.restart(task_id, now)
        )
        return self._after(task_id, claim, notice)

    async def callback(self, request: Request) -> Response:
        posted = await self._posted_form(request)
        if isinstance(posted, Response):
            return posted
        form, task_id, claim = posted
        now = self.clock()
        client = client_address(request)
        if not self.limits.callback_per_task.hit(task_id, now) or not self.limits.callback_per_client.hit(
            client, now
        ):
            return self._render_task(task_id, claim, _TOO_MANY, status=429)
        notice = await self.login.submit_callback(task_id, form.get("callback_url", ""), now)
        return self._after(task_id, claim, notice)

    async def vertex(self, request: Request) -> Response:
        found = self._claim(request)
        if isinstance(found, Response):
            return found
        task_id, claim = found
        try:
            body = await read_capped_body(request, MAX_UPLOAD_BYTES)
        except BodyTooLarge:
            too_big = Notice(
                f"That file is larger than {MAX_SERVICE_ACCOUNT_BYTES // 1024} KB; a service-account key is a "
                "small JSON file.",
                NextStep.FIX_FILE,
            )
            return self._render_task(task_id, claim, too_big, status=413)
        try:
            parts = parse_form_data(body, request.headers.get("content-type", ""))
        except UploadUnreadable:
            parts = None
        csrf = parts.get("csrf") if parts else None
        guard = await self._post_guard(request, {"csrf": _text(csrf)})
        if isinstance(guard, Response):
            return guard
        if parts is None:
            unreadable = Notice("The upload could not be read. Try again.", NextStep.FIX_FILE)
            return self._render_task(task_id, claim, unreadable, status=400)
        upload = parts.get("file")
        data = upload.data if upload is not None else b""
        location = _text(parts.get("location")) or None
        now = self.clock()
        if not self.limits.start_per_task.hit(task_id, now):
            return self._render_task(task_id, claim, _TOO_MANY, status=429)
        notice = await self.login.upload_vertex(task_id, data, location, now)
        return self._after(task_id, claim, notice)


def _text(part: FormPart | None) -> str:
    """A plain form field's value (a field the browser sends as text, never a file)."""
    if part is None or part.filename is not None:
        return ""
    return part.data.decode("utf-8", "replace")


_TOO_MANY = Notice(
    "Too many attempts in a short time. Wait a few minutes, then try again.", NextStep.TRY_LATER
)
