"""The recipient page over real HTTP against the simulator: every flow, every refusal, no secret leaks."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from structlog.testing import capture_logs

from reauthd.core.model import TaskState
from reauthd.login.timing import CALLBACK_WINDOW
from reauthd.web.sandbox import CPA_NAME, SIM_KEY, WebSandbox
from tests.support.completion import RecordingRunner

S = TaskState


class Recorder:
    """Every response the test client saw, for the canary checks."""

    def __init__(self) -> None:
        self.responses: list[tuple[str, int, str, str]] = []

    async def __call__(self, response: httpx.Response) -> None:
        await response.aread()
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        self.responses.append((response.request.url.path, response.status_code, headers, response.text))


@pytest.fixture
def runner() -> RecordingRunner:
    return RecordingRunner()


@pytest.fixture
async def box(tmp_path: Path, runner: RecordingRunner) -> AsyncIterator[WebSandbox]:
    async with WebSandbox(
        tmp_path,
        completion=runner,
        poll_interval_s=0.2,
        operator_token="op-secret-token-0123456789abcdef012345",
    ) as sb:
        yield sb


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def http(box: WebSandbox, recorder: Recorder) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10, event_hooks={"response": [recorder]}) as client:
        yield client


CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has no CSRF field"
    return found.group(1)


async def wait_for_state(box: WebSandbox, task_id: str, *states: TaskState, timeout: float = 15) -> TaskState:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        state = box.state_of(task_id)
        if state in states:
            return state
        await asyncio.sleep(0.05)
    raise AssertionError(f"task stayed {box.state_of(task_id)}, expected one of {states}")


async def open_link(http: httpx.AsyncClient, link: str) -> str:
    """Land on the link and follow the page's own refresh to the token-free task page; returns its HTML."""
    landing = await http.get(link)
    assert landing.status_code == 200
    assert 'http-equiv="refresh"' in landing.text
    task_url = landing.text.split('content="0;url=')[1].split('"')[0]
    page = await http.get(str(landing.url.join(task_url)))
    assert page.status_code == 200
    return page.text


async def start(http: httpx.AsyncClient, box: WebSandbox, task_id: str, html: str) -> httpx.Response:
    answer = await http.post(box.url(f"/t/{task_id}/start"), data={"csrf": csrf_of(html)})
    assert answer.status_code == 303, answer.text
    return await http.get(box.url(f"/t/{task_id}"))


async def sign_in_at_provider(http: httpx.AsyncClient, box: WebSandbox, task_id: str, **fields: str) -> str:
    """Follow the page's sign-in link to the simulated provider, sign in, return the localhost address."""
    hop = await http.get(box.url(f"/t/{task_id}/signin"))
    assert hop.status_code == 303
    authorize = hop.headers["location"]
    assert authorize.startswith(box.sim.base_url)
    query = parse_qs(urlsplit(authorize).query)
    form = await http.get(authorize)
    assert form.status_code == 200
    done = await http.post(
        authorize,
        data={
            "state": query["state"][0],
            "redirect_uri": query["redirect_uri"][0],
            "action": "allow",
            **fields,
        },
    )
    assert done.status_code == 302
    return done.headers["location"]


def callback_posts(box: WebSandbox) -> list[dict[str, object]]:
    return [op for op in box.sim.state.oplog if op["path"].endswith("/oauth-callback")]


