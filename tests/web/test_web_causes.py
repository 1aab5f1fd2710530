"""Issue 14 on the web: the recipient page and the operator view show the cause and the next step; a cause a
new login will not fix gets no Start button; the operator view lists the notices told."""

from __future__ import annotations

import httpx

from reauthd.config import NotifyConfig
from reauthd.notify import notices
from reauthd.notify.notices import NoticeKind, OperatorNotice
from reauthd.web.sandbox import WebSandbox
from tests.web.test_web_recipient import box, http, open_link, recorder, runner  # noqa: F401

OP = {"Authorization": "Bearer op-secret-token-0123456789abcdef012345"}


async def test_recipient_page_and_operator_view_show_the_cause(
    box: WebSandbox,  # noqa: F811
    http: httpx.AsyncClient,  # noqa: F811
) -> None:
    task = box.add_task("codex", email="bob@example.com")
    box.store.update_task_fields(task.task_id, box.clock(), details={"cause": "refresh_token_reused"})
    page = await open_link(http, task.link)
    assert "Another program refreshed this login" in page and "stop the other holder" in page
    assert "Start login" in page
    detail = await http.get(box.url(f"/operator/tasks/{task.task_id}"), headers=OP)
    assert "refresh_token_reused: Another program refreshed this login" in detail.text
    assert "<dt>Next step</dt>" in detail.text


async def test_no_start_button_when_a_login_would_not_help(
    box: WebSandbox,  # noqa: F811
    http: httpx.AsyncClient,  # noqa: F811
) -> None:
    task = box.add_task("codex", email="carl@example.com")
    box.store.update_task_fields(task.task_id, box.clock(), details={"cause": "region_blocked"})
    page = await open_link(http, task.link)
    assert "A new login will not fix this" in page and "egress IP" in page
    assert "Start login" not in page and 'action="' not in page.split("<main", 1)[-1].split("</main>")[0]


async def test_operator_view_lists_the_notices(box: WebSandbox, http: httpx.AsyncClient) -> None:  # noqa: F811
    notice = OperatorNotice(
        key="k" * 24,
        kind=NoticeKind.DUPLICATE_HOLDER,
        cpa="main",
        provider="codex",
        title="One account, 2 holders: d***@example.com (codex)",
        text="d***@example.com (codex) is held in two or more CPAs: a.json on CPA main; a.json on CPA b.",
    )
    notices.post(box.store, NotifyConfig(), [notice], box.clock())
    listed = await http.get(box.url("/operator"), headers=OP)
    assert "Notices to the operator" in listed.text and "a.json on CPA b" in listed.text
    assert "duplicate_holder" in listed.text
