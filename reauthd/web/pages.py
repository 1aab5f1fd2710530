"""The HTML of the recipient page and its error pages: layout, one body per phase, notices, Vertex facts."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.responses import HTMLResponse, Response

from reauthd.core.causes import task_advice
from reauthd.core.model import ReauthTask
from reauthd.login.flow import Notice
from reauthd.login.providers import UnsupportedProvider, login_for_provider
from reauthd.login.vertex import MAX_SERVICE_ACCOUNT_BYTES
from reauthd.login.view import LoginView, Phase
from reauthd.login.wording import NextStep
from reauthd.web.render import Markup, escape, join, render

EMPTY = Markup("")


@dataclass(frozen=True, slots=True)
class SiteLinks:
    """Path-absolute URLs under the public URL's path prefix (works behind a reverse proxy)."""

    prefix: str
    secure: bool
    origin: str
    # `[web] operator_name` / `operator_contact`: who runs this reauthd, on every page a recipient sees.
    operator_name: str = ""
    operator_contact: str = ""

    def url(self, path: str) -> str:
        return f"{self.prefix}{path}"


def page(
    links: SiteLinks,
    title: str,
    body: Markup,
    *,
    status: int = 200,
    phase: str = "",
    state: str = "",
    status_url: str = "",
    head: Markup = EMPTY,
    wide: bool = False,
) -> HTMLResponse:
    scripts = Markup(f'<script src="{escape(links.url("/static/reauthd.js"))}" defer></script>')
    html = render(
        "base.html",
        title=title,
        static=links.url("/static"),
        phase=phase,
        state=state,
        status_url=status_url,
        head=head,
        main_class="card wide" if wide else "card",
        body=body,
        scripts=scripts,
        run_by=run_by_line(links),
    )
    return HTMLResponse(html, status_code=status)


def run_by_line(links: SiteLinks) -> Markup:
    """ "This page is run by …": so the person asked to sign in can tell who asks (empty when not configured)."""
    name, contact = links.operator_name.strip(), links.operator_contact.strip()
    if not name and not contact:
        return EMPTY
    who = Markup(f"<strong>{escape(name)}</strong>") if name else Markup("the operator")
    reach = Markup(f" Questions: {escape(contact)}.") if contact else EMPTY
    return Markup(f'<p class="run-by">This page is run by {who}.{reach}</p>')


def message_page(
    links: SiteLinks, status: int, headline: str, sentence: str, extra: Markup = EMPTY
) -> Response:
    return page(
        links,
        headline,
        render("message.html", headline=headline, sentence=sentence, extra=extra),
        status=status,
    )


def notice_box(notice: Notice | None) -> Markup:
    if notice is None:
        return Markup("")
    tone = "bad" if notice.next_step in (NextStep.PASTE_AGAIN, NextStep.FIX_FILE, NextStep.TRY_LATER) else ""
    return Markup(f'<p class="notice {tone}" role="alert">{escape(notice.sentence)}</p>')


def restart_form(links: SiteLinks, task_id: str, csrf: str, *, primary: bool) -> Markup:
    return render(
        "restart.html",
        restart_url=links.url(f"/t/{task_id}/restart"),
        csrf=csrf,
        button_class="primary" if primary else "",
        label="Start again",
    )


WEBUI_NOTE = Markup(
    '<p class="hint">This proxy server runs on the same computer as this browser: after you sign in it usually '
    "receives the result by itself and this page moves on without a paste.</p>"
)