async def test_codex_paste_flow_end_to_end_leaks_nothing(
    box: WebSandbox, http: httpx.AsyncClient, recorder: Recorder, runner: RecordingRunner
) -> None:
    task = box.add_task("codex", email="alice@example.com")
    token = task.link.rsplit("/", 1)[1]
    with capture_logs() as logs:
        # GET twice and HEAD: nothing changes (mail scanners and link previews fetch links first).
        for _ in range(2):
            await open_link(http, task.link)
        head = await http.head(task.link)
        assert head.status_code == 200
        assert box.state_of(task.task_id) is S.OPEN
        assert box.store.get_login_session(task.task_id) is None
        assert not [op for op in box.sim.state.oplog if "auth-url" in op["path"]]

        landing = await http.get(box.url(f"/t/{task.task_id}"))
        assert "a***@example.com" in landing.text and "Start login" in landing.text
        page = await start(http, box, task.task_id, landing.text)
        assert box.state_of(task.task_id) is S.LOGIN_STARTED
        assert 'name="callback_url"' in page.text and "http://localhost:1455/auth/callback" in page.text
        session = box.store.get_login_session(task.task_id)
        assert session is not None
        state = session.oauth_state

        callback = await sign_in_at_provider(http, box, task.task_id)
        assert callback.startswith("http://localhost:1455/auth/callback?")
        code = parse_qs(urlsplit(callback).query)["code"][0]
        sent = await http.post(
            box.url(f"/t/{task.task_id}/callback"),
            data={"csrf": csrf_of(page.text), "callback_url": callback},
        )
        assert sent.status_code == 303
        assert box.state_of(task.task_id) in (S.CALLBACK_RECEIVED, S.VERIFYING)
        assert [op["status"] for op in callback_posts(box)] == [200]

        await wait_for_state(box, task.task_id, S.VERIFYING)
        progress = await http.get(box.url(f"/t/{task.task_id}"))
        assert "Testing the new login" in progress.text
        status = (await http.get(box.url(f"/t/{task.task_id}/status.json"))).json()
        assert status["phase"] == "progress" and status["state"] == "verifying"
        for _ in range(100):
            if runner.calls:
                break
            await asyncio.sleep(0.02)
        assert runner.calls == [task.task_id]
        audit = box.store.audit_for(task.task_id)
        assert [(a.action, a.outcome) for a in audit] == [("oauth-callback", "accepted")]

    secrets = {"link token": token, "state": state, "code": code, "callback": callback, "key": SIM_KEY}
    for path, status_code, headers, body in recorder.responses:
        for what, value in secrets.items():
            if (what == "state" and path.endswith("/signin")) or path.startswith("/_sim/"):
                continue  # the one redirect to the provider carries its authorize URL; the sim is not reauthd
            assert value not in body, f"{what} in the body of {path} ({status_code})"
            assert value not in headers, f"{what} in the headers of {path} ({status_code})"
    logged = json.dumps(logs, default=str)
    for what, value in secrets.items():
        assert value not in logged, f"{what} in a log line"
    for item in box.store.get_task(task.task_id).history:
        assert state not in item.reason and code not in item.reason


async def test_claude_login_with_cpas_code_true_authorize_url(
    box: WebSandbox, http: httpx.AsyncClient, runner: RecordingRunner
) -> None:
    """CPA's Claude authorize URL carries `code=true` (anthropic_auth.go GenerateAuthURL). The page used to
    refuse to store it (HTTP 500 on "Start login"); now the login goes through to verification, and the
    pasted callback (a real `code`) is still never stored."""
    task = box.add_task("claude", email="alice@example.com")
    page = await start(http, box, task.task_id, await open_link(http, task.link))
    assert box.state_of(task.task_id) is S.LOGIN_STARTED
    session = box.store.get_login_session(task.task_id)
    assert session is not None and session.verification_url is not None
    assert parse_qs(urlsplit(session.verification_url).query)["code"] == ["true"]
    callback = await sign_in_at_provider(http, box, task.task_id)
    assert callback.startswith("http://localhost:54545/callback?")
    sent = await http.post(
        box.url(f"/t/{task.task_id}/callback"), data={"csrf": csrf_of(page.text), "callback_url": callback}
    )
    assert sent.status_code == 303
    await wait_for_state(box, task.task_id, S.VERIFYING)
    stored = box.store.get_login_session(task.task_id)
    assert stored is None or stored.verification_url == session.verification_url


async def test_wrong_state_garbage_and_oversize_send_nothing(
    box: WebSandbox, http: httpx.AsyncClient
) -> None:
    task = box.add_task("codex")
    page = await start(http, box, task.task_id, await open_link(http, task.link))
    csrf = csrf_of(page.text)
    url = box.url(f"/t/{task.task_id}/callback")
    wrong = "http://localhost:1455/auth/callback?code=abc&state=" + "0" * 32
    for pasted, words in [
        (wrong, "different or older sign-in"),
        ("hello", "does not look like a web address"),
        ("", "Paste the address"),
        ("http://localhost:1455/auth/callback?code=abc", "no sign-in information"),
    ]:
        answer = await http.post(url, data={"csrf": csrf, "callback_url": pasted})
        assert answer.status_code == 400
        assert words in answer.text
        assert "0" * 32 not in answer.text
    huge = await http.post(url, data={"csrf": csrf, "callback_url": "x" * 20000})
    assert huge.status_code == 413
    assert callback_posts(box) == []
    assert box.state_of(task.task_id) is S.LOGIN_STARTED
    # The task is still usable: the real address goes through.
    real = await sign_in_at_provider(http, box, task.task_id)
    assert (await http.post(url, data={"csrf": csrf, "callback_url": real})).status_code == 303
    await wait_for_state(box, task.task_id, S.VERIFYING)


