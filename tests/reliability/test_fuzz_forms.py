"""Hypothesis against every form of the web page (Start login, Start again, callback paste, Vertex upload,
operator sign-in), in process: whatever arrives — random fields, sizes, encodings, content types,
cookies — the answer is never a 500 or a traceback, and no task changes state on bad input."""

from __future__ import annotations

import gc
import re
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote_from_bytes

import httpx
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from reauthd.core.model import TaskState
from reauthd.web.sandbox import WebSandbox
from reauthd.web.security import RateLimiter, RateLimits

OPERATOR_TOKEN = "op-fuzz-token-0123"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
ORIGIN = "http://127.0.0.1"


def generous_limits() -> RateLimits:
    """High limits so the fuzzer reaches the form handling instead of a 429."""
    many = 10**9
    return RateLimits(*(RateLimiter(many, 1) for _ in range(6)))


@dataclass
class Forms:
    box: WebSandbox
    http: httpx.AsyncClient
    fresh: str  # an open task nobody started
    started: str  # a Codex task waiting for the pasted address
    vertex: str  # an opened Vertex task showing the upload form
    csrf: dict[str, str]
    expected: dict[str, TaskState]


async def _open(http: httpx.AsyncClient, path: str) -> tuple[str, str]:
    """Land on the link (by path: the client talks to the app in process) and load the task page."""
    landing = await http.get(path)
    assert landing.status_code == 200, landing.text[:300]
    target = re.search(r'href="(/t/[^"]+)"', landing.text)
    assert target is not None
    page = await http.get(target.group(1))
    found = CSRF.search(page.text)
    assert found is not None, page.text[:500]
    return target.group(1).split("/")[2], found.group(1)


def _path(link: str) -> str:
    return "/r/" + link.rsplit("/r/", 1)[1]


@pytest.fixture
async def forms(tmp_path: Path) -> AsyncIterator[Forms]:
    async with WebSandbox(tmp_path, operator_token=OPERATOR_TOKEN, limits=generous_limits()) as box:
        # Exceptions become the app's 500 page, as on a real server, rather than raising in the test.
        transport = httpx.ASGITransport(app=box.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url=ORIGIN, timeout=10) as http:
            ids, csrf = {}, {}
            for label, provider in (("fresh", "codex"), ("started", "codex"), ("vertex", "vertex")):
                task = box.add_task(provider)
                task_id, token = await _open(http, _path(task.link))
                ids[label], csrf[label] = task_id, token
            for label in ("started", "vertex"):
                answer = await http.post(f"/t/{ids[label]}/start", data={"csrf": csrf[label]})
                assert answer.status_code == 303, answer.text[:300]
            login = await http.get("/operator/login")
            found = CSRF.search(login.text)
            csrf["operator"] = found.group(1) if found else ""
            expected = {
                ids["fresh"]: TaskState.OPEN,
                ids["started"]: TaskState.LOGIN_STARTED,
                ids["vertex"]: TaskState.OPENED,
            }
            for task_id, state in expected.items():
                assert box.state_of(task_id) is state
            yield Forms(box, http, ids["fresh"], ids["started"], ids["vertex"], csrf, expected)


# -------------------------------------------------------------------------------------------- bodies

NAMES = st.sampled_from(["csrf", "callback_url", "token", "file", "location", "", "csrf[]", "é", "a" * 300])
TEXT = st.one_of(
    st.text(max_size=200),
    st.integers(0, 40_000).map(lambda n: "A" * n),  # past every cap (16 KiB forms, 4 KiB operator)
    st.sampled_from(
        [
            "http://localhost:1455/auth/callback?code=x&state=y",
            "http://localhost:1455/auth/callback?state=" + "s" * 5000,
            "javascript:alert(1)",
            "\x00\r\n",
            "%ZZ%",
            '{"type": "service_account", "private_key": "x"}',
        ]
    ),
)
CONTENT_TYPES = st.sampled_from(
    [
        "application/x-www-form-urlencoded",
        "application/x-www-form-urlencoded; charset=latin-1",
        "multipart/form-data; boundary=XyZ",
        "multipart/form-data",
        "application/json",
        "text/plain",
        "",
        "garbage/\x7f",
    ]
)


# Steering around a known bug while it is open (see the regression tests at the end of this file): ASCII-only
# csrf values, at most N operator fields, only terminated multipart bodies. All off: those bugs are fixed.
SKIP_NON_ASCII_CSRF = False
OPERATOR_MAX_FIELDS = 60
SKIP_UNTERMINATED_MULTIPART = False