def task_body(
    links: SiteLinks,
    task: ReauthTask,
    view: LoginView,
    csrf: str,
    notice: Notice | None,
    *,
    webui: bool = False,
) -> Markup:
    """The main part of the task page for its phase."""
    t = task.id
    box = notice_box(notice)
    advice = task_advice(task)
    if view.phase in (Phase.LANDING, Phase.READY) and not advice.relogin:
        # Deactivated, blocked region, ended plan: a new login would not help, so no Start button (issue 14).
        return render(
            "message.html",
            headline="A new login will not fix this",
            sentence=advice.why,
            extra=Markup(f"<p>{escape(advice.next_step)}</p>"),
        )
    if view.phase in (Phase.LANDING, Phase.READY):
        try:
            login = login_for_provider(task.provider)
            redirect = login.redirect_hint
        except UnsupportedProvider:
            redirect = None
        if task.provider == "vertex":
            step_two = "Upload a new service-account key file for this Google Cloud project."
        elif redirect:
            step_two = f"Sign in at {view.provider_name}, then paste the address your browser lands on."
        else:
            step_two = f"Sign in at {view.provider_name} (you may be shown a code to confirm)."
        return render(
            "landing.html",
            headline=view.headline,
            account=task.account_masked,
            provider=view.provider_name,
            cpa=task.cpa,
            reason=task.reason,
            cause=advice.why,
            next_step=advice.next_step,
            notice=box,
            detail=view.detail,
            step_two=step_two,
            start_url=links.url(f"/t/{t}/start" if view.phase is Phase.LANDING else f"/t/{t}/restart"),
            # A sign-in that ends in a pasted address: the page's script opens the provider's sign-in in a
            # new tab as part of pressing Start (one action fewer); without the script nothing changes.
            open_signin=Markup(f' data-open-signin="{escape(links.url(f"/t/{t}/signin"))}"')
            if redirect and task.provider != "vertex"
            else EMPTY,
            csrf=csrf,
            button="Start login" if view.phase is Phase.LANDING else "Start login again",
        )
    if view.phase is Phase.CALLBACK:
        if view.lapsed:
            inner = join(
                [Markup(f"<p>{escape(view.detail)}</p>"), restart_form(links, t, csrf, primary=True)]
            )
        else:
            try:
                login = login_for_provider(task.provider)
                hint = login.redirect_hint or "http://localhost"
                # CPA forwards the callback by itself only for the providers it takes `is_webui` for
                # (anthropic, codex, antigravity; contract §4.1): a plugin's login still needs the paste.
                forwarded = webui and login.supports_webui
            except UnsupportedProvider:
                hint = "http://localhost"
                forwarded = False
            inner = render(
                "callback_steps.html",
                seconds=view.seconds_left or 0,
                countdown=view.countdown or "",
                signin_url=links.url(f"/t/{t}/signin"),
                provider=view.provider_name,
                redirect_hint=hint.split("?")[0],
                callback_url=links.url(f"/t/{t}/callback"),
                csrf=csrf,
                cpa=task.cpa,
                webui_note=WEBUI_NOTE if forwarded else EMPTY,
            )
        return render(
            "callback.html",
            headline=view.headline,
            account=task.account_masked,
            provider=view.provider_name,
            notice=box,
            body=inner,
        )
    if view.phase is Phase.DEVICE:
        if view.lapsed:
            return render(
                "message.html",
                headline=view.headline,
                sentence=view.detail,
                extra=join([box, restart_form(links, t, csrf, primary=True)]),
            )
        return render(
            "device.html",
            headline=view.headline,
            account=task.account_masked,
            provider=view.provider_name,
            notice=box,
            detail=view.detail,
            # CPA omits `user_code` when the provider gives none (contract §4.1; a plugin's device flow,
            # or a verification link that carries the code): no empty box to copy from then.
            code_box=render("device_code.html", user_code=view.user_code) if view.user_code else EMPTY,
            seconds=view.seconds_left or 0,
            countdown=view.countdown or "",
            signin_url=links.url(f"/t/{t}/signin"),
            restart=restart_form(links, t, csrf, primary=False),
        )
    if view.phase is Phase.VERTEX_FORM:
        return render(
            "vertex.html",
            headline=view.headline,
            account=task.account_masked,
            provider=view.provider_name,
            notice=box,
            detail=view.detail,
            vertex_url=links.url(f"/t/{t}/vertex"),
            csrf=csrf,
            max_kb=MAX_SERVICE_ACCOUNT_BYTES // 1024,
        )
    if view.phase in (Phase.PROGRESS, Phase.OPERATOR, Phase.DONE):
        steps = join(
            [Markup(f'<li class="step {s.status.value}">{escape(s.label)}</li>') for s in view.steps]
        )
        return render(
            "progress.html",
            headline=view.headline,
            account=task.account_masked,
            provider=view.provider_name,
            notice=box,
            detail=view.detail,
            steps=steps,
            vertex=vertex_facts(task),
        )
    extra = join([box, Markup('<p class="hint">The operator has been told. You can close this page.</p>')])
    return render("message.html", headline=view.headline, sentence=view.detail, extra=extra)


# ------------------------------------------------------------------------------------ actions


def vertex_facts(task: ReauthTask) -> Markup:
    vertex = task.details.get("vertex") if isinstance(task.details, dict) else None
    if not isinstance(vertex, dict):
        return Markup("")
    rows = [
        ("Project", vertex.get("project_id")),
        ("Service account", vertex.get("email")),
        ("Location", vertex.get("location")),
    ]
    return Markup(
        '<dl class="facts">'
        + "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in rows if v)
        + "</dl>"
    )
