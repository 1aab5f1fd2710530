"""Tables for the pure parts of the login: provider mapping, clocks, CPA answers in words, Vertex keys, views."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from reauthd.core.model import ReauthTask, TaskEvent, TaskState
from reauthd.cpa.errors import CPARequestError, ManagementBanned, TransientCPAError
from reauthd.login.providers import LoginKind, UnsupportedProvider, login_for_provider, resolve_kind
from reauthd.login.timing import (
    format_countdown,
    login_deadline,
    seconds_left,
    window_lapsed,
    worth_reusing,
)
from reauthd.login.vertex import (
    ServiceAccountRejected,
    ServiceAccountSummary,
    check_location,
    check_service_account,
    project_mismatch,
    vertex_file_name,
)
from reauthd.login.view import Phase, StepStatus, describe
from reauthd.login.wording import (
    NextStep,
    explain_callback_answer,
    explain_start_problem,
    explain_status_error,
    explain_vertex_answer,
)
from reauthd.store.records import LoginSession

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("provider", "route", "kind"),
    [
        ("codex", "codex", LoginKind.CALLBACK),
        ("claude", "anthropic", LoginKind.CALLBACK),
        ("anthropic", "anthropic", LoginKind.CALLBACK),
        ("Claude", "anthropic", LoginKind.CALLBACK),
        ("antigravity", "antigravity", LoginKind.CALLBACK),
        ("anti-gravity", "antigravity", LoginKind.CALLBACK),
        ("kimi", "kimi", LoginKind.DEVICE),
        ("xai", "xai", LoginKind.DEVICE),
        ("grok", "xai", LoginKind.DEVICE),
        ("vertex", "", LoginKind.VERTEX),
        ("gemini-cli", "gemini-cli", None),  # a plugin: CPA's answer decides
        ("gemini", "gemini-cli", None),  # CPA hands `type:"gemini"` files to plugins as gemini-cli
        ("Gemini", "gemini-cli", None),
        ("my-plugin2", "my-plugin2", None),
    ],
)
def test_provider_mapping(provider: str, route: str, kind: LoginKind | None) -> None:
    login = login_for_provider(provider)
    assert login.auth_url_provider == route
    assert login.kind is kind


@pytest.mark.parametrize("provider", ["qwen", "iflow", "", "a/b", "UPPER_case", "x" * 80])
def test_unsupported_providers(provider: str) -> None:
    with pytest.raises(UnsupportedProvider):
        login_for_provider(provider)


@pytest.mark.parametrize(
    ("provider", "flow", "kind"),
    [
        ("gemini-cli", None, LoginKind.CALLBACK),
        ("gemini-cli", "callback", LoginKind.CALLBACK),
        ("gemini-cli", "device", LoginKind.DEVICE),
        ("codex", "device", LoginKind.CALLBACK),  # built-ins are fixed
        ("xai", None, LoginKind.DEVICE),
    ],
)
def test_resolve_kind(provider: str, flow: str | None, kind: LoginKind) -> None:
    assert resolve_kind(login_for_provider(provider), flow) is kind


@pytest.mark.parametrize(
    ("device", "expires_in", "seconds"),
    [
        (False, None, 300),
        (False, 1800, 300),
        (True, 1800, 1800),
        (True, 600, 600),
        (True, None, 900),
        (True, 0, 900),
    ],
)
def test_login_deadline(device: bool, expires_in: int | None, seconds: int) -> None:
    assert login_deadline(T0, device=device, expires_in=expires_in) == T0 + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("expires_in", "limit", "seconds"),
    [
        (None, 900, 900),  # Kimi without expires_in: CPA polls its 15-minute maximum
        (600, 900, 600),
        (1800, 900, 900),  # Kimi says more than CPA waits: CPA gives up at 15 minutes
        (1800, 1800, 1800),  # xAI
        (3600, 1800, 1800),
        (None, None, 900),  # a plugin's device flow without expires_in
    ],
)
def test_login_deadline_never_past_cpa_poll_limit(
    expires_in: int | None, limit: int | None, seconds: int
) -> None:
    deadline = login_deadline(T0, device=True, expires_in=expires_in, poll_limit_s=limit)
    assert deadline == T0 + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("window_s", "device", "elapsed_s", "reuse"),
    [
        (300, False, 0, True),
        (300, False, 180, True),  # exactly 2 of the 5 callback minutes left: still enough
        (300, False, 181, False),
        (300, False, 290, False),  # the stale second tab: 10 s left
        (300, False, 300, False),
        (900, True, 540, True),  # a device code: 40 % of its lifetime, 6 of 15 minutes
        (900, True, 541, False),
        (1800, True, 1000, True),
        (1800, True, 1200, False),
        (None, False, 150, True),  # no mint time (an old row): CPA's default windows
        (None, False, 200, False),
        (None, True, 500, True),
        (None, True, 600, False),
    ],
)
def test_worth_reusing(window_s: int | None, device: bool, elapsed_s: int, reuse: bool) -> None:
    window = timedelta(seconds=window_s if window_s is not None else (900 if device else 300))
    created = T0 if window_s is not None else None
    now = T0 + timedelta(seconds=elapsed_s)
    assert worth_reusing(created, T0 + window, now, device=device) is reuse


@pytest.mark.parametrize(
    ("offset", "left", "lapsed"),
    [(0, 300, False), (0.9, 299, False), (299.5, 0, False), (300, 0, True), (900, 0, True)],
)
def test_seconds_left_and_lapse(offset: float, left: int, lapsed: bool) -> None:
    deadline = T0 + timedelta(seconds=300)
    now = T0 + timedelta(seconds=offset)
    assert seconds_left(deadline, now) == left
    assert window_lapsed(deadline, now) is lapsed


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0:00"), (9, "0:09"), (65, "1:05"), (1800, "30:00"), (3723, "1:02:03"), (-5, "0:00")],
)
def test_format_countdown(seconds: int, text: str) -> None:
    assert format_countdown(seconds) == text


def _req(status: int, text: str) -> CPARequestError:
    return CPARequestError("main", "/v0/management/oauth-callback", status, text)


@pytest.mark.parametrize(
    ("exc", "step", "words"),
    [
        (
            _req(404, "unknown or expired state"),
            NextStep.START_AGAIN,
            "longer than the proxy server (CPA) allows",
        ),
        (_req(409, "oauth flow is already completed"), NextStep.COMPLETED, "already completed"),
        (_req(409, "Timeout waiting for OAuth callback"), NextStep.START_AGAIN, "5 minutes"),
        (_req(409, "oauth flow is not pending"), NextStep.START_AGAIN, "no longer waiting"),
        (
            _req(409, "Failed to exchange authorization code for tokens: secret-body"),
            NextStep.START_AGAIN,
            "exchange",
        ),
        (_req(400, "invalid redirect_url"), NextStep.PASTE_AGAIN, "Copy the whole address"),
        (_req(400, "code or error is required"), NextStep.PASTE_AGAIN, "Copy the whole address"),
        (_req(400, "provider does not match state"), NextStep.PASTE_AGAIN, "different provider"),
        (_req(500, "failed to persist oauth callback"), NextStep.PASTE_AGAIN, "again in a moment"),
        (TransientCPAError("main", "/x", "timeout"), NextStep.TRY_LATER, "cannot reach"),
        (ManagementBanned("main", "/x", 1799), NextStep.TRY_LATER, "cannot reach"),
    ],
)
def test_callback_answers_in_words(exc: Exception, step: NextStep, words: str) -> None:
    assert isinstance(exc, CPARequestError | TransientCPAError | ManagementBanned)
    explanation = explain_callback_answer(exc)
    assert explanation.next_step is step
    assert words in explanation.sentence
    assert "secret-body" not in explanation.sentence
    assert "main" not in explanation.sentence.split()  # no CPA internals


@pytest.mark.parametrize(
    ("error", "words"),
    [
        ("unknown or expired state", "5 minutes"),
        ("Timeout waiting for OAuth callback", "5 minutes"),
        ("OAuth flow timed out", "5 minutes"),
        ("Authentication failed: state mismatch", "did not match"),
        ("State code error", "did not match"),
        ("Failed to exchange token", "Failed to exchange token"),
        (None, "no reason given"),
    ],
)
def test_status_errors_in_words(error: str | None, words: str) -> None:
    explanation = explain_status_error(error)
    assert explanation.next_step is NextStep.START_AGAIN
    assert words in explanation.sentence


@pytest.mark.parametrize(
    ("error", "device", "words"),
    [
        ("unknown or expired state", False, "(5 minutes)"),
        ("unknown or expired state", True, "The code expired before it was approved."),
        (
            "Authentication failed: kimi: device code expired",
            True,
            "The code expired before it was approved.",
        ),
        ("Authentication failed: access_denied", True, "did not complete: Authentication failed."),
        ("Timeout waiting for OAuth callback", False, "(5 minutes)"),
    ],
)
def test_status_errors_for_device_codes_do_not_speak_of_5_minutes(
    error: str, device: bool, words: str
) -> None:
    explanation = explain_status_error(error, device=device)
    assert words in explanation.sentence and explanation.next_step is NextStep.START_AGAIN
    assert device is ("5 minutes" not in explanation.sentence)


def test_vertex_and_start_answers() -> None:
    assert explain_vertex_answer(_req(400, "invalid service account")).next_step is NextStep.FIX_FILE
    assert explain_vertex_answer(_req(500, "save_failed")).next_step is NextStep.TRY_LATER
    assert explain_start_problem(_req(404, "")).next_step is NextStep.TRY_LATER
    port_taken = explain_start_problem(_req(500, "failed to start callback server"))
    assert port_taken.next_step is NextStep.START_AGAIN and "local port" in port_taken.sentence
    assert explain_start_problem(_req(500, "callback server unavailable")).next_step is NextStep.TRY_LATER


def _key(**changes: object) -> bytes:
    body: dict[str, object] = {
        "type": "service_account",
        "project_id": "proj-1",
        "client_email": "sa@proj-1.iam.gserviceaccount.com",
        "private_key": "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n",
    }
    body.update(changes)
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


def test_service_account_ok() -> None:
    summary = check_service_account(_key())
    assert (summary.project_id, summary.client_email) == ("proj-1", "sa@proj-1.iam.gserviceaccount.com")


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "Choose"),
        (b"x" * 70000, "larger than"),
        (b"\xff\xfe", "not JSON"),
        (b"[1,2]", "not a service-account key"),
        (b"{", "not JSON"),
        (_key(type="authorized_user"), '"type"'),
        (_key(project_id=None), "project_id"),
        (_key(client_email=""), "client_email"),
        (_key(private_key=None, client_email=None), "client_email, private_key"),
        (_key(private_key="nope"), "not a private key"),
        (_key(client_email="nobody"), "not an e-mail"),
    ],
)
def test_service_account_rejected(data: bytes, words: str) -> None:
    with pytest.raises(ServiceAccountRejected) as caught:
        check_service_account(data)
    assert words in str(caught.value)
    assert "MIIB" not in str(caught.value)


@pytest.mark.parametrize(
    ("raw", "location"),
    [(None, "us-central1"), ("", "us-central1"), (" europe-west4 ", "europe-west4"), ("Global", "global")],
)
def test_location(raw: str | None, location: str) -> None:
    assert check_location(raw) == location


@pytest.mark.parametrize("raw", ["us central1", "../etc", "x", "us-central1?x=1"])
def test_location_rejected(raw: str) -> None:
    with pytest.raises(ServiceAccountRejected):
        check_location(raw)


def _task(state: TaskState, provider: str = "codex", last_from: TaskState | None = None) -> ReauthTask:
    history = [TaskEvent(T0, None, TaskState.OPEN, "token invalidated")]
    if last_from is not None:
        history.append(
            TaskEvent(T0, last_from, state, "The sign-in did not complete: Failed to exchange token.")
        )
    return ReauthTask(
        id="t1",
        cpa="main",
        auth_name="codex-a.json",
        auth_index="0123456789abcdef",
        provider=provider,
        account_masked="a***@example.com",
        state=state,
        reason="token invalidated",
        created_at=T0,
        updated_at=T0,
        deadline=T0 + timedelta(days=7),
        history=history,
    )


def _session(flow: str, seconds: int = 300) -> LoginSession:
    return LoginSession("t1", "codex", "s" * 32, flow, T0 + timedelta(seconds=seconds), user_code="ABCD-EFGH")


@pytest.mark.parametrize(
    ("task", "session", "at", "phase", "lapsed"),
    [
        (_task(TaskState.OPEN), None, 0, Phase.LANDING, False),
        (_task(TaskState.NOTIFIED), None, 0, Phase.LANDING, False),
        (_task(TaskState.OPENED), None, 0, Phase.READY, False),
        (_task(TaskState.OPENED, "vertex"), None, 0, Phase.VERTEX_FORM, False),
        (_task(TaskState.LOGIN_STARTED), _session("callback"), 10, Phase.CALLBACK, False),
        (_task(TaskState.LOGIN_STARTED), _session("callback"), 301, Phase.CALLBACK, True),
        (_task(TaskState.LOGIN_STARTED, "xai"), _session("device", 1800), 60, Phase.DEVICE, False),
        (_task(TaskState.LOGIN_STARTED), None, 0, Phase.READY, False),
        (_task(TaskState.CALLBACK_RECEIVED), None, 0, Phase.PROGRESS, False),
        (_task(TaskState.VERIFYING), None, 0, Phase.PROGRESS, False),
        (_task(TaskState.RETIRING), None, 0, Phase.PROGRESS, False),
        (_task(TaskState.AWAITING_OPERATOR), None, 0, Phase.OPERATOR, False),
        (_task(TaskState.DONE), None, 0, Phase.DONE, False),
        (_task(TaskState.FAILED), None, 0, Phase.FAILED, False),
        (_task(TaskState.EXPIRED), None, 0, Phase.FAILED, False),
        (_task(TaskState.CANCELLED), None, 0, Phase.FAILED, False),
    ],
)
def test_view_phase(
    task: ReauthTask, session: LoginSession | None, at: int, phase: Phase, lapsed: bool
) -> None:
    view = describe(task, session, T0 + timedelta(seconds=at))
    assert view.phase is phase
    assert view.lapsed is lapsed
    body = json.dumps(view.to_json())
    assert "s" * 32 not in body


def test_view_device_countdown_and_ended_login() -> None:
    view = describe(
        _task(TaskState.LOGIN_STARTED, "xai"), _session("device", 1800), T0 + timedelta(seconds=65)
    )
    assert (view.user_code, view.seconds_left, view.countdown) == ("ABCD-EFGH", 1735, "28:55")
    ended = describe(_task(TaskState.OPENED, last_from=TaskState.LOGIN_STARTED), None, T0)
    assert "Failed to exchange token" in ended.detail
    steps = describe(_task(TaskState.VERIFYING), None, T0).steps
    assert [s.status for s in steps] == [
        StepStatus.DONE,
        StepStatus.CURRENT,
        StepStatus.PENDING,
        StepStatus.PENDING,
    ]


def test_vertex_form_says_why_after_a_failed_attempt() -> None:
    task = _task(TaskState.OPENED, "vertex", last_from=TaskState.VERIFYING)
    view = describe(task, None, T0)
    assert view.phase is Phase.VERTEX_FORM
    assert view.detail.startswith("The sign-in did not complete") and "upload it here" in view.detail
    fresh = describe(_task(TaskState.OPENED, "vertex"), None, T0)
    assert fresh.detail.startswith("Create a new JSON key")
    steps = describe(_task(TaskState.VERIFYING, "vertex"), None, T0).steps
    assert steps[0].label == "Key received"


@pytest.mark.parametrize(
    ("steps", "removed"),
    [
        ({}, False),  # CPA overwrote the old file in place: nothing to remove
        ({"copy_settings": "done"}, False),  # retire.policy = keep
        ({"copy_settings": "done", "disable_old": "done"}, True),
        ({"copy_settings": "done", "disable_old": "done", "delete_old": "done"}, True),
    ],
)
def test_done_page_speaks_to_the_recipient(steps: dict[str, str], removed: bool) -> None:
    reason = "Verified the new credential: CPA overwrote codex-a.json in place with the new login"
    task = replace(
        _task(TaskState.DONE),
        details={"completion": {"steps": steps}},
        history=[TaskEvent(T0, TaskState.VERIFYING, TaskState.DONE, reason)],
    )
    view = describe(task, None, T0)
    assert view.detail == "The account works again. You can close this page."
    assert "codex-a.json" not in json.dumps(view.to_json())
    remove = view.steps[2]
    if removed:
        assert (remove.label, remove.status) == ("Removing the old login", StepStatus.DONE)
    else:
        assert (remove.label, remove.status) == ("Removing the old login — not needed", StepStatus.SKIPPED)
    assert [s.status for s in view.steps[:2]] == [StepStatus.DONE, StepStatus.DONE]


@pytest.mark.parametrize("state", [TaskState.CALLBACK_RECEIVED, TaskState.VERIFYING, TaskState.RETIRING])
def test_progress_detail_names_no_file(state: TaskState) -> None:
    task = replace(
        _task(state), history=[TaskEvent(T0, None, state, "codex-b.json works; retiring the old credential")]
    )
    view = describe(task, None, T0)
    assert "codex-b.json" not in view.detail and "reauthd" in view.detail


@pytest.mark.parametrize(
    ("key_project", "old_name", "old_project", "old_email", "refused_for"),
    [
        ("proj-a", "vertex-proj-a.json", "proj-a", None, None),
        ("proj-a", "vertex-proj-a.json", None, None, None),
        ("proj-a", "vertex-team-proj-a.json", None, None, None),  # cmd/vertex_import.go prefix
        ("proj-a", "vertex-anything.json", None, "sa@proj-a.iam.gserviceaccount.com", None),
        ("proj-b", "vertex-proj-a.json", "proj-a", None, "proj-a"),
        ("proj-b", "vertex-proj-a.json", None, "sa@proj-a.iam.gserviceaccount.com", "proj-a"),
        ("proj-b", "vertex-proj-a.json", None, "someone@example.com", "proj-a"),
        ("proj-ab", "vertex-proj-a.json", None, None, "proj-a"),
    ],
)
def test_vertex_key_must_be_for_the_old_credentials_project(
    key_project: str, old_name: str, old_project: str | None, old_email: str | None, refused_for: str | None
) -> None:
    key = ServiceAccountSummary(key_project, f"reauth@{key_project}.iam.gserviceaccount.com")
    sentence = project_mismatch(key, old_name, old_project, old_email)
    if refused_for is None:
        assert sentence is None
    else:
        assert (
            sentence
            == f"This key belongs to project {key_project}; this request is for project {refused_for}."
        )


def test_vertex_key_checks_refuse_odd_ids_and_mismatched_emails() -> None:
    for project in ("../../etc", "Proj A", "p\u00e9", "x" * 200, "<b>p</b>"):
        with pytest.raises(ServiceAccountRejected, match="not a Google Cloud project id"):
            check_service_account(_key(project_id=project))
    key = ServiceAccountSummary("proj-a", "sa@proj-z.iam.gserviceaccount.com")
    assert "belongs to project proj-z" in (project_mismatch(key, "vertex-proj-a.json", "proj-a", None) or "")
    odd = project_mismatch(ServiceAccountSummary("proj-a", "sa@x.example"), "manual.json", None, None)
    assert odd is not None and "cannot tell which project manual.json belongs to" in odd
    assert vertex_file_name("example.com:proj a") == "vertex-example.com_proj-a.json"


def test_a_key_with_a_huge_integer_is_a_sentence_not_a_crash() -> None:
    """Issue 11 item 8: json.loads raises ValueError (not JSONDecodeError) past 4,300 digits."""
    data = b'{"type": "service_account", "n": ' + b"9" * 5000 + b"}"
    with pytest.raises(ServiceAccountRejected, match="not JSON"):
        check_service_account(data)


def _after(state: TaskState, last_from: TaskState, reason: str) -> ReauthTask:
    task = _task(state)
    return replace(task, history=[*task.history, TaskEvent(T0, last_from, state, reason)])


def test_recipient_pages_name_no_auth_file() -> None:
    """Issue 13 (3): recorded reasons name auth files and CPA's answers; the person reads plain sentences."""
    refused = _after(
        TaskState.OPENED,
        TaskState.VERIFYING,
        "The new login (codex-b.json) did not work: HTTP 401: the provider refused the new login. The old "
        "credential was left exactly as it was; please log in again",
    )
    view = describe(refused, None, T0)
    assert view.detail.startswith("The new login did not work when reauthd tested it")
    other = _after(
        TaskState.AWAITING_OPERATOR,
        TaskState.VERIFYING,
        "The sign-in used a different account than this request (a***@example.com), so it does not replace "
        "codex-a.json. The proxy server saved it as codex-z.json; an operator should remove that file",
    )
    other_view = describe(other, None, T0)
    assert "different account" in other_view.detail and "a***@example.com" in other_view.detail
    waiting = _after(
        TaskState.AWAITING_OPERATOR, TaskState.VERIFYING, "two candidates: codex-c.json and codex-d.json"
    )
    failed = _after(
        TaskState.FAILED, TaskState.VERIFYING, "could not test codex-e.json after 30 attempts (last: 502)"
    )
    for v in (view, other_view, describe(waiting, None, T0), describe(failed, None, T0)):
        assert ".json" not in v.detail, v.detail
    assert "could not test the login file after 30 attempts" in describe(failed, None, T0).detail