@st.composite
def bodies(draw: st.DrawFn, valid_csrf: str | None, max_fields: int = 60) -> tuple[bytes, str]:
    """A request body and its content type; `valid_csrf` may be slipped in as the csrf field."""
    shape = draw(st.sampled_from(["urlencoded", "raw", "multipart"]))
    fields = draw(
        st.one_of(
            st.lists(st.tuples(NAMES, TEXT), max_size=6),
            st.lists(st.tuples(NAMES, st.text(max_size=8)), min_size=5, max_size=40),  # many small fields
        )
    )
    fields = fields[: max_fields - (valid_csrf is not None)]
    if SKIP_NON_ASCII_CSRF:
        fields = [(k, v.encode("ascii", "ignore").decode() if k == "csrf" else v) for k, v in fields]
    if valid_csrf is not None and draw(st.booleans()):
        fields.insert(draw(st.integers(0, len(fields))), ("csrf", valid_csrf))
    encoding = draw(st.sampled_from(["utf-8", "latin-1", "utf-16"]))
    if shape == "urlencoded":
        body = "&".join(
            f"{quote_from_bytes(k.encode(encoding, 'replace'))}={quote_from_bytes(v.encode(encoding, 'replace'))}"
            for k, v in fields
        ).encode()
        if draw(st.booleans()):
            body = b"&".join([body, draw(st.binary(max_size=300))])
        return body, draw(st.one_of(st.just("application/x-www-form-urlencoded"), CONTENT_TYPES))
    if shape == "multipart":
        parts = []
        for name, value in fields:
            disposition = f'form-data; name="{name}"'
            if name == "file" or draw(st.booleans()):
                disposition += '; filename="key.json"'
            parts.append(
                b"--XyZ\r\nContent-Disposition: "
                + disposition.encode(encoding, "replace")
                + b"\r\n\r\n"
                + value.encode(encoding, "replace")
                + b"\r\n"
            )
        endings = [b"--XyZ--\r\n"] if SKIP_UNTERMINATED_MULTIPART else [b"--XyZ--\r\n", b"", b"--other--\r\n"]
        end = draw(st.sampled_from(endings))
        return b"".join(parts) + end, draw(
            st.one_of(st.just("multipart/form-data; boundary=XyZ"), CONTENT_TYPES)
        )
    return draw(st.binary(max_size=3000)), draw(CONTENT_TYPES)


COOKIE_NOISE = st.one_of(
    st.none(),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=200),
    st.sampled_from(["reauthd_session=", "reauthd_session=a.b.c.d", "reauthd_operator=x" * 50]),
)


async def _post(
    forms: Forms, path: str, body: bytes, content_type: str, cookie: str | None
) -> httpx.Response:
    headers: list[tuple[bytes, bytes]] = []
    if content_type:
        headers.append((b"content-type", content_type.encode("latin-1", "replace")))
    if cookie is not None:
        # Replaces the session cookies for this request: a forged or garbled cookie must fail cleanly.
        headers.append((b"cookie", cookie.encode("latin-1", "replace")))
    return await forms.http.post(path, content=body, headers=headers)


def _check(forms: Forms, answer: httpx.Response, what: str) -> None:
    assert answer.status_code < 500, f"{what}: HTTP {answer.status_code}\n{answer.text[:500]}"
    assert "Traceback" not in answer.text and 'File "' not in answer.text, what
    for task_id, state in forms.expected.items():
        assert forms.box.state_of(task_id) is state, f"{what} changed task {task_id}"


FUZZ = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


@FUZZ
@given(data=st.data())
async def test_recipient_forms_survive_any_post_without_a_valid_token(
    forms: Forms, data: st.DataObject
) -> None:
    """Start login, Start again, the callback paste and the Vertex upload with anything but the page's own
    CSRF token, and with garbled cookies: a plain refusal, never a 500, no state change."""
    task_id = data.draw(st.sampled_from([forms.fresh, forms.started, forms.vertex]))
    action = data.draw(st.sampled_from(["start", "restart", "callback", "vertex"]))
    body, content_type = data.draw(bodies(None))
    cookie = data.draw(COOKIE_NOISE)
    answer = await _post(forms, f"/t/{task_id}/{action}", body, content_type, cookie)
    _check(forms, answer, f"POST /t/{task_id}/{action} ({content_type!r}, cookie {cookie!r})")


