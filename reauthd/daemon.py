"""Lifecycle: opens the store, CPA clients, detection, tasks, notifications, login page; runs; closes it all.

The database is the truth and timers only wake us: every tick reads the store and continues where the
state says, so a missed tick, a restart or a crash between two steps changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from reauthd.cli.common import EXIT_ATTENTION, EXIT_CONFIG, EXIT_LOCKED, EXIT_OK
from reauthd.config import ConfigError, NotifyConfig, Settings, load_config, secret_values
from reauthd.core.causes import Cause
from reauthd.core.classify import PROBE_TRANSPORT, PROBE_UNAVAILABLE, classify
from reauthd.core.model import Credential, Evidence, TaskState, VerdictKind
from reauthd.cpa import CPAClient
from reauthd.cpa.errors import CPAError
from reauthd.cpa.factory import client_from_config, load_gate, save_gate
from reauthd.cpa.home import HomeClient
from reauthd.detect.cpamp import CPAMPSource
from reauthd.detect.engine import DetectionEngine
from reauthd.detect.home import HomeEventPoller
from reauthd.detect.review import PLANS_KEY, other_holders_for, review
from reauthd.logging import REDACTOR
from reauthd.login.flow import LoginFlow
from reauthd.notify import notices
from reauthd.notify.notifier import Notifier, SendOutcome
from reauthd.notify.routes import split_channel
from reauthd.notify.templates import Message
from reauthd.ops.health import Health, health_routes
from reauthd.ops.limits import raise_open_files_limit
from reauthd.ops.metrics import Metrics, route_label, route_names
from reauthd.ops.sdnotify import SystemdNotifier
from reauthd.ops.watchdog import feed_watchdog
from reauthd.store.keyfile import KeyFileProblem, key_path_for, load_or_create_key
from reauthd.store.lock import StateLocked
from reauthd.store.sqlite import StateUnsafe, Store
from reauthd.tasks.service import TaskService
from reauthd.verify.runner import CompletionRunner
from reauthd.web.actions import OperatorActions
from reauthd.web.app import create_app
from reauthd.web.server import WebServer

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]

# How often the main loop wakes: flush due notifications, advance logins being verified and retired.
TICK_S = 2.0
# How often the heartbeat job proves the event loop and the scheduler turn (/livez, the systemd watchdog).
HEARTBEAT_S = 1.0
# One tick starts no new task step after this long, and then no new delivery after this long again: the
# rest is the next tick's (2 s later). Single steps are bounded by their own timeouts (a CPA call, a send).
TICK_BUDGET_S = 20.0
# Every scheduler job: a suspended host (or a tick longer than the interval) catches up with one run, not a
# burst, and a job never runs twice at once (APScheduler skips a run while the previous one is still going).
JOB_DEFAULTS: dict[str, Any] = {"coalesce": True, "max_instances": 1, "misfire_grace_time": 30}
# How long SIGTERM waits for in-flight steps (a verify request, a delete) before closing anyway.
SHUTDOWN_GRACE_S = 15.0
# How long a reload or SIGTERM waits for cancelled background tasks (detection, the CPA error stream).
BACKGROUND_STOP_S = 5.0
DETECTION_STATE_KEY = "detect.confirmation"
COOKIE_KEY = "web.cookie_key"
#: Per Home (`[[cpa]] kind = "home"`): where its failed-request-event poller stopped, `<prefix><cpa name>`.
HOME_EVENTS_KEY_PREFIX = "detect.home_events."
# Tasks the completion runner continues on every tick.
COMPLETING = frozenset({TaskState.VERIFYING, TaskState.RETIRING})
# After a task is raised, its message is delivered this long after the digest window ends (the window is
# measured from the task's creation; a little slack makes sure the plan sees it due).
ANNOUNCE_SLACK_S = 0.05


def utcnow() -> datetime:
    return datetime.now(UTC)


class MeteredNotifier(Notifier):
    """The Apprise notifier, counting deliveries per route in /metrics (route names, never URLs)."""

    def __init__(self, notify: NotifyConfig, metrics: Metrics) -> None:
        super().__init__(notify)
        self._notify_config = notify
        self._metrics = metrics

    async def send(self, channel: str, message: Message, now: datetime) -> SendOutcome:
        outcome = await super().send(channel, message, now)
        route = route_label(split_channel(channel)[0], self._notify_config)
        if outcome.ok:
            self._metrics.notification_sent(route)
        else:
            self._metrics.notification_failed(route)
        return outcome

    def record_gave_up(self, channel: str, now: datetime) -> None:
        super().record_gave_up(channel, now)
        self._metrics.notification_gave_up(route_label(split_channel(channel)[0], self._notify_config))


@dataclass
class _Graph:
    """Everything built from one configuration; rebuilt as a whole on SIGHUP (the store stays open)."""

    settings: Settings
    clients: dict[str, CPAClient]
    engine: DetectionEngine
    tasks: TaskService
    login: LoginFlow
    completion: CompletionRunner
    web: WebServer
    scheduler: AsyncIOScheduler
    background: list[asyncio.Task[None]] = field(default_factory=list)
    home_pollers: list[HomeEventPoller] = field(default_factory=list)


class Daemon:
    """Owns the lifecycle (startup → main loop → shutdown). Embeddable: `await Daemon(settings).run()`."""

    def __init__(
        self,
        settings: Settings,
        *,
        config_path: str | os.PathLike[str] | None = None,
        clock: Clock = utcnow,
        notifier: Notifier | None = None,
        liveness_timeout_s: float = 120.0,
        step_timeout_s: float = 300.0,
        tick_budget_s: float = TICK_BUDGET_S,
    ) -> None:
        self.settings = settings
        self.config_path = config_path
        self.clock = clock
        self._notifier_override = notifier
        self.sd = SystemdNotifier()
        self.metrics = Metrics(cpas=[c.name for c in settings.cpa], routes=route_names(settings.notify))
        self.health = Health(
            cpas=[c.name for c in settings.cpa],
            liveness_timeout_s=liveness_timeout_s,
            step_timeout_s=step_timeout_s,
        )
        self.tick_budget_s = tick_budget_s
        self.store: Store | None = None
        self._web_key: bytes | None = None
        self.graph: _Graph | None = None
        self.web_url: str | None = None
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self._tick_lock = asyncio.Lock()
        self._last_state_export: dict[str, object] | None = None
        self._last_state_version: tuple[int, int] | None = None
        self._last_adoption_scan: tuple[int, int] | None = None  # (engine, its poll cycles) last searched
        self._last_advanced: str | None = None
        self._cycles_counted: tuple[int, int] = (0, 0)  # (engine, its poll cycles) in the metrics so far
        self._announce: asyncio.TimerHandle | None = None  # the pending early flush after a new task

    # ------------------------------------------------------------------------------------ control

    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload.set()

    # ------------------------------------------------------------------------------------ run

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT (or `request_stop`). Returns the process exit code."""
        path = self.settings.state.path
        try:
            self.store = Store.open(path)
        except StateLocked as exc:
            log.error("daemon.state_locked", detail=str(exc))
            print(f"reauthd: {exc}", file=sys.stderr)
            return EXIT_LOCKED
        except StateUnsafe as exc:
            log.error("daemon.state_unsafe", detail=str(exc))
            print(f"reauthd: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        except (OSError, ValueError) as exc:
            message = f"cannot open the state database {path}: {exc}"
            log.error("daemon.store_failed", detail=message)
            print(f"reauthd: {message}", file=sys.stderr)
            return EXIT_ATTENTION
        store = self.store
        try:
            self._web_key = self._cookie_key(store, path)
        except KeyFileProblem as exc:
            log.error("daemon.cookie_key_failed", detail=str(exc))
            print(f"reauthd: {exc}", file=sys.stderr)
            store.close()
            self.store = None
            return EXIT_CONFIG
        files = raise_open_files_limit()
        log.info("daemon.open_files", soft_before=files.before, soft=files.now, hard=files.hard)
        self.health.set_store_check(lambda: self._store_writable(store))
        loop = asyncio.get_running_loop()
        installed = self._install_signals(loop)
        watchdog = asyncio.create_task(
            feed_watchdog(self.sd, lambda: self.health.live().ok), name="reauthd-watchdog"
        )
        try:
            while True:
                code = await self._run_once()
                if code is not None:
                    return code
                if self._stop.is_set():
                    return EXIT_OK
                # A reload with a new, valid configuration: build the graph again from it.
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
            for sig in installed:
                loop.remove_signal_handler(sig)
            self.sd.stopping("closing the state database")
            store.close()
            self.store = None
            log.info("daemon.stopped")

    def _read_new_settings(self) -> Settings | None:
        """SIGHUP: the configuration file again, or None to keep the running one (broken or unchanged)."""
        if self.config_path is None:
            log.warning("daemon.reload_skipped", detail="no configuration file to read again")
            return None
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            log.error("daemon.reload_failed", detail=f"{exc}; keeping the running configuration")
            return None
        if new == self.settings:
            log.info("daemon.reload_unchanged")
            return None
        if new.state.path != self.settings.state.path:
            log.warning("daemon.reload_state_path", detail="state.path changes take effect after a restart")
        REDACTOR.add_secret_values(secret_values(new))
        for cpa in new.cpa:
            self.health.watch_cpa(cpa.name)
        return new

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> list[signal.Signals]:
        installed = []
        handlers = {
            signal.SIGTERM: self.request_stop,
            signal.SIGINT: self.request_stop,
            signal.SIGHUP: self.request_reload,
        }
        for sig, handler in handlers.items():
            try:
                loop.add_signal_handler(sig, handler)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
                continue
            installed.append(sig)
        return installed

    @staticmethod
    def _store_writable(store: Store) -> bool:
        store.put_kv("ops.writable", utcnow().isoformat(), utcnow())
        return True

    # ------------------------------------------------------------------------------------ one graph

    async def _run_once(self) -> int | None:
        """Build the graph from the current settings and run it until stop or reload."""
        assert self.store is not None
        store = self.store
        settings = self.settings
        self.metrics.watch_routes(route_names(settings.notify))  # routes a reload added start at zero too
        async with AsyncExitStack() as stack:
            # The heartbeat runs from the start, so a slow first look at CPA is a slow start, not a dead loop.
            scheduler = AsyncIOScheduler(timezone=UTC)
            scheduler.add_job(
                self._heartbeat, "interval", seconds=HEARTBEAT_S, id="heartbeat", **JOB_DEFAULTS
            )
            scheduler.start()
            stack.callback(scheduler.shutdown, wait=False)
            self.sd.status("connecting to CPA")
            clients = {}
            for cpa in settings.cpa:
                client = client_from_config(cpa, gate_snapshot=load_gate(store, cpa.name), clock=self.clock)
                client.on_error = self._count_management_error(cpa.name)
                stack.push_async_callback(client.aclose)
                clients[cpa.name] = client

            notifier = self._notifier_override or MeteredNotifier(settings.notify, self.metrics)
            tasks = TaskService(store, settings, notifier, self.clock)
            completion = CompletionRunner.from_settings(settings, store, clients)
            completion.probes.observer = self._count_probe
            stack.push_async_callback(completion.aclose)
            login = LoginFlow(
                store,
                clients,
                clock=self.clock,
                completion=completion,
                webui_cpas=frozenset(c.name for c in settings.cpa if c.is_webui),
            )
            stack.push_async_callback(login.aclose)
            cpamp = [CPAMPSource(c) for c in settings.cpamp]
            for source in cpamp:
                stack.push_async_callback(source.aclose)
            self.health.set_cpamp({s.name: (s.state, s.problem) for s in cpamp})
            engine = DetectionEngine(
                clients,
                settings.detect,
                cpamp=cpamp,
                clock=self.clock,
                on_confirmed=self._raise_and_announce(tasks),
            )
            engine.table.observer = self._count_probe
            stack.push_async_callback(engine.aclose)
            saved = store.get_kv(DETECTION_STATE_KEY)
            if isinstance(saved, dict):
                engine.restore_state(saved)

            app = create_app(
                store=store,
                login=login,
                public_url=settings.web.public_url,
                operator_token=settings.web.operator_token,
                extra_routes=health_routes(self.health, self.metrics),
                clock=self.clock,
                cookie_key=self._web_key,
                trusted_proxies=settings.web.trusted_proxies,
                operator_name=settings.web.operator_name,
                operator_contact=settings.web.operator_contact,
                actions=OperatorActions(tasks, clients),
            )
            web = WebServer(
                app,
                settings.web.host,
                settings.web.port,
                max_connections=settings.web.max_connections,
                header_timeout_s=settings.web.header_timeout_s,
            )
            try:
                await web.start()
            except (OSError, SystemExit) as exc:
                message = f"cannot listen on {settings.web.listen} for the login page ({exc})"
                log.error("daemon.web_failed", detail=message)
                print(f"reauthd: {message}", file=sys.stderr)
                return EXIT_ATTENTION
            stack.push_async_callback(web.stop)
            self.web_url = web.url
            graph = _Graph(settings, clients, engine, tasks, login, completion, web, scheduler)
            # A Home has no `errors` channel: its failed request events are polled instead (detect/home.py).
            for name, client in clients.items():
                if isinstance(client, HomeClient):
                    poller = HomeEventPoller(name, client, engine, clock=self.clock)
                    poller.restore_position(store.get_kv(HOME_EVENTS_KEY_PREFIX + name))
                    graph.home_pollers.append(poller)
            self.graph = graph
            tasks.outbox.on_progress = self.health.progress

            # First look at every CPA before declaring readiness (systemd READY=1, /readyz).
            self.sd.status("reading every CPA's auth files")
            with self.health.working():
                # CPAMP's unauthenticated /health first: a base_url that is not CPAMP (CPA's own :8317)
                # is named at once, and its Admin Key is never sent there.
                await asyncio.gather(*(source.check() for source in cpamp))
                await engine.cycle(self.clock())
                self.health.progress()
                self._observe_clients(graph)
                resumed = await login.resume()
                self.health.progress()
                await self._tick(graph)

            work = [
                scheduler.add_job(
                    self._tick, "interval", args=[graph], seconds=TICK_S, id="tick", **JOB_DEFAULTS
                ),
                scheduler.add_job(
                    self._reconcile,
                    "interval",
                    args=[graph],
                    seconds=max(5.0, settings.detect.poll_interval_s / 2),
                    id="reconcile",
                    **JOB_DEFAULTS,
                ),
            ]
            graph.background.append(
                asyncio.create_task(engine.run(skip_first_cycle=True), name="reauthd-detect")
            )
            for poller in graph.home_pollers:
                graph.background.append(
                    asyncio.create_task(
                        poller.run(settings.detect.poll_interval_s), name=f"reauthd-home-events-{poller.cpa}"
                    )
                )

            self.sd.ready(f"watching {len(clients)} CPA(s); login page at {settings.web.public_url}")
            self.metrics.set_ready(True)
            log.info(
                "daemon.started",
                cpas=list(clients),
                web=self.web_url,
                public_url=settings.web.public_url,
                resumed_logins=resumed,
            )

            await self._wait_for_stop_or_new_settings()

            # Stop taking new work, let in-flight steps finish (bounded), then close everything.
            if self._stop.is_set():
                self.health.begin_shutdown()
                self.sd.stopping("finishing in-flight steps")
            else:
                self.sd.reloading("applying the new configuration")
            self.metrics.set_ready(False)
            for job in work:  # the heartbeat goes on while in-flight steps finish
                job.remove()
            if self._announce is not None:
                self._announce.cancel()
                self._announce = None
            await self._stop_background(graph.background)
            try:
                async with asyncio.timeout(SHUTDOWN_GRACE_S):
                    async with self._tick_lock:
                        self._persist(graph)
            except TimeoutError:
                log.warning("daemon.shutdown_timeout", detail="in-flight steps did not finish in time")
            self.graph = None
            return None

    @staticmethod
    async def _stop_background(jobs: list[asyncio.Task[None]]) -> None:
        """Cancel the graph's background tasks and wait for them, bounded. On Python 3.11 a cancellation that
        arrives just as an `asyncio.wait_for` inside the task completes is swallowed (CPython gh-86296; our
        own code uses asyncio.timeout instead, libraries may not), and a reload or SIGTERM must not wait
        forever for such a task: it is left behind (asyncio.run cancels it again at exit) and the daemon
        carries on."""
        if not jobs:
            return
        for job in jobs:
            job.cancel()
        done, pending = await asyncio.wait(jobs, timeout=BACKGROUND_STOP_S)
        for job in done:  # their outcome does not matter any more; fetch it so asyncio does not complain
            if not job.cancelled():
                job.exception()
        if pending:
            log.warning(
                "daemon.background_not_stopped",
                tasks=sorted(job.get_name() for job in pending),
                detail=f"still running {BACKGROUND_STOP_S:g} s after being cancelled; left behind",
            )
            for job in pending:
                job.cancel()

    async def _wait_for_stop_or_new_settings(self) -> None:
        """Return on SIGTERM, or on SIGHUP with a new valid configuration (then in `self.settings`).
        A broken or unchanged file is reported and changes nothing: the running graph keeps serving."""
        while True:
            stop = asyncio.create_task(self._stop.wait())
            reload = asyncio.create_task(self._reload.wait())
            await asyncio.wait({stop, reload}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            reload.cancel()
            if self._stop.is_set():
                return
            self._reload.clear()
            new = self._read_new_settings()
            if new is not None:
                self.settings = new
                log.info("daemon.reloaded", cpas=[c.name for c in new.cpa])
                return

    # ------------------------------------------------------------------------------------ metrics hooks

    def _count_management_error(self, cpa: str) -> Callable[[CPAError], None]:
        return lambda exc: self.metrics.management_error(cpa, exc)

    def _count_probe(self, cpa: str, credential: Credential, evidence: Evidence, seconds: float) -> None:
        unsent = evidence.code in (PROBE_TRANSPORT, PROBE_UNAVAILABLE)
        outcome = "error" if unsent else classify(credential, [evidence], evidence.observed_at).kind
        self.metrics.probe_observed(cpa, credential.provider, outcome, None if unsent else seconds)

    @staticmethod
    def _cookie_key(store: Store, state_path: Path) -> bytes:
        # Persisted so a restart does not log everyone out of a login in progress, in a 0600 file beside the
        # database rather than in it (issue 11): reading the database must not be enough to forge sessions.
        # A key an older reauthd kept in the database is dropped, not moved: whoever read it could sign.
        if store.get_kv(COOKIE_KEY) is not None:
            store.delete_kv(COOKIE_KEY)
            log.info("daemon.cookie_key_moved_out_of_the_database")
        return load_or_create_key(key_path_for(state_path))

    # ------------------------------------------------------------------------------------ ticks

    async def _heartbeat(self) -> None:
        """A scheduler job on the event loop: it runs only while both turn (/livez, the systemd watchdog)."""
        self.health.beat()

    async def _tick(self, graph: _Graph) -> None:
        """Wake-up: continue verifications and retirements, deliver due messages, refresh health.

        Each task step and each delivery counts as progress for /livez, and each phase stops starting new
        work after `tick_budget_s`: a slow CPA or a blackholed webhook makes ticks long, never the daemon
        "dead" (the heartbeat job keeps beating meanwhile)."""
        async with self._tick_lock:
            with self.health.working():
                try:
                    await self._advance_completing(graph)
                    await graph.tasks.outbox.flush(self.clock(), budget_s=self.tick_budget_s)
                    self._observe_notifications(graph)
                except Exception as exc:  # one bad tick must not stop the loop; the store keeps the state
                    log.error(
                        "daemon.tick_failed", error=type(exc).__name__, detail=REDACTOR.scrub_text(str(exc))
                    )
                self._observe_clients(graph)
                self._persist(graph)

    def _raise_and_announce(self, tasks: TaskService) -> Callable[[Any], Awaitable[None]]:
        """Detection's `on_confirmed`: raise the task, then deliver its message as soon as its digest
        window allows, not at the next tick (issue 12: a live revocation reaches a person in seconds)."""

        async def on_confirmed(event: Any) -> None:
            await tasks.on_confirmed(event)
            if self._announce is None and self.graph is not None and not self._stop.is_set():
                loop = asyncio.get_running_loop()
                delay = self.graph.settings.notify.group_window_s + ANNOUNCE_SLACK_S
                self._announce = loop.call_later(delay, self._announce_now, self.graph)

        return on_confirmed

    def _announce_now(self, graph: _Graph) -> None:
        self._announce = None
        if graph is not self.graph or self._stop.is_set():
            return  # a reload or SIGTERM came first; the next graph's tick delivers it
        job = asyncio.create_task(self._flush_outbox(graph), name="reauthd-announce")
        graph.background.append(job)
        job.add_done_callback(
            lambda done: graph.background.remove(done) if done in graph.background else None
        )

    async def _flush_outbox(self, graph: _Graph) -> None:
        """Deliver what is due now, beside the tick (the outbox serialises its own flushes)."""
        with self.health.working():
            try:
                await graph.tasks.outbox.flush(self.clock(), budget_s=self.tick_budget_s)
                self._observe_notifications(graph)
            except Exception as exc:  # the tick retries whatever this did not deliver
                log.error(
                    "daemon.announce_failed", error=type(exc).__name__, detail=REDACTOR.scrub_text(str(exc))
                )

    async def _advance_completing(self, graph: _Graph) -> None:
        """One step for each task being verified or retired, round-robin from where the last tick stopped,
        until the tick's budget is spent."""
        assert self.store is not None
        ids = [task.id for task in self.store.list_tasks(COMPLETING)]
        if self._last_advanced in ids:
            start = ids.index(self._last_advanced) + 1
            ids = ids[start:] + ids[:start]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.tick_budget_s
        for done, task_id in enumerate(ids):
            if loop.time() >= deadline:
                log.info("daemon.tick_budget_spent", steps_done=done, steps_left=len(ids) - done)
                return
            await graph.completion.advance(task_id, self.clock())
            self._last_advanced = task_id
            self.health.progress()

    async def _reconcile(self, graph: _Graph) -> None:
        """Level-triggered: raise, close and expire tasks from the latest verdicts."""
        async with self._tick_lock:
            now = self.clock()
            try:
                # Only failing credentials and those with tasks: not a view of every healthy one (50k).
                result = graph.tasks.reconcile_from(
                    lambda watched: graph.engine.latest_unhealthy_and(
                        watched.auth_indexes, watched.unindexed_names
                    ),
                    now,
                )
                if result.changed:
                    log.info(
                        "daemon.reconciled",
                        raised=len(result.raised),
                        closed=len(result.closed),
                        rearmed=len(result.rearmed),
                    )
                # A login made through another tool under a new file name: once per new listing (it reads
                # every listed credential), handed to verification like a login through our page.
                listing_seen = (id(graph.engine), graph.engine.cycles)
                if listing_seen != self._last_adoption_scan:
                    self._last_adoption_scan = listing_seen
                    graph.tasks.adopt_panel_logins(graph.engine.listed_credentials(), now)
                    self._review_accounts(graph, now)
            except Exception as exc:
                log.error("daemon.reconcile_failed", error=type(exc).__name__)
            self._observe_metrics(graph)

    def _review_accounts(self, graph: _Graph, now: datetime) -> None:
        """Once per new listing: accounts held twice, Codex plans, failures a re-login will not fix; each
        told to the operator once (reauthd.notify.notices), and the other holders named on tasks whose
        refresh token was reused (issue 14)."""
        assert self.store is not None
        open_tasks = self.store.list_tasks([s for s in TaskState if not s.terminal], with_history=False)
        finishing = {
            pair
            for t in open_tasks
            if t.new_auth_name
            for pair in ((t.cpa, t.auth_name), (t.cpa, t.new_auth_name))
        }
        known = self.store.get_kv(PLANS_KEY, {})
        result = review(
            graph.engine.listed_credentials(),
            graph.engine.latest_unhealthy_and(),
            now,
            warning_days=self.settings.detect.subscription_warning_days,
            known_plans=known if isinstance(known, dict) else {},
            exclude=finishing,
        )
        with self.store.transaction():
            if result.plans != known:
                self.store.put_kv(PLANS_KEY, result.plans, now)
            notices.post(self.store, self.settings.notify, result.notices, now)
            for task_id, others in other_holders_for(open_tasks, result).items():
                task = next(t for t in open_tasks if t.id == task_id)
                self.store.update_task_fields(task_id, now, details={**task.details, "other_holders": others})
        self.metrics.set_accounts_held_twice(len(result.duplicates))

    def _persist(self, graph: _Graph) -> None:
        assert self.store is not None
        now = self.clock()
        # Exporting walks every credential: only when a confirmation changed since the last export.
        version = (id(graph.engine), graph.engine.state_version)
        if version != self._last_state_version:
            state = graph.engine.export_state()
            if state != self._last_state_export:
                self.store.put_kv(DETECTION_STATE_KEY, state, now)
                self._last_state_export = state
            self._last_state_version = version
        for client in graph.clients.values():
            save_gate(self.store, client, now)
        for poller in graph.home_pollers:
            position = poller.export_position()
            key = HOME_EVENTS_KEY_PREFIX + poller.cpa
            if self.store.get_kv(key) != position:
                self.store.put_kv(key, position, now)

    def _observe_clients(self, graph: _Graph) -> None:
        self.health.set_cpamp({s.name: (s.state, s.problem) for s in graph.engine.cpamp_sources})
        for name, client in graph.clients.items():
            health = client.health
            self.health.cpa_snapshot(health)
            problem = graph.engine.cpa_problems.get(name)
            if problem is not None and health.state.value == "ok":
                self.health.cpa_unreachable(name, problem)
            self.metrics.set_cpa_reachable(name, problem is None and health.state.value == "ok")
            polled = graph.engine.last_poll_ok.get(name)
            if polled is not None:  # the time of the last answered poll, not of this tick
                self.metrics.poll_succeeded(name, polled)
        engine = graph.engine
        counted_engine, counted = self._cycles_counted
        self.metrics.poll_cycles_done(engine.cycles - (counted if counted_engine == id(engine) else 0))
        self._cycles_counted = (id(engine), engine.cycles)
        self.metrics.set_sweep_period(engine.sweep_period_s)
        self.health.set_note("sweep", engine.sweep_note)

    def _observe_notifications(self, graph: _Graph) -> None:
        notify = graph.tasks.notify_health
        if notify.ok:
            self.health.notifier_ok()
        else:
            self.health.notifier_failing(notify.detail)
        self.health.notifier_gave_up(notify.gave_up)

    def _observe_metrics(self, graph: _Graph) -> None:
        assert self.store is not None
        by_cpa: dict[str, Counter[tuple[VerdictKind, Cause]]] = {name: Counter() for name in graph.clients}
        by_cpa.update(graph.engine.verdict_cause_counts())
        for cpa, counts in by_cpa.items():
            self.metrics.set_credentials(cpa, counts)
        self.metrics.set_tasks(self.store.list_tasks(with_history=False))


def run_daemon(settings: Settings, *, config_path: str | os.PathLike[str] | None = None) -> int:
    """Entry point of `reauthd run`."""
    Path(settings.state.path).parent.mkdir(parents=True, exist_ok=True)
    daemon = Daemon(settings, config_path=config_path)
    try:
        return asyncio.run(daemon.run())
    except KeyboardInterrupt:
        return EXIT_OK