@pytest.mark.parametrize(
    ("provider", "route", "redirect"),
    [
        ("claude", "/anthropic-auth-url", "http://localhost:54545/callback"),
        ("antigravity", "/antigravity-auth-url", "http://localhost:51121/oauth-callback"),
    ],
)
async def test_other_callback_providers(
    box: WebSandbox, http: httpx.AsyncClient, provider: str, route: str, redirect: str
) -> None:
    task = box.add_task(provider)
    page = await start(http, box, task.task_id, await open_link(http, task.link))
    assert redirect in page.text
    assert any(op["path"].endswith(route) for op in box.sim.state.oplog)
    real = await sign_in_at_provider(http, box, task.task_id)
    assert real.startswith(redirect + "?")
    answer = await http.post(
        box.url(f"/t/{task.task_id}/callback"), data={"csrf": csrf_of(page.text), "callback_url": real}
    )
    assert answer.status_code == 303
    await wait_for_state(box, task.task_id, S.VERIFYING)


async def test_lapsed_window_then_start_again(box: WebSandbox, http: httpx.AsyncClient) -> None:
    task = box.add_task("codex")
    page = await start(http, box, task.task_id, await open_link(http, task.link))
    first = box.store.get_login_session(task.task_id)
    assert first is not None
    callback = await sign_in_at_provider(http, box, task.task_id)
    box.sim.state.advance(CALLBACK_WINDOW.total_seconds() + 1)  # CPA's waiter gives up
    await wait_for_state(box, task.task_id, S.OPENED)
    ready = await http.get(box.url(f"/t/{task.task_id}"))
    assert (
        "took longer than the proxy server (CPA) allows" in ready.text and "Start login again" in ready.text
    )
    late = await http.post(
        box.url(f"/t/{task.task_id}/callback"), data={"csrf": csrf_of(page.text), "callback_url": callback}
    )
    assert late.status_code == 409 and "Start login" in late.text
    assert callback_posts(box) == []
    again = await http.post(box.url(f"/t/{task.task_id}/restart"), data={"csrf": csrf_of(ready.text)})
    assert again.status_code == 303
    second = box.store.get_login_session(task.task_id)
    assert second is not None and second.oauth_state != first.oauth_state
    assert box.state_of(task.task_id) is S.LOGIN_STARTED
    assert len([op for op in box.sim.state.oplog if op["path"].endswith("/codex-auth-url")]) == 2


async def test_our_clock_lapse_blocks_the_paste_and_restart_cancels(
    box: WebSandbox, http: httpx.AsyncClient
) -> None:
    task = box.add_task("codex")
    page = await start(http, box, task.task_id, await open_link(http, task.link))
    callback = await sign_in_at_provider(http, box, task.task_id)
    box.clock.advance(CALLBACK_WINDOW.total_seconds() + 1)
    expired = await http.get(box.url(f"/t/{task.task_id}"))
    assert "has expired" in expired.text and 'name="callback_url"' not in expired.text
    hop = await http.get(box.url(f"/t/{task.task_id}/signin"))
    assert hop.status_code == 303 and hop.headers["location"].endswith(f"/t/{task.task_id}")
    late = await http.post(
        box.url(f"/t/{task.task_id}/callback"), data={"csrf": csrf_of(page.text), "callback_url": callback}
    )
    assert late.status_code == 409 and "5 minutes" in late.text
    assert callback_posts(box) == []
    restarted = await http.post(box.url(f"/t/{task.task_id}/restart"), data={"csrf": csrf_of(expired.text)})
    assert restarted.status_code == 303
    cancels = [op for op in box.sim.state.oplog if op["path"].endswith("/oauth-session")]
    assert [op["method"] for op in cancels] == ["DELETE"]


