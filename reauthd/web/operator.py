"""The operator view: every task, and one task's history, evidence and audit trail.

Behind `web.operator_token`: an `Authorization: Bearer <token>` header, or a login form that sets a signed
cookie scoped to /operator. A recipient's session cookie is scoped to its own /t/<task> path and signed for
another purpose, so a recipient link never opens this view. Without a configured token the view is off.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog
from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from reauthd.core.causes import task_advice
from reauthd.core.model import ReauthTask, TaskState
from reauthd.notify import notices
from reauthd.store.records import AuditEntry
from reauthd.web.actions import (
    ActionRefused,
    ActionResult,
    OperatorActions,
    can_cancel,
    can_link,
    can_resend,
    can_start_again,
)
from reauthd.web.pages import SiteLinks, message_page, page
from reauthd.web.render import Markup, escape, join
from reauthd.web.security import (
    BodyTooLarge,
    CookieSigner,
    RateLimits,
    SessionClaim,
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

    def kv_prefix(self, prefix: str) -> dict[str, Any]: ...


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
        actions: OperatorActions | None = None,
    ) -> None:
        self.store = store
        self.token = token
        self.links = links
        self.signer = signer
        self.limits = limits
        self.clock = clock
        self.actions = actions
        # Operator cookies are signed for this token (issue 11): a new token ends every existing session.
        self._kind = (
            "operator"
            if token is None
            else "operator:"
            + hashlib.sha256(b"reauthd-operator|" + token.get_secret_value().encode()).hexdigest()
        )

    def routes(self) -> list[Route]:
        return [
            Route("/operator", self.index, methods=["GET"]),
            Route("/operator/login", self.login_form, methods=["GET"]),
            Route("/operator/login", self.login, methods=["POST"]),
            Route("/operator/logout", self.logout, methods=["POST"]),
            Route("/operator/tasks/{task_id}", self.detail, methods=["GET"]),
            Route("/operator/tasks/{task_id}/{action}", self.act, methods=["POST"]),
            Route("/operator/raise", self.raise_task, methods=["POST"]),
        ]

    # ------------------------------------------------------------------------------------ auth

    def _off(self) -> Response:
        return message_page(
            self.links,
            404,
            "The operator view is off",
            "The operator view is off: set web.operator_token (or web.operator_token_file) in reauthd's "
            "configuration to use it.",
        )

    def _token_ok(self, offered: str | None) -> bool:
        if self.token is None or not offered:
            return False
        return constant_time_equal(offered, self.token.get_secret_value())

    def _session(self, request: Request) -> SessionClaim | None:
        return self.signer.verify(self._kind, request.cookies.get(COOKIE), self.clock())

    async def _guard(self, request: Request) -> Response | None:
        if self.token is None:
            return self._off()
        header = request.headers.get("authorization")
        if not header:
            if self._session(request) is not None:
                return None
            return RedirectResponse(self.links.url("/operator/login"), status_code=303)
        # A bearer header is a guess like the form's, counted and limited the same way (issue 11).
        now = self.clock()
        client = client_address(request)
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and self._token_ok(value.strip()):
            return None  # the right token works even from a locked-out address
        locked = self.limits.operator_login.blocked(client, now)
        self.limits.operator_login.hit(client, now)
        log.warning("operator bearer token refused", client=client, locked_out=locked)
        if locked:
            await asyncio.sleep(self.limits.locked_out_delay_s)
            return message_page(self.links, 429, "Too many attempts", "Wait a few minutes and try again.")
        return message_page(self.links, 401, "Not allowed", "That operator token is not valid.")

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
        locked = self.limits.operator_login.blocked(client, now)
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
            log.warning("operator sign-in refused", client=client, locked_out=locked)
            if locked:  # the right token still signs in from this address; wrong ones are slowed down
                await asyncio.sleep(self.limits.locked_out_delay_s)
                return self._login_page("Too many attempts. Wait a few minutes.", 429)
            return self._login_page("That operator token is not valid.", 401)
        cookie = self.signer.issue(self._kind, "operator", int((now + SESSION_LIFETIME).timestamp()))
        response = RedirectResponse(self.links.url("/operator"), status_code=303)
        self._set_cookie(response, COOKIE, cookie)
        log.info("operator signed in")
        return response

    async def logout(self, request: Request) -> Response:
        if self.token is None:
            return self._off()
        claim = self._session(request)
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
        refused = await self._guard(request)
        if refused is not None:
            return refused
        tasks = sorted(self.store.list_tasks(), key=lambda t: t.updated_at, reverse=True)
        csrf = self._csrf(request)
        open_count = sum(not t.state.terminal for t in tasks)
        cards = join([self._card(t, csrf) for t in tasks])
        told = notices.recent(self.store.kv_prefix)
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
            "<h1>Reauth tasks</h1>"
            f'<p class="hint">{open_count} open, {len(tasks) - open_count} closed.</p>'
            f'<ul class="task-cards">{cards}</ul>'
            f"{self._raise_form(csrf)}"
            + (
                '<h2>Notices to the operator</h2><p class="hint">Accounts held twice, plans that lapse, '
                'failures a new login will not fix; each told once.</p><div class="table-scroll"><table><thead>'
                "<tr><th>When (UTC)</th><th>Kind</th><th>CPA</th><th>Title</th><th>Text</th></tr></thead>"
                f"<tbody>{notice_rows}</tbody></table></div>"
                if told
                else ""
            )
            + f"{self._logout_form(request)}"
        )
        return page(self.links, "Tasks", body, wide=True)

    def _csrf(self, request: Request) -> str:
        """The CSRF token of the signed-in session ("" with a bearer header: it is not sent by a browser)."""
        claim = self._session(request)
        return self.signer.csrf_token(claim) if claim is not None else ""

    def _action_form(
        self, task_id: str, action: str, label: str, csrf: str, *, primary: bool = False
    ) -> Markup:
        button_class = ' class="primary"' if primary else ""
        return Markup(
            f'<form method="post" action="{escape(self.links.url(f"/operator/tasks/{task_id}/{action}"))}">'
            f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
            f'<button type="submit"{button_class}>{escape(label)}</button></form>'
        )

    def _actions(self, task: ReauthTask, csrf: str) -> Markup:
        if self.actions is None:
            return Markup("")
        forms: list[Markup] = []
        if can_link(task):
            forms.append(self._action_form(task.id, "link", "Copy recipient link", csrf, primary=True))
        if can_resend(task):
            forms.append(self._action_form(task.id, "resend", "Resend message", csrf))
        if can_start_again(task):
            forms.append(self._action_form(task.id, "restart", "Start again (new link)", csrf))
        if can_cancel(task):
            forms.append(self._action_form(task.id, "cancel", "Cancel", csrf))
        return Markup(f'<div class="actions">{join(forms)}</div>') if forms else Markup("")

    def _card(self, t: ReauthTask, csrf: str) -> Markup:
        facts = [
            ("Provider", f"{t.provider} on CPA {t.cpa}"),
            ("File", t.auth_name),
            ("Why", t.reason),
            ("Updated", _when(t.updated_at)),
        ]
        fact_html = join([Markup(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>") for k, v in facts if v])
        return Markup(
            f'<li class="task-card" data-task="{escape(t.id)}">'
            f'<div class="task-head"><a href="{escape(self.links.url(f"/operator/tasks/{t.id}"))}">'
            f"<strong>{escape(t.account_masked)}</strong></a>"
            f'<span class="badge state-{escape(t.state.value)}">{escape(t.state.value)}</span></div>'
            f'<dl class="facts">{fact_html}</dl>'
            f"{self._actions(t, csrf)}</li>"
        )

    def _raise_form(self, csrf: str) -> Markup:
        if self.actions is None or not self.actions.cpa_names:
            return Markup("")
        names = self.actions.cpa_names
        if len(names) == 1:
            cpa = Markup(
                f'<input type="hidden" name="cpa" value="{escape(names[0])}">'
                f'<p class="hint">On CPA <strong>{escape(names[0])}</strong>.</p>'
            )
        else:
            options = join([Markup(f"<option>{escape(n)}</option>") for n in names])
            cpa = Markup(
                f'<label for="raise-cpa">CPA</label><select id="raise-cpa" name="cpa">{options}</select>'
            )
        return Markup(
            "<h2>Raise a task for any credential</h2>"
            f'<form method="post" action="{escape(self.links.url("/operator/raise"))}" class="raise">'
            f'<input type="hidden" name="csrf" value="{escape(csrf)}">{cpa}'
            '<label for="raise-name">Auth file name</label>'
            '<input id="raise-name" type="text" name="auth_name" required autocomplete="off" autocapitalize="off" '
            'spellcheck="false" placeholder="codex-alice@example.com-plus.json">'
            '<label for="raise-reason">Why (shown to the person)</label>'
            '<input id="raise-reason" type="text" name="reason" maxlength="300" autocomplete="off" '
            'placeholder="an operator asked for a new login">'
            '<button type="submit">Raise task</button></form>'
        )

    # ------------------------------------------------------------------------------------ actions

    async def _action_guard(self, request: Request) -> dict[str, str] | Response:
        """An action POST: signed in (cookie with its CSRF token, or a bearer header), from this site."""
        refused = await self._guard(request)
        if refused is not None:
            return refused
        if self.actions is None:
            return message_page(self.links, 404, "Not available", "Operator actions are not available here.")
        try:
            raw = await read_capped_body(request, 4096)
        except BodyTooLarge:
            return message_page(self.links, 413, "That was too long", "Reload the page and try again.")
        form = _parse_form(raw)
        claim = self._session(request)
        # A bearer header is never sent by a browser on its own, so it needs no CSRF token; the cookie does.
        cookie_only = claim is not None and not request.headers.get("authorization")
        if (
            form is None
            or not same_origin(request, self.links.origin)
            or (cookie_only and claim is not None and not self.signer.csrf_ok(claim, form.get("csrf")))
        ):
            log.info("operator action refused", reason="csrf")
            return message_page(self.links, 403, "This form has expired", "Reload the page and try again.")
        return form

    def _result(self, result: ActionResult) -> Response:
        link = (
            Markup(
                '<div class="code-box link-box"><span class="label">Recipient link</span>'
                f'<output id="recipient-link" class="recipient-link">{escape(result.link)}</output>'
                '<button type="button" class="copy primary" data-copy="recipient-link">Copy link</button></div>'
            )
            if result.link
            else Markup("")
        )
        body = Markup(
            f"<h1>{escape(result.headline)}</h1>"
            f'<p class="lead" role="status">{escape(result.sentence)}</p>{link}'
            f'<p><a href="{escape(self.links.url(f"/operator/tasks/{result.task_id}"))}">Task {escape(result.task_id)}</a>'
            f' · <a href="{escape(self.links.url("/operator"))}">All tasks</a></p>'
        )
        return page(self.links, result.headline, body, wide=True)

    def _refused(self, exc: ActionRefused) -> Response:
        extra = Markup(f'<p><a href="{escape(self.links.url("/operator"))}">All tasks</a></p>')
        return message_page(self.links, 409, "Nothing was done", str(exc), extra)

    async def act(self, request: Request) -> Response:
        form = await self._action_guard(request)
        if isinstance(form, Response):
            return form
        assert self.actions is not None
        task_id = str(request.path_params["task_id"])
        action = {
            "link": self.actions.link,
            "resend": self.actions.resend,
            "cancel": self.actions.cancel,
            "restart": self.actions.start_again,
        }.get(str(request.path_params["action"]))
        if action is None:
            return message_page(self.links, 404, "Not found", "There is no such operator action.")
        try:
            return self._result(await action(task_id, self.clock()))
        except ActionRefused as exc:
            return self._refused(exc)

    async def raise_task(self, request: Request) -> Response:
        form = await self._action_guard(request)
        if isinstance(form, Response):
            return form
        assert self.actions is not None
        try:
            result = await self.actions.raise_task(
                form.get("cpa", ""), form.get("auth_name", ""), form.get("reason", ""), self.clock()
            )
        except ActionRefused as exc:
            return self._refused(exc)
        return self._result(result)

    def _logout_form(self, request: Request) -> Markup:
        claim = self._session(request)
        if claim is None:  # signed in with a bearer header: nothing to sign out of
            return Markup("")
        return Markup(
            f'<form method="post" action="{escape(self.links.url("/operator/logout"))}" class="restart">'
            f'<input type="hidden" name="csrf" value="{escape(self.signer.csrf_token(claim))}">'
            '<button type="submit">Sign out</button></form>'
        )

    async def detail(self, request: Request) -> Response:
        refused = await self._guard(request)
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
        evidence_html = (
            '<h2>Evidence (what detection saw)</h2><div class="table-scroll"><table><thead><tr><th>When</th>'
            "<th>Source</th><th>Status</th><th>Text</th></tr></thead>"
            f"<tbody>{evidence}</tbody></table></div>"
            if evidence
            else ""
        )
        body = Markup(
            f'<p><a href="{escape(self.links.url("/operator"))}">← All tasks</a></p>'
            f'<h1>Task {escape(task.id)}</h1><dl class="facts">{fact_html}</dl>'
            f"{self._actions(task, self._csrf(request))}"
            f"{evidence_html}"
            '<h2>History</h2><div class="table-scroll"><table><thead><tr><th>When</th><th>From</th><th>To</th>'
            f"<th>Why</th></tr></thead><tbody>{history}</tbody></table></div>"
            '<h2>Audit trail (changes in CPA and operator actions)</h2><div class="table-scroll"><table><thead>'
            "<tr><th>When</th><th>Action</th><th>File</th><th>auth_index</th><th>Outcome</th></tr></thead>"
            f"<tbody>{audit}</tbody></table></div>"
            + (f"<h2>Details</h2><pre>{escape(details)}</pre>" if details else "")
        )
        return page(self.links, f"Task {task.id}", body, wide=True)