@FUZZ
@given(data=st.data())
async def test_callback_and_vertex_forms_survive_any_input_with_a_valid_token(
    forms: Forms, data: st.DataObject
) -> None:
    """The callback paste and the Vertex upload with a valid session and (sometimes) the valid CSRF token:
    whatever the pasted address or uploaded file, a plain answer and the task stays where it was."""
    label = data.draw(st.sampled_from(["started", "vertex"]))
    task_id = forms.started if label == "started" else forms.vertex
    action = "callback" if label == "started" else "vertex"
    body, content_type = data.draw(bodies(forms.csrf[label]))
    answer = await _post(forms, f"/t/{task_id}/{action}", body, content_type, None)
    _check(forms, answer, f"POST /t/{task_id}/{action} ({content_type!r}) {body[:200]!r}")


@FUZZ
@given(data=st.data())
async def test_operator_sign_in_survives_any_post(forms: Forms, data: st.DataObject) -> None:
    """The operator sign-in and sign-out forms: any body, with or without the form's CSRF value, never a
    500; only the right token signs in."""
    path = data.draw(st.sampled_from(["/operator/login", "/operator/logout"]))
    body, content_type = data.draw(bodies(forms.csrf["operator"] or None, OPERATOR_MAX_FIELDS))
    assume(body.count(b"&") < OPERATOR_MAX_FIELDS)  # parse_qsl counts separators, not pairs
    answer = await _post(forms, path, body, content_type, data.draw(COOKIE_NOISE))
    _check(forms, answer, f"POST {path} ({content_type!r}) {body[:200]!r}")
    assert OPERATOR_TOKEN not in answer.text


@FUZZ
@given(data=st.data())
async def test_operator_actions_survive_any_post_from_a_signed_in_browser(
    forms: Forms, data: st.DataObject
) -> None:
    """The operator view's action forms (cancel, link, resend, start again, raise): a signed-in browser
    session, any body without the session's CSRF token — never a 500, never a change, never the token."""
    if not forms.http.cookies.get("reauthd_operator"):
        signed = await forms.http.post(
            "/operator/login", data={"csrf": forms.csrf["operator"], "token": OPERATOR_TOKEN}
        )
        assert signed.status_code == 303
        login = await forms.http.get("/operator/login")
        found = CSRF.search(login.text)
        forms.csrf["operator"] = found.group(1) if found else ""
    task = data.draw(st.sampled_from([forms.fresh, forms.started, forms.vertex]))
    action = data.draw(st.sampled_from(["cancel", "link", "resend", "restart"]))
    path = data.draw(st.sampled_from([f"/operator/tasks/{task}/{action}", "/operator/raise"]))
    body, content_type = data.draw(bodies(forms.csrf["operator"] or None, OPERATOR_MAX_FIELDS))
    assume(body.count(b"&") < OPERATOR_MAX_FIELDS)
    answer = await _post(forms, path, body, content_type, None)
    _check(forms, answer, f"POST {path} ({content_type!r}) {body[:200]!r}")
    assert answer.status_code in (403, 413), answer.status_code  # signed in, so refused for its CSRF/size
    assert OPERATOR_TOKEN not in answer.text and "/r/" not in answer.text
    assert not [a for a in forms.box.store.audit_for() if a.action.startswith("operator:")]


# ------------------------------------------------ regressions: bugs this fuzzer found (fixed in 5acd460)


@pytest.mark.parametrize("form", ["recipient", "operator"])
async def test_non_ascii_csrf_is_refused_not_a_500(forms: Forms, form: str) -> None:
    """A csrf field that is not ASCII (any byte sequence a client can send) is a refused form."""
    path = f"/t/{forms.fresh}/start" if form == "recipient" else "/operator/login"
    answer = await forms.http.post(
        path, content=b"csrf=%C2%80&token=x", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    _check(forms, answer, f"non-ASCII csrf to {path}")
    assert answer.status_code == 403


async def test_operator_sign_in_with_many_fields_is_refused_not_a_500(forms: Forms) -> None:
    """An operator sign-in form with more fields than expected is refused like any bad form."""
    answer = await forms.http.post(
        "/operator/login", content=b"a=1&" * 6, headers={"content-type": "application/x-www-form-urlencoded"}
    )
    _check(forms, answer, "six fields to /operator/login")


UNTERMINATED = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="key.json"\r\n\r\n{}\r\n'


async def test_unterminated_upload_closes_its_temporary_file(forms: Forms) -> None:
    """A truncated upload is refused and leaves no open temporary file behind."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        answer = await forms.http.post(
            f"/t/{forms.vertex}/vertex",
            content=UNTERMINATED,
            headers={"content-type": "multipart/form-data; boundary=XyZ"},
        )
        gc.collect()
    _check(forms, answer, "an unterminated upload")
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