async def test_xai_device_code(box: WebSandbox, http: httpx.AsyncClient) -> None:
    task = box.add_task("xai")
    page = await start(http, box, task.task_id, await open_link(http, task.link))
    session = box.store.get_login_session(task.task_id)
    assert session is not None and session.user_code
    assert session.user_code in page.text and "Copy code" in page.text
    assert 'class="countdown" data-seconds="' in page.text
    hop = await http.get(box.url(f"/t/{task.task_id}/signin"))
    device = hop.headers["location"]
    assert "/device" in device
    approved = await http.post(device, data={"user_code": session.user_code, "action": "approve"})
    assert approved.status_code == 200
    await wait_for_state(box, task.task_id, S.VERIFYING)


def service_account(project: str = "demo-project") -> bytes:
    return json.dumps(
        {
            "type": "service_account",
            "project_id": project,
            "private_key_id": "k1",
            "private_key": "-----BEGIN PRIVATE KEY-----\\nMIIEvQ\\n-----END PRIVATE KEY-----\\n",
            "client_email": f"reauth@{project}.iam.gserviceaccount.com",
        }
    ).encode()


async def test_vertex_upload(box: WebSandbox, http: httpx.AsyncClient, runner: RecordingRunner) -> None:
    task = box.add_task("vertex")
    auth = box.sim.state.auth_by_name(task.auth_name)
    assert auth is not None
    project = auth.metadata["project_id"]  # a new key for the same project
    page = await start(http, box, task.task_id, await open_link(http, task.link))
    assert 'name="file"' in page.text and 'name="location" value="us-central1"' in page.text
    url = box.url(f"/t/{task.task_id}/vertex")
    csrf = csrf_of(page.text)
    bad = await http.post(
        url, data={"csrf": csrf, "location": "us-central1"}, files={"file": ("k.json", b"{}")}
    )
    assert bad.status_code == 400 and "not a service-account key" in bad.text
    big = await http.post(url, data={"csrf": csrf}, files={"file": ("k.json", b" " * 300_000)})
    assert big.status_code == 413
    assert not [op for op in box.sim.state.oplog if op["path"].endswith("/vertex/import")]
    with capture_logs() as logs:
        good = await http.post(
            url,
            data={"csrf": csrf, "location": "europe-west4"},
            files={"file": ("key.json", service_account(project))},
        )
    assert "MIIEvQ" not in json.dumps(logs, default=str)
    assert good.status_code == 303, good.text
    assert box.state_of(task.task_id) is S.VERIFYING
    shown = await http.get(box.url(f"/t/{task.task_id}"))
    for fact in (
        project,
        f"reauth@{project}.iam.gserviceaccount.com",
        "europe-west4",
    ):
        assert fact in shown.text
    assert "vertex-demo-project.json" not in shown.text  # file names: operator view and audit only
    assert "MIIEvQ" not in shown.text
    assert box.store.get_task(task.task_id).new_auth_name == f"vertex-{project}.json"


@pytest.mark.parametrize("other", ["elsewhere", "healthy"])
async def test_vertex_key_for_another_project_is_refused_before_cpa(
    box: WebSandbox, http: httpx.AsyncClient, runner: RecordingRunner, other: str
) -> None:
    """Issue 11: a recipient link replaces its own credential only. A key for another project never reaches
    CPA (it would overwrite, or be adopted as, that project's credential), and the task does not move."""
    task = box.add_task("vertex")
    mine = box.sim.state.auth_by_name(task.auth_name)
    assert mine is not None
    if other == "healthy":  # another project whose credential is healthy in CPA already
        healthy = box.sim.state.add_credential("vertex", email="ops@example.com", project_id="proj-healthy")
        project = healthy.metadata["project_id"]
    else:
        project = "proj-elsewhere"
    page = await start(http, box, task.task_id, await open_link(http, task.link))
    before = box.store.get_task(task.task_id, with_history=False)
    answer = await http.post(
        box.url(f"/t/{task.task_id}/vertex"),
        data={"csrf": csrf_of(page.text)},
        files={"file": ("key.json", service_account(project))},
    )
    assert answer.status_code == 400
    sentence = (
        f"This key belongs to project {project}; this request is for project {mine.metadata['project_id']}."
    )
    assert sentence in answer.text
    assert not [op for op in box.sim.state.oplog if op["path"].endswith("/vertex/import")]
    after = box.store.get_task(task.task_id, with_history=False)
    assert (after.state, after.new_auth_name) == (before.state, None) == (S.OPENED, None)
    assert runner.calls == [] and runner.remembered == []


