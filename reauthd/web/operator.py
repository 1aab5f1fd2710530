"""The operator view: every task, and one task's history, evidence and audit trail.

Behind `web.operator_token`: an `Authorization: Bearer <token>` header, or a login form that sets a signed
cookie scoped to /operator. A recipient's session cookie is scoped to its own /t/<task> path and signed for
another purpose, so a recipient link never opens this view. Without a configured token the view is off.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Protocol

import structlog
from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from reauthd.core.causes import task_advice
from reauthd.core.model import ReauthTask, TaskState
from reauthd.notify import notices
from reauthd.store.records import AuditEntry
from reauthd.web.pages import SiteLinks, message_page, page
from reauthd.web.render import Markup, escape, join
from reauthd.web.security import (
    BodyTooLarge,
    CookieSigner,
    RateLimits,
    client_address,
    constant_time_equal,
    parse_small_form,
    read_capped_body,
    same_origin,
)

log = structlog.get_logger(__name__)

COOKIE = "reauthd_operator"
CSRF_COOKIE = "reauthd_operator_csrf"
SESSION_LIFETIME = timedelta(hours=8)


class OperatorStore(Protocol):
    def list_tasks(
        self, states: Iterable[TaskState] | None = None, *, with_history: bool = False
    ) -> list[ReauthTask]: ...

    def get_task(self, task_id: str, *, with_history: bool = True) -> ReauthTask: ...

    def audit_for(self, task_id: str | None = None, *, limit: int = 1000) -> list[AuditEntry]: ...


def _when(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _parse_form(raw: bytes) -> dict[str, str] | None:
    return parse_small_form(raw, max_fields=5)


class OperatorPages:
    def __init__(
        self,
        store: OperatorStore,
        token: SecretStr | None,
        links: SiteLinks,
        signer: CookieSigner,
        limits: RateLimits,
        clock: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.token = token
        self.links = links
        self.signer = signer
        self.limits = limits
        self.clock = clock

    def routes(self) -> list[Route]:
        return [
            Route("/operator", self.index, methods=["GET"]),
            Route("/operator/login", self.login_form, methods=["GET"]),
            Route("/operator/login", self.login, methods=["POST"]),
            Route("/operator/logout", self.logout, methods=["POST"]),
            Route("/operator/tasks/{task_id}", self.detail, methods=["GET"]),
        ]

    # ------------------------------------------------------------------------------------ auth

    def _off(self) -> Response:
        return message_page(self.links, 404, "Not found", "There is no page at this address.")

    def _token_ok(self, offered: str | None) -> bool:
        if self.token is None or not offered:
            return False
        return constant_time_equal(offered, self.token.get_secret_value())

    def _authorised(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and self._token_ok(value.strip()):
            return True
        return self.signer.verify("operator", request.cookies.get(COOKIE), self.clock()) is not None

    def _guard(self, request: Request) -> Response | None:
        if self.token is None:
            return self._off()
        if self._authorised(request):
            return None
        if request.headers.get("authorization"):
            return message_page(self.links, 401, "Not allowed", "That operator token is not valid.")
        return RedirectResponse(self.links.url("/operator/login"), status_code=303)

    async def login_form(self, request: Request) -> Response:
        if self.token is None:
            return self._off()
        return self._login_page(None, 200)

    def _login_page(self, problem: str | None, status: int) -> Response:
        nonce = secrets.token_urlsafe(16)
        notice = (
            Markup(f'<p class="notice bad" role="alert">{escape(problem)}</p>') if problem else Markup("")
        )
        body = Markup(
            "<h1>Operator sign-in</h1>"
            f"{notice}"
            f'<form method="post" action="{escape(self.links.url("/operator/login"))}">'
            f'<input type="hidden" name="csrf" value="{escape(nonce)}">'
            '<label for="token">Operator token</label>'
            '<input id="token" type="password" name="token" autocomplete="current-password" required>'
            '<button type="submit" class="primary">Sign in</button></form>'
        )
        response = page(self.links, "Operator sign-in", body, status=status)
        # Double-submit CSRF for the one form that exists before a session does.
        self._set_cookie(response, CSRF_COOKIE, nonce)
        return response

    def _set_cookie(self, response: Response, name: str, value: str) -> None:
        """Operator cookies: sent to /operator only, unreadable by scripts, never on cross-site requests."""
        response.set_cookie(
            name,
            value,
            path=self.links.url("/operator"),
            httponly=True,
            samesite="strict",
            secure=self.links.secure,
        )

    async def login(self, request: Request) -> Response:
        if self.token is None:
            return self._off()
        now = self.clock()
        client = client_address(request)
        if self.limits.operator_login.blocked(client, now):
            return self._login_page("Too many attempts. Wait a few minutes.", 429)
        try:
            raw = await read_capped_body(request, 4096)
        except BodyTooLarge:
            return self._login_page("That was too long.", 413)
        form = _parse_form(raw)
        expected = request.cookies.get(CSRF_COOKIE, "")
        if (
            form is None
            or not same_origin(request, self.links.origin)
            or not expected
            or not constant_time_equal(expected, form.get("csrf", ""))
        ):
            return self._login_page("The form expired. Try again.", 403)
        if not self._token_ok(form.get("token")):
            self.limits.operator_login.hit(client, now)
            log.warning("operator sign-in refused")
            return self._login_page("That operator token is not valid.", 401)
        cookie = self.signer.issue("operator", "operator", int((now + SESSION_LIFETIME).timestamp()))
        response = RedirectResponse(self.links.url("/operator"), status_code=303)
        self._set_cookie(response, COOKIE, cookie)
        log.info("operator signed in")
        return response

    async def logout(self, request: Request) -> Response:
        if self.token is None:
            return self._off()
        claim = self.signer.verify("operator", request.cookies.get(COOKIE), self.clock())
        try:
            raw = await read_capped_body(request, 4096)
        except BodyTooLarge:
            raw = b""
        form = _parse_form(raw) or {}
        if (
            claim is None
            or not same_origin(request, self.links.origin)
            or not self.signer.csrf_ok(claim, form.get("csrf"))
        ):
            return message_page(self.links, 403, "This form has expired", "Reload the page and try again.")
        response = RedirectResponse(self.links.url("/operator/login"), status_code=303)
        response.delete_cookie(COOKIE, path=self.links.url("/operator"))
        return response

    # ------------------------------------------------------------------------------------ pages

    async def index(self, request: Request) -> Response:
        refused = self._guard(request)
        if refused is not None:
            return refused
        tasks = sorted(self.store.list_tasks(), key=lambda t: t.updated_at, reverse=True)
        rows = join(
            [
                Markup(
                    f'<tr><td><a href="{escape(self.links.url(f"/operator/tasks/{t.id}"))}">{escape(t.id)}</a></td>'
                    f"<td>{escape(t.state.value)}</td><td>{escape(t.cpa)}</td><td>{escape(t.provider)}</td>"
                    f"<td>{escape(t.account_masked)}</td><td>{escape(t.auth_name)}</td>"
                    f"<td>{escape(t.reason)}</td><td>{escape(_when(t.updated_at))}</td></tr>"
                )
                for t in tasks
            ]
        )
        kv_prefix = getattr(self.store, "kv_prefix", None)
        told = notices.recent(kv_prefix) if callable(kv_prefix) else []
        notice_rows = join(
            [
                Markup(
                    f"<tr><td>{escape(str(n.get('at', ''))[:16].replace('T', ' '))}</td>"
                    f"<td>{escape(str(n.get('kind', '')))}</td><td>{escape(str(n.get('cpa', '')))}</td>"
                    f"<td>{escape(str(n.get('title', '')))}</td><td>{escape(str(n.get('text', '')))}</td></tr>"
                )
                for n in told
            ]
        )
        body = Markup(
            f'<h1>Reauth tasks</h1><p class="hint">{len(tasks)} task(s).</p>'
            "<table><thead><tr><th>Task</th><th>State</th><th>CPA</th><th>Provider</th><th>Account</th>"
            f"<th>File</th><th>Reason</th><th>Updated</th></tr></thead><tbody>{rows}</tbody></table>"
            + (
                '<h2>Notices to the operator</h2><p class="hint">Accounts held twice, plans that lapse, '
                "failures a new login will not fix; each told once.</p><table><thead><tr><th>When (UTC)</th>"
                "<th>Kind</th><th>CPA</th><th>Title</th><th>Text</th></tr></thead>"
                f"<tbody>{notice_rows}</tbody></table>"
                if told
                else ""
            )
            + f"{self._logout_form(request)}"
        )
        return page(self.links, "Tasks", body, wide=True)

    def _logout_form(self, request: Request) -> Markup:
        claim = self.signer.verify("operator", request.cookies.get(COOKIE), self.clock())
        if claim is None:  # signed in with a bearer header: nothing to sign out of
            return Markup("")
        return Markup(
            f'<form method="post" action="{escape(self.links.url("/operator/logout"))}" class="restart">'
            f'<input type="hidden" name="csrf" value="{escape(self.signer.csrf_token(claim))}">'
            '<button type="submit">Sign out</button></form>'
        )

    async def detail(self, request: Request) -> Response:
        refused = self._guard(request)
        if refused is not None:
            return refused
        task_id = str(request.path_params["task_id"])
        try:
            task = self.store.get_task(task_id)
        except Exception:
            return message_page(self.links, 404, "No such task", "There is no task with that id.")
        advice = task_advice(task)
        facts = [
            ("Task", task.id),
            ("State", task.state.value),
            ("CPA", task.cpa),
            ("File", task.auth_name),
            ("auth_index", task.auth_index),
            ("Provider", task.provider),
            ("Account", task.account_masked),
            ("Reason", task.reason),
            ("Cause", f"{advice.cause.value}: {advice.why}"),
            ("Next step", advice.next_step),
            ("Created", _when(task.created_at)),
            ("Updated", _when(task.updated_at)),
            ("Deadline", _when(task.deadline)),
            ("Opened", _when(task.opened_at)),
            ("New file", task.new_auth_name or ""),
            ("New auth_index", task.new_auth_index or ""),
            ("Verification", task.verification or ""),
            ("Old file disabled by a person", "yes" if task.disabled_by_person else ""),
        ]
        fact_html = join(
            [Markup(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>") for k, v in facts if v not in ("", None)]
        )
        history = join(
            [
                Markup(
                    f"<tr><td>{escape(_when(e.at))}</td><td>{escape(e.from_state.value if e.from_state else '')}"
                    f"</td><td>{escape(e.to_state.value)}</td><td>{escape(e.reason)}</td></tr>"
                )
                for e in task.history
            ]
        )
        audit = join(
            [
                Markup(
                    f"<tr><td>{escape(_when(a.at))}</td><td>{escape(a.action)}</td><td>{escape(a.target_name)}"
                    f"</td><td>{escape(a.target_auth_index)}</td><td>{escape(a.outcome)}</td></tr>"
                )
                for a in self.store.audit_for(task.id)
            ]
        )
        evidence = join(
            [
                Markup(
                    f"<tr><td>{escape(str(e.get('observed_at', '')))}</td><td>{escape(str(e.get('source', '')))}"
                    f"</td><td>{escape(str(e.get('http_status', '')))}</td><td>{escape(str(e.get('text', '')))}"
                    "</td></tr>"
                )
                for e in task.details.get("evidence", [])
                if isinstance(e, dict)
            ]
        )
        extras = {k: v for k, v in task.details.items() if k != "evidence"}
        details = json.dumps(extras, indent=2, sort_keys=True, default=str) if extras else ""
        body = Markup(
            f'<p><a href="{escape(self.links.url("/operator"))}">← All tasks</a></p>'
            f'<h1>Task {escape(task.id)}</h1><dl class="facts">{fact_html}</dl>'
            + (
                "<h2>Evidence (what detection saw)</h2><table><thead><tr><th>When</th><th>Source</th>"
                f"<th>Status</th><th>Text</th></tr></thead><tbody>{evidence}</tbody></table>"
                if evidence
                else ""
            )
            + "<h2>History</h2><table><thead><tr><th>When</th><th>From</th><th>To</th><th>Why</th></tr></thead>"
            f"<tbody>{history}</tbody></table>"
            "<h2>Audit trail (changes made in CPA)</h2><table><thead><tr><th>When</th><th>Action</th>"
            f"<th>File</th><th>auth_index</th><th>CPA's answer</th></tr></thead><tbody>{audit}</tbody></table>"
            + (f"<h2>Details</h2><pre>{escape(details)}</pre>" if details else "")
        )
        return page(self.links, f"Task {task.id}", body, wide=True)
