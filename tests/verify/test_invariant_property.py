"""Property: whatever goes wrong, the old file is disabled or deleted only after a successful test request of
the new credential — checked from the order of real requests the simulated CPA saw (issue 6).

Each example stages one revoked credential and a re-login, injects a random mix of faults (the new
credential refused or flaky, CPA dropping requests, the old file deleted, rewritten or revived meanwhile,
a second candidate, a crash after a random persisted step), then lets the runner advance until it stops.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from reauthd.core.model import ReauthTask, TaskState
from reauthd.cpa.client import CPAClient
from reauthd.cpa.wire import RetryPolicy
from reauthd.sim import SimServer, scenarios
from reauthd.sim.state import SimState
from reauthd.store.sqlite import Store
from reauthd.verify.runner import CompletionConfig, CompletionRunner
from tests.reliability.oplog import record_probes
from tests.verify.verify_world import KEY, identity_of, relogin, utcnow

S = TaskState
STOPPED = {S.DONE, S.FAILED, S.OPENED, S.AWAITING_OPERATOR, S.CANCELLED, S.EXPIRED}


class Crash(BaseException):
    pass


class CrashingStore(Store):
    crash_after: int | None = None  # crash right after this many flow writes
    writes: int = 0

    def update_task_fields(self, task_id: str, now: datetime, **fields: Any) -> ReauthTask:
        task = super().update_task_fields(task_id, now, **fields)
        self.writes += 1
        if self.crash_after is not None and self.writes >= self.crash_after:
            self.crash_after = None
            raise Crash
        return task


@dataclass(frozen=True)
class Plan:
    new_probe: str  # "ok" | "refused" | "flaky"
    flaky_count: int
    drop_path: str  # "" | "/auth-files/fields" | "/auth-files/status" | "/auth-files"
    drop_method: str
    drop_count: int
    meanwhile: str  # "" | "delete" | "rewrite" | "revive"
    second_candidate: bool
    collision: bool  # the login lands on an existing file of the same account (overwritten in place)
    crash_after: int | None
    policy: str


plans = st.builds(
    Plan,
    new_probe=st.sampled_from(["ok", "ok", "refused", "flaky"]),
    flaky_count=st.integers(1, 6),
    drop_path=st.sampled_from(["", "/auth-files/fields", "/auth-files/status", "/auth-files"]),
    drop_method=st.sampled_from(["PATCH", "DELETE", "GET"]),
    drop_count=st.integers(1, 4),
    meanwhile=st.sampled_from(["", "", "delete", "rewrite", "revive"]),
    second_candidate=st.sampled_from([False, False, False, True]),
    collision=st.booleans(),
    crash_after=st.one_of(st.none(), st.integers(1, 8)),
    policy=st.sampled_from(["delete", "delete", "disable", "keep"]),
)


async def _run(plan: Plan, tmp: Path) -> None:
    async with SimServer(KEY, watcher_delay=0.05) as sim:
        state = sim.state
        record_probes(state)
        old = scenarios.add_credential(
            state, "codex", email="p@example.com", plan="plus", name="codex-p@example.com-plus.json"
        )
        scenarios.revoke(state, old.name, live=True)
        client = CPAClient(
            "main", sim.base_url, KEY, timeout=5, retry=RetryPolicy(attempts=2, base_delay_s=0.01)
        )
        store = CrashingStore.open(tmp / "state.db")
        try:
            now = utcnow()
            task = store.create_task(
                cpa="main", auth_name=old.name, auth_index=old.auth_index, provider="codex",
                account_masked="p***@example.com", reason="revoked", now=now, deadline=now,
            )  # fmt: skip
            for to in (S.OPENED, S.LOGIN_STARTED, S.VERIFYING):
                store.apply_transition(task.id, to, to.value, utcnow())
            ident = identity_of(old)
            if plan.collision:
                scenarios.add_credential(
                    state, "codex", email=ident.email, plan="plus", account_id=ident.account_id, prefix="mine"
                )
            new_name = relogin(state, ident)
            if plan.second_candidate:
                ident.plan = "pro"
                relogin(state, ident)
            await asyncio.sleep(0.15)  # let the watcher register what the login wrote
            new_token = state.disk[new_name].content["access_token"]
            if plan.new_probe == "refused":
                state.upstream.access[new_token].probe_override = (401, '{"error":"invalid token"}')
            elif plan.new_probe == "flaky":
                scenarios.inject_fault(
                    state, "status", path="/api-call", status=502, body='{"error":"request failed"}',
                    count=plan.flaky_count,
                )  # fmt: skip
            if plan.drop_path:
                scenarios.inject_fault(
                    state, "drop", path=plan.drop_path, method=plan.drop_method, count=plan.drop_count
                )
            store.crash_after = plan.crash_after
            config = CompletionConfig(
                policy=plan.policy,  # type: ignore[arg-type]
                find_inline_budget_s=2, find_poll_interval_s=0.05, verify_inline_delay_s=0.01,
                verify_retry_after=timedelta(0), verify_max_attempts=4, max_retire_errors=6, retire_backoff_s=0.0,
            )  # fmt: skip
            for round_ in range(12):
                runner = CompletionRunner(store, {"main": client}, config=config)  # a restart every round
                try:
                    result = await runner.advance(task.id, utcnow(), wait=True)
                except Crash:
                    continue
                if round_ == 0 and plan.meanwhile:
                    _meanwhile(state, old.name, plan.meanwhile)
                if result.state in STOPPED:
                    break
            final = store.get_task(task.id)
            event(f"final state {final.state.value}; deleted={old.name not in state.auths}")
            check_request_order(state.oplog, final, old.name, old.auth_index)
            check_audit_order([(a.action, a.outcome) for a in store.audit_for(task.id)])
        finally:
            store.close()
            await client.aclose()


def _meanwhile(state: SimState, old_name: str, what: str) -> None:
    auth = state.auths.get(old_name)
    if auth is None:
        return
    if what == "delete":
        state.disk.pop(old_name, None)
        state.remove_auth(old_name)
    elif what == "rewrite":
        content = dict(state.disk[old_name].content)
        content["note"] = "edited by a person"
        state.write_file(old_name, content)
    elif what == "revive":
        token = auth.access_token
        record = state.upstream.access.get(token)
        if record is not None:
            record.dead_kind = None


def check_request_order(oplog: list[dict[str, Any]], task: ReauthTask, old_name: str, old_index: str) -> None:
    """Every request that disables or deletes the old file comes after a 2xx probe of the new credential."""
    verified: set[str] = set()
    for entry in oplog:
        if entry.get("marker") == "upstream-probe":
            if 200 <= entry["status"] < 300:
                verified.update(i for i in entry["auth_indexes"] if i != old_index)
            continue
        path = str(entry.get("path", "")).removeprefix("/v0/management")
        body = entry.get("body") if isinstance(entry.get("body"), dict) else {}
        retiring = (
            entry["method"] == "PATCH" and path == "/auth-files/status" and body.get("name") == old_name
            and body.get("disabled") is True
        ) or (entry["method"] == "DELETE" and path == "/auth-files")  # fmt: skip
        # Status 0: the connection dropped; the request may have been carried out, so it counts too.
        if retiring and entry["status"] in (0, 200):
            assert task.new_auth_index is not None and task.new_auth_index in verified, (
                f"{entry['method']} {path} (seq {entry['seq']}) came before a successful probe of the new "
                f"credential {task.new_auth_name}"
            )


def check_audit_order(audit: list[tuple[str, str]]) -> None:
    """The store tells the same story: no disable/delete entry before a successful verification entry."""
    verified = False
    for action, outcome in audit:
        if action.startswith("verify-") and "HTTP 2" in outcome:
            verified = True
        if action in ("patch-status disabled", "delete"):
            assert verified, f"{action} recorded before a successful verification"


def test_the_order_checks_catch_a_violation() -> None:
    task = ReauthTask(
        id="t", cpa="main", auth_name="old.json", auth_index="o", provider="codex", account_masked="",
        state=S.DONE, reason="", created_at=utcnow(), updated_at=utcnow(), deadline=utcnow(),
        new_auth_name="new.json", new_auth_index="n",
    )  # fmt: skip
    delete = {"seq": 1, "method": "DELETE", "path": "/v0/management/auth-files", "status": 200, "body": None}
    probe_ok = {"marker": "upstream-probe", "auth_indexes": ["n"], "status": 200}
    probe_old = {"marker": "upstream-probe", "auth_indexes": ["o"], "status": 200}
    check_request_order([probe_ok, delete], task, "old.json", "o")
    for bad in ([delete, probe_ok], [probe_old, delete], [{**probe_ok, "status": 401}, delete]):
        try:
            check_request_order(bad, task, "old.json", "o")
        except AssertionError:
            continue
        raise AssertionError(f"not caught: {bad}")
    check_audit_order([("verify-probe", "test request: HTTP 200"), ("delete", "ok")])
    try:
        check_audit_order([("verify-probe", "HTTP 401"), ("patch-status disabled", "ok")])
    except AssertionError:
        return
    raise AssertionError("audit violation not caught")


@settings(max_examples=50, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(plan=plans)
def test_old_file_changes_only_after_a_successful_probe_of_the_new_credential(plan: Plan) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_run(plan, Path(tmp)))