async def test_vertex_key_whose_file_another_credential_holds_is_refused(
    box: WebSandbox, http: httpx.AsyncClient, runner: RecordingRunner
) -> None:
    """The old file carries a prefix (cmd/vertex_import.go): the key is for its project, but the unprefixed
    name CPA would write already belongs to another credential, which must not be overwritten or adopted."""
    old = box.sim.state.add_credential(
        "vertex", email="a@example.com", project_id="proj-shared", name="vertex-team-proj-shared.json"
    )
    box.sim.state.revoke(old.name, live=True)
    box.sim.state.add_credential("vertex", email="b@example.com", project_id="proj-shared")
    now = box.clock()
    created = box.store.create_task(
        cpa=CPA_NAME,
        auth_name=old.name,
        auth_index=old.auth_index,
        provider="vertex",
        account_masked="a***@example.com",
        reason="revoked",
        now=now,
        deadline=now + timedelta(days=7),
    )
    link = box.url(f"/r/{box.store.issue_link_token(created.id, now + timedelta(days=7), now)}")
    page = await start(http, box, created.id, await open_link(http, link))
    answer = await http.post(
        box.url(f"/t/{created.id}/vertex"),
        data={"csrf": csrf_of(page.text)},
        files={"file": ("key.json", service_account("proj-shared"))},
    )
    assert answer.status_code == 400
    assert "already holds another credential for project proj-shared (vertex-proj-shared.json)" in answer.text
    assert not [op for op in box.sim.state.oplog if op["path"].endswith("/vertex/import")]
    assert box.state_of(created.id) is S.OPENED


async def test_bad_links_are_plain_4xx_and_change_nothing(box: WebSandbox, http: httpx.AsyncClient) -> None:
    task = box.add_task("codex")
    tampered = task.link[:-3] + ("aaa" if not task.link.endswith("aaa") else "bbb")
    answer = await http.get(tampered)
    assert answer.status_code == 404 and "This link does not work" in answer.text
    assert "set-cookie" not in answer.headers
    assert (await http.get(box.url("/r/"))).status_code == 404
    assert box.state_of(task.task_id) is S.OPEN
    # No cookie: the task page refuses, and so do the actions.
    assert (await http.get(box.url(f"/t/{task.task_id}"))).status_code == 403
    assert (await http.post(box.url(f"/t/{task.task_id}/start"), data={"csrf": "x"})).status_code == 403
    # Expired link.
    box.clock.advance(8 * 86400)
    assert (await http.get(task.link)).status_code == 404
    box.clock.advance(-8 * 86400)
    # A closed task's link: 410, nothing to do.
    box.store.apply_transition(task.task_id, S.CANCELLED, "cancelled by the operator", box.clock())
    closed = await http.get(task.link)
    assert closed.status_code == 410 and "closed" in closed.text


async def test_csrf_and_origin_are_checked(box: WebSandbox, http: httpx.AsyncClient) -> None:
    task = box.add_task("codex")
    html = await open_link(http, task.link)
    url = box.url(f"/t/{task.task_id}/start")
    assert (await http.post(url, data={})).status_code == 403
    assert (await http.post(url, data={"csrf": "forged"})).status_code == 403
    cross = await http.post(url, data={"csrf": csrf_of(html)}, headers={"Origin": "https://evil.example"})
    assert cross.status_code == 403
    other = box.add_task("claude")
    # A session for one task does not open another.
    assert (await http.get(box.url(f"/t/{other.task_id}"))).status_code == 403
    assert box.state_of(task.task_id) is S.OPEN
    assert (await http.post(url, data={"csrf": csrf_of(html)})).status_code == 303


