"""The operator view's actions over real HTTP against the simulator: each is a POST with CSRF (or a bearer
header), each is audited, and each does what `reauthd tasks …` / `reauthd reauth` would."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from reauthd.core.model import TaskState
from reauthd.store import DeliveryKind
from reauthd.web.sandbox import WebSandbox

S = TaskState
TOKEN = "operator-token-for-tests-0123456789abcdef"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
CSRF = re.compile(r'name="csrf" value="([^"]*)"')
LINK = re.compile(r'<output id="recipient-link" class="recipient-link">([^<]+)</output>')


@pytest.fixture
async def box(tmp_path: Path) -> AsyncIterator[WebSandbox]:
    async with WebSandbox(
        tmp_path, operator_token=TOKEN, notify_urls=["json://127.0.0.1:9/a", "json://127.0.0.1:9/b"]
    ) as sb:
        yield sb


@contextlib.asynccontextmanager
async def signed_in(box: WebSandbox) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client signed in through the login form (cookie session, CSRF tokens on forms)."""
    async with httpx.AsyncClient(timeout=10) as http:
        form = await http.get(box.url("/operator/login"))
        found = CSRF.search(form.text)
        assert found is not None
        ok = await http.post(box.url("/operator/login"), data={"csrf": found.group(1), "token": TOKEN})
        assert ok.status_code == 303
        yield http


def audit_actions(box: WebSandbox, task_id: str) -> list[tuple[str, str]]:
    return [(a.action, a.outcome) for a in box.store.audit_for(task_id)]


async def test_each_action_needs_the_sessions_csrf_token(box: WebSandbox) -> None:
    task = box.add_task("codex")
    async with signed_in(box) as http:
        index = await http.get(box.url("/operator"))
        csrf = CSRF.findall(index.text)[0]
        assert csrf and f'action="/operator/tasks/{task.task_id}/cancel"' in index.text
        for action in ("link", "resend", "cancel", "restart"):
            url = box.url(f"/operator/tasks/{task.task_id}/{action}")
            assert (await http.post(url, data={"csrf": "forged"})).status_code == 403
            assert (await http.post(url, data={})).status_code == 403
            # From another site (a cross-site form would carry its own Origin).
            other = await http.post(url, data={"csrf": csrf}, headers={"Origin": "https://evil.example"})
            assert other.status_code == 403
        raised = await http.post(
            box.url("/operator/raise"), data={"cpa": "local", "auth_name": task.auth_name}
        )
        assert raised.status_code == 403
    assert box.state_of(task.task_id) is S.OPEN
    assert audit_actions(box, task.task_id) == []
    # Without any session: to the sign-in, nothing done.
    async with httpx.AsyncClient() as anonymous:
        answer = await anonymous.post(box.url(f"/operator/tasks/{task.task_id}/cancel"), data={"csrf": "x"})
        assert answer.status_code == 303 and answer.headers["location"].endswith("/operator/login")
    assert box.state_of(task.task_id) is S.OPEN


async def test_copy_link_gives_a_working_recipient_link(box: WebSandbox) -> None:
    task = box.add_task("codex")
    async with signed_in(box) as http:
        csrf = CSRF.findall((await http.get(box.url("/operator"))).text)[0]
        answer = await http.post(box.url(f"/operator/tasks/{task.task_id}/link"), data={"csrf": csrf})
        assert answer.status_code == 200
        found = LINK.search(answer.text)
        assert found is not None and found.group(1).startswith(box.url("/r/"))
    async with httpx.AsyncClient() as person:
        landing = await person.get(found.group(1))
        assert landing.status_code == 200 and "Opening your request" in landing.text
        page = await person.get(box.url(f"/t/{task.task_id}"))
        assert "Start login" in page.text
    assert audit_actions(box, task.task_id) == [("operator: new recipient link", "issued")]


async def test_resend_queues_one_message_per_channel(box: WebSandbox) -> None:
    task = box.add_task("codex")
    async with httpx.AsyncClient(timeout=10) as http:  # a bearer header needs no CSRF token
        answer = await http.post(box.url(f"/operator/tasks/{task.task_id}/resend"), headers=BEARER)
        assert answer.status_code == 200 and "2 message(s)" in answer.text
        again = await http.post(box.url(f"/operator/tasks/{task.task_id}/resend"), headers=BEARER)
        assert again.status_code == 200
    rows = box.store.list_deliveries(task_id=task.task_id, kinds=[DeliveryKind.REMINDER])
    assert len(rows) == 4 and sorted({r.route for r in rows}) == ["default#0", "default#1"]
    assert audit_actions(box, task.task_id) == [("operator: resend message", "2 message(s) queued")] * 2


