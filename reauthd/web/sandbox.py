"""A self-contained recipient page against the CPA simulator: simulator, store, CPA client, login flow and
web server on loopback — what `reauthd demo` shows and what the web and browser tests drive.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType

from pydantic import SecretStr
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from reauthd.config import CPAConfig, NotifyConfig, Settings, StateConfig, WebConfig
from reauthd.core.model import TaskState
from reauthd.core.sanitize import mask_account
from reauthd.cpa.client import CPAClient
from reauthd.login.flow import LoginFlow
from reauthd.login.ports import CompletionRunner
from reauthd.login.providers import UnsupportedProvider, login_for_provider
from reauthd.sim import SimServer
from reauthd.store import Store
from reauthd.tasks.service import TaskService
from reauthd.web.actions import OperatorActions
from reauthd.web.app import create_app
from reauthd.web.security import RateLimits
from reauthd.web.server import WebServer

SIM_KEY = "sim-key"
SIM_PROXY_KEY = "sim-proxy-key"
CPA_NAME = "local"


class SandboxClock:
    """Wall time plus an offset a test can move forward (reauthd's side; the simulator has its own)."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


class _LateApp:
    """ASGI app that forwards to the sandbox's app, which exists only once the server knows its port."""

    def __init__(self, box: WebSandbox) -> None:
        self.box = box

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.box.app(scope, receive, send)


@dataclass(frozen=True, slots=True)
class SandboxTask:
    task_id: str
    link: str  # the recipient link, as a notification would carry it
    auth_name: str
    auth_index: str


class WebSandbox:
    """`async with WebSandbox(tmp_dir) as box:` → `box.add_task("codex")`, `box.web.url`, `box.sim`."""

    def __init__(
        self,
        state_dir: Path,
        *,
        path_prefix: str = "",
        operator_token: str | None = None,
        completion: CompletionRunner | None = None,
        poll_interval_s: float = 0.5,
        limits: RateLimits | None = None,
        watcher_delay: float = 0.3,
        verify: bool = False,
        tick_s: float = 1.0,
        extra_routes: Sequence[BaseRoute] = (),
        webui: bool = False,
        notify_urls: Sequence[str] = (),
        operator_name: str = "",
        operator_contact: str = "",
    ) -> None:
        self.state_dir = state_dir
        self.path_prefix = path_prefix.rstrip("/")
        self.operator_token = operator_token
        self.completion = completion
        self.poll_interval_s = poll_interval_s
        self.limits = limits
        self.verify = verify
        self.extra_routes = extra_routes
        self.webui = webui
        self.notify_urls = tuple(notify_urls)
        self.operator_name = operator_name
        self.operator_contact = operator_contact
        self.tick_s = tick_s
        self.clock = SandboxClock()
        self.sim = SimServer(SIM_KEY, watcher_delay=watcher_delay)
        self._stack = contextlib.AsyncExitStack()
        self.app: ASGIApp

    async def __aenter__(self) -> WebSandbox:
        stack = self._stack
        await stack.enter_async_context(self.sim)
        self.store = Store.open(self.state_dir / "state.db")
        stack.callback(self.store.close)
        self.cpa = CPAClient(CPA_NAME, self.sim.base_url, SIM_KEY, timeout=10)
        stack.push_async_callback(self.cpa.aclose)
        if self.verify and self.completion is None:
            self.completion = await self._real_completion()
        self.flow = LoginFlow(
            self.store,
            {CPA_NAME: self.cpa},
            clock=self.clock,
            completion=self.completion,
            poll_interval_s=self.poll_interval_s,
            webui_cpas=frozenset({CPA_NAME}) if self.webui else frozenset(),
        )
        stack.push_async_callback(self.flow.aclose)
        # The server binds first (port 0: any free one), then the app is built for its real address, so the
        # links the operator view mints are complete URLs, as with a configured `web.public_url`.
        self.web = WebServer(_LateApp(self), "127.0.0.1", 0)
        await self.web.start()
        stack.push_async_callback(self.web.stop)
        settings = Settings(
            state=StateConfig(path=self.state_dir / "state.db"),
            cpa=[CPAConfig(name=CPA_NAME, base_url=self.sim.base_url, management_key=SecretStr(SIM_KEY))],
            notify=NotifyConfig(urls=[SecretStr(u) for u in self.notify_urls]),
            web=WebConfig(public_url=f"{self.web.url}{self.path_prefix}"),
        )
        self.tasks = TaskService(self.store, settings, clock=self.clock)
        self.app = create_app(
            store=self.store,
            login=self.flow,
            public_url=settings.web.public_url,
            operator_token=SecretStr(self.operator_token) if self.operator_token else None,
            clock=self.clock,
            limits=self.limits,
            extra_routes=self.extra_routes,
            operator_name=self.operator_name,
            operator_contact=self.operator_contact,
            actions=OperatorActions(self.tasks, {CPA_NAME: self.cpa}),
        )
        return self

    async def _real_completion(self) -> CompletionRunner:
        """The verify package's runner against the simulator, plus the daemon's tick that drives it."""
        from reauthd.verify.public_api import PublicAPI
        from reauthd.verify.runner import CompletionConfig
        from reauthd.verify.runner import CompletionRunner as VerifyRunner

        public = PublicAPI(self.sim.base_url, SecretStr(SIM_PROXY_KEY), timeout=10)
        runner = VerifyRunner(
            self.store,
            {CPA_NAME: self.cpa},
            config=CompletionConfig(verify_models={"vertex": "gemini-2.5-flash"}),
            public_apis={CPA_NAME: public},
        )
        self._stack.push_async_callback(runner.aclose)

        async def tick() -> None:
            while True:
                await asyncio.sleep(self.tick_s)
                with contextlib.suppress(Exception):
                    await runner.advance_all(self.clock())

        ticker = asyncio.get_running_loop().create_task(tick(), name="sandbox-tick")

        async def stop_ticker() -> None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker

        self._stack.push_async_callback(stop_ticker)
        return runner

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    @property
    def base_url(self) -> str:
        return f"{self.web.url}{self.path_prefix}"

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def add_task(self, provider: str, *, email: str | None = None, reason: str | None = None) -> SandboxTask:
        """A revoked credential in the simulator and its open task with a fresh link.

        The simulated provider's next sign-in for this provider is the same account, as when the real
        person logs in again (a different account would be a different credential, contract §4.4).
        """
        tag = secrets.token_hex(3)
        email = email or f"{provider}-{tag}@example.com"
        account_id = secrets.token_hex(8)
        plan = "plus" if provider == "codex" else None
        project = f"proj-{tag}" if provider == "vertex" else None
        auth = self.sim.state.add_credential(
            provider, email=email, account_id=account_id, plan=plan, project_id=project
        )
        self.sim.state.revoke(auth.name, live=True)
        try:
            route = login_for_provider(provider).auth_url_provider or provider
        except UnsupportedProvider:
            route = provider
        self.sim.state.set_next_login(
            route, email=email, account_id=account_id, plan=plan, project_id=project
        )
        now = self.clock()
        task = self.store.create_task(
            cpa=CPA_NAME,
            auth_name=auth.name,
            auth_index=auth.auth_index,
            provider=provider,
            account_masked=mask_account(email),
            reason=reason or "The provider revoked this login (token invalidated).",
            now=now,
            deadline=now + timedelta(days=7),
        )
        token = self.store.issue_link_token(task.id, now + timedelta(days=7), now)
        return SandboxTask(task.id, self.url(f"/r/{token}"), auth.name, auth.auth_index)

    def state_of(self, task_id: str) -> TaskState:
        return self.store.get_task(task_id, with_history=False).state