async def test_security_headers_everywhere(box: WebSandbox, http: httpx.AsyncClient) -> None:
    task = box.add_task("codex")
    html = await open_link(http, task.link)
    assert "<script>" not in html and "style=" not in html
    for path in [
        task.link,
        box.url(f"/t/{task.task_id}"),
        box.url(f"/t/{task.task_id}/status.json"),
        box.url("/static/reauthd.css"),
        box.url("/static/reauthd.js"),
        box.url("/nope"),
        box.url("/r/forged"),
        box.url("/operator/login"),
    ]:
        answer = await http.get(path)
        headers = answer.headers
        assert headers["referrer-policy"] == "no-referrer", path
        assert headers["cache-control"] == "no-store", path
        assert headers["x-frame-options"] == "DENY", path
        assert headers["x-content-type-options"] == "nosniff", path
        csp = headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp, path
        assert "server" not in headers


async def test_link_guessing_is_rate_limited(box: WebSandbox, http: httpx.AsyncClient) -> None:
    task = box.add_task("codex")
    statuses = [(await http.get(box.url(f"/r/guess{i}"))).status_code for i in range(12)]
    assert statuses[:10] == [404] * 10 and statuses[10:] == [429, 429]
    # Issue 11: a right link still opens from this address (a shared NAT); wrong ones stay refused.
    assert (await http.get(task.link)).status_code == 200
    assert (await http.get(box.url("/r/guess-more"))).status_code == 429


async def test_callback_submissions_are_rate_limited(box: WebSandbox, http: httpx.AsyncClient) -> None:
    task = box.add_task("codex")
    page = await start(http, box, task.task_id, await open_link(http, task.link))
    url = box.url(f"/t/{task.task_id}/callback")
    statuses = [
        (await http.post(url, data={"csrf": csrf_of(page.text), "callback_url": "nope"})).status_code
        for _ in range(11)
    ]
    assert statuses == [400] * 10 + [429]


async def test_operator_view(box: WebSandbox, http: httpx.AsyncClient) -> None:
    task = box.add_task("codex", email="bob@example.com")
    await open_link(http, task.link)  # a recipient session must not open the operator view
    first = await http.get(box.url("/operator"))
    assert first.status_code == 303 and first.headers["location"].endswith("/operator/login")
    bad = await http.get(box.url("/operator"), headers={"Authorization": "Bearer wrong"})
    assert bad.status_code == 401
    listed = await http.get(
        box.url("/operator"), headers={"Authorization": "Bearer op-secret-token-0123456789abcdef012345"}
    )
    assert listed.status_code == 200 and task.task_id in listed.text and "b***@example.com" in listed.text
    # The login form: double-submit CSRF, then a cookie scoped to /operator.
    form = await http.get(box.url("/operator/login"))
    wrong = await http.post(box.url("/operator/login"), data={"csrf": csrf_of(form.text), "token": "nope"})
    assert wrong.status_code == 401
    form = await http.get(box.url("/operator/login"))
    assert (
        await http.post(
            box.url("/operator/login"),
            data={"csrf": "forged", "token": "op-secret-token-0123456789abcdef012345"},
        )
    ).status_code == 403
    form = await http.get(box.url("/operator/login"))
    ok = await http.post(
        box.url("/operator/login"),
        data={"csrf": csrf_of(form.text), "token": "op-secret-token-0123456789abcdef012345"},
    )
    assert ok.status_code == 303
    evidence = [
        {"source": "probe", "observed_at": "2026-11-27T12:00:00+00:00", "http_status": 401, "text": "<b>x"}
    ]
    box.store.update_task_fields(task.task_id, box.clock(), details={"evidence": evidence})
    detail = await http.get(box.url(f"/operator/tasks/{task.task_id}"))
    assert detail.status_code == 200 and "History" in detail.text and task.auth_name in detail.text
    assert "op-secret-token" not in detail.text
    assert "Evidence (what detection saw)" in detail.text and "<td>401</td><td>&lt;b&gt;x</td>" in detail.text


async def test_operator_view_off_without_token(tmp_path: Path) -> None:
    async with WebSandbox(tmp_path) as sb, httpx.AsyncClient() as http:
        for path in ("/operator", "/operator/login"):
            off = await http.get(sb.url(path), headers={"Authorization": "Bearer x"})
            assert off.status_code == 404
            assert "The operator view is off: set web.operator_token" in off.text


