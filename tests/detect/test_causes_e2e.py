"""Issue 14 item 1: each cause from a real upstream body, through the simulated CPA, to `reauthd scan`, the
message and the recipient page.

The body is what the provider answers (contract §9, tests/core/test_classify.py); the simulator's copy of
CPA's executors (`scenarios.classify`, codexStatusErrorClassification) reshapes it and `SimAuth.mark_failure`
records it as MarkResult does (§2.3 A4: `status_message` is the raw body string).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from apprise.decorators import notify as apprise_plugin

from reauthd.config import Settings
from reauthd.core.causes import OPERATOR_CAUSES, RELOGIN_CAUSES, Cause, explain
from reauthd.core.classify import classify
from reauthd.core.model import (
    Credential,
    CredentialRef,
    Evidence,
    EvidenceSource,
    TaskState,
    Verdict,
)
from reauthd.core.sanitize import sanitize_text
from reauthd.detect.review import review
from reauthd.detect.scan import render_json, render_table, scan
from reauthd.login.view import describe
from reauthd.notify import notices
from reauthd.notify.notifier import Notifier
from reauthd.sim import SimServer, scenarios
from reauthd.sim.auths import Failure
from reauthd.sim.upstream import UpstreamAnswer
from reauthd.store import Store
from reauthd.tasks import TaskService
from reauthd.web.pages import SiteLinks, task_body
from tests.core.test_causes import CODEX_RAW_INVALIDATED, CODEX_REFRESH_REUSED_AFTER_3
from tests.core.test_classify import (
    CLAUDE_REVOKED,
    CODEX_DEACTIVATED,
    CODEX_REGION_403,
    OPENAI_ACCOUNT_DEACTIVATED,
)
from tests.detect.test_scan import settings_for

SENT: list[dict[str, str]] = []
LINKS = SiteLinks(prefix="", secure=False, origin="http://127.0.0.1:8390")
# The body of OpenAI's refresh answer that CPA puts after "token refresh failed with status 401: ".
RAW_REUSED = CODEX_REFRESH_REUSED_AFTER_3.split(": ", 1)[1]
ANTHROPIC_ORG_DISABLED = (
    '{"type":"error","error":{"type":"permission_error","message":"This organization has been disabled."}}'
)


@apprise_plugin(on="reauthdcauses")
def _channel(body: str, title: str, *args: Any, **kwargs: Any) -> bool:
    SENT.append({"title": title, "body": body})
    return True


@dataclass(frozen=True)
class Case:
    label: str
    provider: str
    status: int
    body: str
    cause: Cause


CASES = [
    Case("codex token_invalidated", "codex", 401, CODEX_RAW_INVALIDATED, Cause.REVOKED),
    Case("codex refresh_token_reused", "codex", 401, RAW_REUSED, Cause.REFRESH_TOKEN_REUSED),
    Case("claude revoked 403", "claude", 403, CLAUDE_REVOKED, Cause.REVOKED),
    Case("codex deactivated_workspace 402", "codex", 402, CODEX_DEACTIVATED, Cause.ACCOUNT_DEACTIVATED),
    Case("openai account_deactivated", "codex", 401, OPENAI_ACCOUNT_DEACTIVATED, Cause.ACCOUNT_DEACTIVATED),
    Case("claude organization disabled", "claude", 403, ANTHROPIC_ORG_DISABLED, Cause.ACCOUNT_DEACTIVATED),
    Case("codex region 403", "codex", 403, CODEX_REGION_403, Cause.REGION_BLOCKED),
]


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        state={"path": tmp_path / "state.db"},
        cpa=[{"name": "main", "base_url": "http://127.0.0.1:9", "management_key": "k" * 16}],
        notify={"urls": ["reauthdcauses://ops"], "group_window_s": 0},
        web={"public_url": "https://reauthd.example.org"},
    )


@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
async def test_cause_from_upstream_body_to_scan_message_and_page(
    case: Case, sim: SimServer, tmp_path: Path, key: str
) -> None:
    SENT.clear()
    auth = scenarios.add_credential(sim.state, case.provider, email="alice@example.com")
    status, recorded = scenarios.classify(case.provider, UpstreamAnswer(case.status, case.body))
    model = "gpt-5" if case.provider == "codex" else "claude-sonnet-4-5-20250929"
    auth.mark_failure(Failure(status, recorded, model), sim.state.now())

    # scan: the row and its JSON carry the cause and the next step
    report = await scan(settings_for(tmp_path, ("main", sim.base_url, key)), probe=False)
    row = next(r for r in report.rows if r.name == auth.name)
    assert row.cause == case.cause.value, (row.verdict, row.reason, row.status_message)
    entry = next(c for c in json.loads(render_json(report))["credentials"] if c["name"] == auth.name)
    assert entry["cause"] == case.cause.value and entry["advice"] == row.advice and row.advice
    assert f"[{case.cause.value}]" in render_table(report)

    # the same listing as detection reads it → verdict → cause and advice
    now = datetime.now(UTC)
    credential = Credential(
        cpa="main",
        name=auth.name,
        auth_index=auth.auth_index,
        provider=case.provider,
        status="error",
        status_message=auth.status_message,
        email="alice@example.com",
    )
    evidence = Evidence(EvidenceSource.LISTING, now, text=sanitize_text(auth.status_message), code="error")
    verdict = classify(credential, [evidence], now)
    advice = explain(verdict, case.provider)
    assert advice.cause is case.cause
    assert row.advice == advice.next_step

    settings = _settings(tmp_path / "state")
    (tmp_path / "state").mkdir()
    store = Store.open(settings.state.path)
    try:
        service = TaskService(store, settings, Notifier(settings.notify), clock=lambda: now)
        confirmed = Verdict(verdict.kind, verdict.reason, verdict.evidence, confirmed=True)
        task = service.on_confirmed_revocation(credential, confirmed, now)
        if case.cause in RELOGIN_CAUSES:
            # a task with its cause: the message says why and what to do, with the link
            assert task is not None and task.details["cause"] == case.cause.value
            assert service.show(task.id)["advice"]["next_step"] == advice.next_step
            await service.flush_notifications(now + timedelta(seconds=1))
            assert len(SENT) == 1
            body = SENT[0]["body"]
            assert f"Cause: {advice.why}" in body and f"Next step: {advice.next_step}" in body
            assert "https://reauthd.example.org/r/" in body
            if case.label == "codex token_invalidated":
                assert "phone verification" in body
            task = store.get_task(task.id)
            page = str(task_body(LINKS, task, describe(task, None, now), "csrf", None))
            assert advice.why in page and "Start login" in page
        else:
            # no task, no link: one operator message saying what to do instead
            assert case.cause in OPERATOR_CAUSES
            assert task is None
            view = _View(CredentialRef("main", auth.name, auth.auth_index), credential, confirmed)
            result = review([credential], [view], now, warning_days=3, known_plans={})
            notices.post(store, settings.notify, result.notices, now)
            await service.flush_notifications(now + timedelta(seconds=1))
            assert len(SENT) == 1
            body = SENT[0]["body"]
            assert advice.next_step in body and "No re-login link was sent" in body
            assert "/r/" not in body and "alice@" not in body
            # a task with this cause (raised by hand, say) shows no Start button either
            manual, _ = service.raise_manual("main", auth.name, "by hand", now, auth_index=auth.auth_index)
            store.update_task_fields(manual.id, now, details={"cause": case.cause.value})
            manual = store.get_task(manual.id)
            page = str(task_body(LINKS, manual, describe(manual, None, now), "csrf", None))
            assert "A new login will not fix this" in page and "Start login" not in page
            assert advice.next_step in page
            assert manual.state is TaskState.OPEN
    finally:
        store.close()


@dataclass(frozen=True)
class _View:
    ref: CredentialRef
    credential: Credential
    verdict: Verdict


async def test_cloudflare_condition_is_the_egress_ip(sim: SimServer, tmp_path: Path, key: str) -> None:
    """The simulator's Cloudflare answer (CPA records `cloudflare challenge`, §2.3 A4) → region_blocked."""
    auth = scenarios.add_credential(sim.state, "codex", email="carol@example.com")
    scenarios.set_condition(sim.state, auth.name, "cloudflare", live=True)
    report = await scan(settings_for(tmp_path, ("main", sim.base_url, key)), probe=False)
    row = next(r for r in report.rows if r.name == auth.name)
    assert (row.status_message, row.cause) == ("cloudflare challenge", "region_blocked")
    assert "egress IP" in row.advice