async def test_cancel_then_start_again_gives_a_new_task_and_link(box: WebSandbox) -> None:
    task = box.add_task("codex")
    async with httpx.AsyncClient(timeout=10) as http:
        cancelled = await http.post(box.url(f"/operator/tasks/{task.task_id}/cancel"), headers=BEARER)
        assert cancelled.status_code == 200 and "its links stop working" in cancelled.text
        assert box.state_of(task.task_id) is S.CANCELLED
        twice = await http.post(box.url(f"/operator/tasks/{task.task_id}/cancel"), headers=BEARER)
        assert twice.status_code == 409 and "cannot be cancelled now; nothing was changed" in twice.text
        restarted = await http.post(box.url(f"/operator/tasks/{task.task_id}/restart"), headers=BEARER)
        assert restarted.status_code == 200
    found = LINK.search(restarted.text)
    assert found is not None
    (new,) = [t for t in box.store.list_tasks() if t.id != task.task_id]
    assert new.state is S.OPEN and new.auth_name == task.auth_name and new.auth_index == task.auth_index
    assert box.store.resolve_link_token(found.group(1).rsplit("/", 1)[1], box.clock()) == new.id
    assert audit_actions(box, task.task_id) == [
        ("operator: cancel", "cancelled"),
        ("operator: start again", f"replaced by task {new.id}"),
    ]
    assert audit_actions(box, new.id) == [("operator: start again", f"raised after task {task.task_id}")]


async def test_start_again_on_an_open_task_cancels_it_and_its_links(box: WebSandbox) -> None:
    task = box.add_task("codex")
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(box.url(f"/operator/tasks/{task.task_id}/restart"), headers=BEARER)
        assert answer.status_code == 200
        assert box.state_of(task.task_id) is S.CANCELLED
        old = await http.get(task.link)
        assert old.status_code in (404, 410)


async def test_raise_a_task_for_any_credential(box: WebSandbox) -> None:
    auth = box.sim.state.add_credential("claude", email="zoe@example.com", name="claude-zoe.json")
    async with signed_in(box) as http:
        index = await http.get(box.url("/operator"))
        assert "Raise a task for any credential" in index.text
        csrf = CSRF.findall(index.text)[-2]  # the raise form's (the last one is Sign out)
        missing = await http.post(
            box.url("/operator/raise"), data={"csrf": csrf, "cpa": "local", "auth_name": "nope.json"}
        )
        assert missing.status_code == 409 and "CPA local has no auth file named nope.json." in missing.text
        raised = await http.post(
            box.url("/operator/raise"),
            data={"csrf": csrf, "cpa": "local", "auth_name": "claude-zoe.json", "reason": "password changed"},
        )
        assert raised.status_code == 200 and LINK.search(raised.text) is not None
        (task,) = box.store.list_tasks()
        assert (task.auth_index, task.provider, task.account_masked) == (
            auth.auth_index,
            "claude",
            "z***@example.com",
        )
        assert task.reason == "password changed" and task.source == "manual"
        again = await http.post(
            box.url("/operator/raise"), data={"csrf": csrf, "cpa": "local", "auth_name": "claude-zoe.json"}
        )
        assert again.status_code == 200 and f"already has an open task ({task.id}" in again.text
    assert audit_actions(box, task.id) == [("operator: raise task", "raised")]


async def test_the_operator_view_lists_cards_with_actions_per_state(box: WebSandbox) -> None:
    waiting = box.add_task("codex")
    ended = box.add_task("claude")
    box.tasks.cancel(ended.task_id, box.clock())
    async with httpx.AsyncClient(timeout=10) as http:
        index = (await http.get(box.url("/operator"), headers=BEARER)).text
    cards = dict(re.findall(r'<li class="task-card" data-task="([^"]+)">(.*?)</li>', index, re.S))
    assert "Copy recipient link" in cards[waiting.task_id] and "Cancel" in cards[waiting.task_id]
    assert "Resend message" in cards[waiting.task_id]
    assert "Start again (new link)" in cards[ended.task_id]
    assert "Cancel" not in cards[ended.task_id] and "Copy recipient link" not in cards[ended.task_id]
    assert "1 open, 1 closed." in index


async def test_favicon_no_404(box: WebSandbox) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        page = await http.get(box.url("/operator/login"))
        icon = re.search(r'<link rel="icon" href="([^"]+)" type="image/svg\+xml">', page.text)
        assert icon is not None
        for url in (box.web.url + icon.group(1), box.url("/favicon.ico")):
            answer = await http.get(url)
            assert answer.status_code == 200 and answer.text.startswith("<svg"), url