async def test_behind_a_path_prefix(tmp_path: Path) -> None:
    async with WebSandbox(tmp_path, path_prefix="/reauth") as sb, httpx.AsyncClient() as http:
        task = sb.add_task("codex")
        assert "/reauth/r/" in task.link
        html = await open_link(http, task.link)
        assert 'action="/reauth/t/' in html and 'href="/reauth/static/reauthd.css"' in html
        answer = await http.post(sb.url(f"/t/{task.task_id}/start"), data={"csrf": csrf_of(html)})
        assert answer.status_code == 303 and answer.headers["location"] == f"/reauth/t/{task.task_id}"


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
async def test_other_methods_refused(box: WebSandbox, http: httpx.AsyncClient, method: str) -> None:
    task = box.add_task("codex")
    answer = await http.request(method, task.link)
    assert answer.status_code == 405
    assert box.state_of(task.task_id) is S.OPEN


@pytest.mark.parametrize("provider", ["codex", "claude", "xai", "kimi", "vertex"])
async def test_end_to_end_with_the_real_verifier(tmp_path: Path, provider: str) -> None:
    """Login on the page, then the verify package finds, tests and keeps the new credential: done."""
    async with (
        WebSandbox(tmp_path, verify=True, poll_interval_s=0.2) as sb,
        httpx.AsyncClient(timeout=10) as http,
    ):
        task = sb.add_task(provider)
        page = await start(http, sb, task.task_id, await open_link(http, task.link))
        if provider in ("codex", "claude"):
            address = await sign_in_at_provider(http, sb, task.task_id)
            sent = await http.post(
                sb.url(f"/t/{task.task_id}/callback"),
                data={"csrf": csrf_of(page.text), "callback_url": address},
            )
            assert sent.status_code == 303
        elif provider == "vertex":
            auth = sb.sim.state.auth_by_name(task.auth_name)
            assert auth is not None
            sent = await http.post(
                sb.url(f"/t/{task.task_id}/vertex"),
                data={"csrf": csrf_of(page.text)},
                files={"file": ("key.json", service_account(auth.metadata["project_id"]))},
            )
            assert sent.status_code == 303
        else:
            hop = await http.get(sb.url(f"/t/{task.task_id}/signin"))
            session = sb.store.get_login_session(task.task_id)
            assert session is not None
            await http.post(
                hop.headers["location"], data={"user_code": session.user_code, "action": "approve"}
            )
        await wait_for_state(sb, task.task_id, S.DONE, timeout=30)
        done = await http.get(sb.url(f"/t/{task.task_id}"))
        assert "All done" in done.text and "The account works again. You can close this page." in done.text
        # File names and CPA's bookkeeping stay in the operator view and the audit trail.
        final = sb.store.get_task(task.task_id)
        assert "Verified the new credential" not in done.text
        for name in {final.auth_name, final.new_auth_name}:
            assert name and name not in done.text
        removed = '<li class="step done">Removing the old login</li>' in done.text
        skipped = '<li class="step skipped">Removing the old login — not needed</li>' in done.text
        # Same file name: CPA overwrote the old login in place, so nothing was removed (shown as skipped).
        assert (removed, skipped) == (
            (False, True) if final.new_auth_name == final.auth_name else (True, False)
        )


async def test_ops_routes_are_mounted_with_the_same_headers(tmp_path: Path) -> None:
    from reauthd.ops.health import Health, health_routes
    from reauthd.ops.metrics import Metrics

    routes = health_routes(Health(cpas=["local"]), Metrics(cpas=["local"]))
    async with (
        WebSandbox(tmp_path, path_prefix="/reauth", extra_routes=routes) as sb,
        httpx.AsyncClient() as http,
    ):
        for path in ("/livez", "/readyz", "/metrics"):
            for url in (sb.url(path), sb.web.url + path):  # behind a proxy that keeps or strips the prefix
                answer = await http.get(url)
                assert answer.status_code in (200, 503), url
                assert answer.headers["x-frame-options"] == "DENY"
                assert answer.headers["cache-control"] == "no-store"


