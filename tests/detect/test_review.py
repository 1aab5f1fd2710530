"""The per-listing account review (issue 14): a task whose refresh token was reused names the other holder
of its account, and the message then says whom to stop."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from reauthd.core.model import Credential, ReauthTask, TaskState
from reauthd.detect.review import other_holders_for, review
from reauthd.notify.templates import TaskLink, render
from reauthd.store import DeliveryKind

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def codex(name: str, cpa: str) -> Credential:
    return Credential(
        cpa=cpa,
        name=name,
        auth_index=f"idx-{cpa}",
        provider="codex",
        status="active",
        email="jo@example.com",
        account_id="acct-jo",
        plan_type="plus",
    )


def task(cause: str, state: TaskState = TaskState.NOTIFIED) -> ReauthTask:
    return ReauthTask(
        id="t1",
        cpa="main",
        auth_name="codex-1a2b3c4d-jo@example.com-plus.json",
        auth_index="idx-main",
        provider="codex",
        account_masked="j***@example.com",
        state=state,
        reason="Codex no longer accepts the refresh token; a new login is needed",
        created_at=NOW,
        updated_at=NOW,
        deadline=NOW + timedelta(days=7),
        details={"cause": cause},
    )


def test_reused_task_names_the_other_holder_in_its_message() -> None:
    listing = [
        codex("codex-1a2b3c4d-jo@example.com-plus.json", "main"),
        codex("codex-1a2b3c4d-jo@example.com-plus.json", "laptop"),
    ]
    result = review(listing, [], NOW, warning_days=3, known_plans={})
    reused = task("refresh_token_reused")
    updates = other_holders_for([reused], result)
    assert updates == {"t1": ["codex-1a2b3c4d-j***@example.com-plus.json on CPA laptop"]}
    reused.details["other_holders"] = updates["t1"]
    assert other_holders_for([reused], result) == {}  # already named: nothing to write
    message = render(DeliveryKind.NEW, [TaskLink(reused, "https://r.example.org/r/" + "x" * 40)])
    assert "stop the other holder (codex-1a2b3c4d-j***@example.com-plus.json on CPA laptop)" in message.text
    assert "jo@example.com" not in message.text
    # other causes and closed tasks are left alone
    assert other_holders_for([task("revoked"), task("refresh_token_reused", TaskState.DONE)], result) == {}
