"""The verify/retire test world: a simulated CPA on loopback, a real store, a real client, and helpers."""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from reauthd.core.model import ReauthTask, TaskState
from reauthd.cpa.client import CPAClient
from reauthd.sim import SimServer, scenarios
from reauthd.sim.auths import SimAuth
from reauthd.sim.credentials import (
    ACCESS_LIFETIME,
    Identity,
    file_content,
    file_name_for,
    merge_relogin,
    service_account,
)
from reauthd.sim.flows import raw_record_metadata
from reauthd.sim.state import SimState
from reauthd.store.sqlite import Store
from reauthd.verify.public_api import PublicAPI
from reauthd.verify.runner import CompletionConfig, CompletionRunner

KEY = "sim-key"
PROXY_KEY = "sim-proxy-key"
S = TaskState


def utcnow() -> datetime:
    return datetime.now(UTC)


def relogin(state: SimState, ident: Identity, *, name: str | None = None) -> str:
    """What CPA's saveTokenRecord does after a successful login (contract §4.4): fresh tokens, a merge into a
    same-name file (disabled forced to false), one write; the watcher registers it about a second later."""
    now = state.now()
    acct = state.upstream.account(
        ident.provider, ident.email, account_id=ident.account_id, plan=ident.plan, project_id=ident.project_id
    )
    expires = now + ACCESS_LIFETIME.get(ident.provider, timedelta(hours=1))
    access, refresh = state.upstream.mint(acct, expires)
    content = file_content(ident, access, refresh, now, expires)
    fname = name or file_name_for(ident, now)
    old = state.disk.get(fname)
    if old is not None:
        content = merge_relogin(old.content, content)
    state.write_file(fname, content)
    # runtimeAuthSyncHook registers the raw record at once (no status) before the watcher's reload (§13)
    state.register_raw_login(fname, raw_record_metadata(ident.provider, content))
    return fname


def identity_of(auth: SimAuth) -> Identity:
    meta = auth.metadata
    return Identity(
        auth.provider,
        str(meta.get("email", "")),
        account_id=str(meta.get("account_id") or meta.get("account_uuid") or meta.get("sub") or ""),
        plan="plus" if auth.provider == "codex" else "",
        project_id=str(meta.get("project_id", "")),
    )


@dataclass
class World:
    sim: SimServer
    store: Store
    client: CPAClient
    tmp: Path

    @property
    def state(self) -> SimState:
        return self.sim.state

    def runner(self, **overrides: Any) -> CompletionRunner:
        cfg: dict[str, Any] = {
            "find_inline_budget_s": 8.0,
            "find_poll_interval_s": 0.2,
            "verify_inline_delay_s": 0.05,
            "not_routed_delay_s": 0.2,
            "verify_retry_after": timedelta(0),
            "retire_backoff_s": 0.0,
        }
        public = overrides.pop("public", False)
        verify_models = overrides.pop("verify_models", {})
        cfg.update(overrides)
        apis = {"main": PublicAPI(self.sim.base_url, SecretStr(PROXY_KEY), timeout=10)} if public else {}
        return CompletionRunner(
            self.store,
            {"main": self.client},
            config=CompletionConfig(**cfg),
            public_apis=apis,
            verify_models={"main": verify_models},
        )

    def task_for(self, auth: SimAuth, *, to: TaskState = S.VERIFYING, **fields: Any) -> ReauthTask:
        """A task for `auth` walked through the lifecycle to `to` (login started now)."""
        now = utcnow()
        task = self.store.create_task(
            cpa="main",
            auth_name=auth.name,
            auth_index=auth.auth_index,
            provider=auth.provider,
            account_masked="u***@example.com",
            reason="the provider revoked the sign-in",
            now=now - timedelta(minutes=5),
            deadline=now + timedelta(days=7),
        )
        if fields:
            self.store.update_task_fields(task.id, now - timedelta(minutes=5), **fields)
        path = [S.OPENED, S.LOGIN_STARTED, S.CALLBACK_RECEIVED, S.VERIFYING]
        for i, state in enumerate(path[: path.index(to) + 1] if to in path else path):
            task = self.store.apply_transition(
                task.id, state, f"step {state.value}", now + timedelta(milliseconds=i)
            )
        return task

    def audit(self, task_id: str) -> list[tuple[str, str, str]]:
        return [(a.action, a.target_name, a.outcome) for a in self.store.audit_for(task_id)]

    def mgmt_ops(self) -> list[dict[str, Any]]:
        return [op for op in self.state.oplog if op.get("path", "").startswith("/v0/management")]


async def vertex_relogin(world: World, *, old_prefix: str | None = None) -> tuple[str, str, str]:
    """An old, dead Vertex credential and a task whose new key CPA imported under a new name."""
    state = world.state
    old = scenarios.add_credential(
        state, "vertex", project_id="proj-old", email="sa@proj-old.iam", prefix=old_prefix
    )
    scenarios.revoke(state, old.name, live=True)
    task = world.task_for(old)
    sa = service_account("proj-new", "sa@proj-new.iam", "key-new-1")
    imported = await world.client.vertex_import(json.dumps(sa).encode(), "us-central1")
    new_name = posixpath.basename(imported.auth_file)
    # What the login flow records with the import (login/flow.py): CPA named the file itself.
    world.store.update_task_fields(task.id, utcnow(), new_auth_name=new_name)
    return task.id, old.name, new_name