async def test_cookie_attributes_under_https(tmp_path: Path) -> None:
    """Behind an https public URL the session cookie is Secure, HttpOnly, SameSite=Strict, scoped to its task."""
    from reauthd.login.flow import LoginFlow
    from reauthd.store import Store
    from reauthd.web.app import create_app

    with Store.open(tmp_path / "state.db") as store:
        now = datetime.now(UTC)
        task = store.create_task(
            cpa="main", auth_name="codex-a.json", auth_index="0" * 16, provider="codex",
            account_masked="a***@example.com", reason="revoked", now=now, deadline=now + timedelta(days=1),
        )  # fmt: skip
        token = store.issue_link_token(task.id, now + timedelta(days=1), now)
        flow = LoginFlow(store, {}, clock=lambda: datetime.now(UTC))
        app = create_app(store=store, login=flow, public_url="https://reauth.example.org/r4")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://reauth.example.org") as http:
            answer = await http.get(f"/r4/r/{token}")
        await flow.aclose()
    assert answer.status_code == 200
    cookie = answer.headers["set-cookie"].lower()
    for part in ("secure", "httponly", "samesite=strict", f"path=/r4/t/{task.id}"):
        assert part in cookie
    assert token not in answer.text and token not in cookie


async def test_is_webui_asks_cpa_for_a_forwarded_login(tmp_path: Path) -> None:
    async with WebSandbox(tmp_path, webui=True) as sb, httpx.AsyncClient() as http:
        task = sb.add_task("codex")
        page = await start(http, sb, task.task_id, await open_link(http, task.link))
        assert "same computer as this browser" in page.text
        minted = [op for op in sb.sim.state.oplog if op["path"].endswith("/codex-auth-url")]
        assert len(minted) == 1 and any("is_webui" in str(q) for q in minted[0]["query"])


async def test_is_webui_forwarder_port_taken_reads_as_one_sentence_and_start_works_after(
    tmp_path: Path,
) -> None:
    """CPA answers 500 `failed to start callback server` when its forwarder port is taken (contract §4.1)."""
    async with WebSandbox(tmp_path, webui=True) as sb, httpx.AsyncClient() as http:
        task = sb.add_task("codex")
        html = await open_link(http, task.link)
        sb.sim.state.sessions.forwarder_ports_in_use.add(1455)
        answer = await http.post(sb.url(f"/t/{task.task_id}/start"), data={"csrf": csrf_of(html)})
        assert answer.status_code == 409
        alerts = re.findall(r'<p class="notice[^"]*" role="alert">([^<]*)</p>', answer.text)
        assert alerts == [
            "The proxy server could not open the local port this sign-in needs (another program or sign-in "
            "may be using it); try again in a minute, and tell the operator if it keeps failing."
        ]
        assert "failed to start callback server" not in answer.text
        assert sb.state_of(task.task_id) is S.OPENED  # the task stays usable: its Start button is there
        assert f'action="/t/{task.task_id}/restart"' in answer.text
        assert sb.store.get_login_session(task.task_id) is None
        sb.sim.state.sessions.forwarder_ports_in_use.clear()  # the other program let go of the port
        page = await start(http, sb, task.task_id, answer.text)
        assert sb.state_of(task.task_id) is S.LOGIN_STARTED
        assert "Copy the <strong>whole address</strong>" in page.text


async def test_hostile_form_bodies_are_refused_not_500(box: WebSandbox, http: httpx.AsyncClient) -> None:
    """Regressions from tests/reliability/test_fuzz_forms.py: non-ASCII csrf, too many fields, a cut upload."""
    task = box.add_task("vertex")
    page = await start(http, box, task.task_id, await open_link(http, task.link))
    form = {"content-type": "application/x-www-form-urlencoded"}
    answer = await http.post(box.url(f"/t/{task.task_id}/restart"), content=b"csrf=%C2%80", headers=form)
    assert answer.status_code == 403
    await http.get(box.url("/operator/login"))
    for body in (b"csrf=%C2%80&token=x", b"a=1&" * 6):
        assert (await http.post(box.url("/operator/login"), content=body, headers=form)).status_code in (
            401,
            403,
        )
    cut = (
        f'--XyZ\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n{csrf_of(page.text)}\r\n'
        '--XyZ\r\nContent-Disposition: form-data; name="file"; filename="key.json"\r\n\r\n{}\r\n'
    ).encode()
    answer = await http.post(
        box.url(f"/t/{task.task_id}/vertex"),
        content=cut,
        headers={"content-type": "multipart/form-data; boundary=XyZ"},
    )
    assert answer.status_code in (400, 403)
    assert box.state_of(task.task_id) is S.OPENED
