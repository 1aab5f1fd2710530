"""The simulator's in-memory world: disk, runtime auths, watcher, bans, sessions, timers, faults, log.

HTTP handlers (management.py, control.py) and the RESP handler only translate to and from this.
"""

from __future__ import annotations

import heapq
import itertools
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from reauthd.sim.auths import AUTH_DIR, SimAuth, content_hash
from reauthd.sim.bans import BanTable
from reauthd.sim.clock import SimClock, go_time
from reauthd.sim.credentials import Identity
from reauthd.sim.oauth import OAuthSessions
from reauthd.sim.upstream import Upstream, dumps

SECRET_KEYS = frozenset(
    {
        "access_token",
        "refresh_token",
        "id_token",
        "token",
        "code",
        "state",
        "redirect_url",
        "key",
        "private_key",
        "private_key_id",
        "password",
        "secret",
        "cookie",
        "user_code",
        "authorization",
        "device_code",
        "service_account",
        "data",
        "header",
        "headers",
    }
)


@dataclass(slots=True)
class DiskFile:
    content: dict[str, Any]
    raw: bytes
    mtime: datetime


@dataclass(slots=True)
class Fault:
    """A misbehaviour of the management API for the next `remaining` matching requests (None: until cleared)."""

    # status, slow, drop, drop_after, outage, malformed_json, missing_fields, unknown_status, huge_body,
    # disk_fallback (the listing of a CPA without an auth manager)
    kind: str
    path: str = ""  # path prefix under /v0/management; "" = every management route
    method: str = ""
    remaining: int | None = 1
    status: int = 500
    body: str = ""
    delay: float = 0.0


@dataclass(slots=True)
class LoginPlan:
    identity: Identity | None
    exchange_fails: bool = False


@dataclass
class Settings:
    management_key: str | None = "sim-key"
    allow_remote: bool = False
    management_enabled: bool = True
    version: str = "v7.2.140-sim"
    proxy_api_keys: tuple[str, ...] = ("sim-proxy-key",)
    usage_statistics: bool = False
    watcher_delay: float = 1.0
    exchange_delay: float = 0.5
    device_poll_interval: float = 1.0
    auto_refresh: bool = False  # CPA's background refresh loop; off so staged tokens stay as staged
    plugin_providers: tuple[str, ...] = ()
    base_url: str = ""


@dataclass
class Counters:
    failed_key_attempts: dict[str, int] = field(default_factory=dict)
    list_requests: int = 0
    api_calls: int = 0
    management_requests: int = 0


class SimState:
    """Everything the simulated CPA knows. Use from the server's event loop only."""

    def __init__(self, settings: Settings | None = None, clock: SimClock | None = None) -> None:
        self.settings = settings or Settings()
        self.clock = clock or SimClock()
        self._seq = itertools.count()
        self.reset()

    def reset(self) -> None:
        """Forget every credential, session, ban, fault, log line and counter (settings stay)."""
        if hasattr(self, "resp_closers"):
            self.disconnect_resp()  # like a CPA restart: streams end, clients reconnect
        self.upstream = Upstream()
        self.disk: dict[str, DiskFile] = {}
        self.auths: dict[str, SimAuth] = {}
        self.by_index: dict[str, SimAuth] = {}
        self._sorted: list[SimAuth] | None = None
        self.bans = BanTable()
        self.sessions = OAuthSessions()
        self.codes: dict[str, tuple[str, Identity, bool]] = {}  # code → (state, identity, exchange fails)
        self.timers: list[tuple[datetime, int, Callable[[], None]]] = []
        self.pending_reloads: dict[str, datetime] = {}
        self.oplog: list[dict[str, Any]] = []
        self.counters = Counters()
        self.faults: list[Fault] = []
        self.subscribers: dict[str, set[Callable[[bytes], None]]] = {"errors": set(), "usage": set()}
        self.usage_queue: deque[bytes] = deque(maxlen=100_000)
        self.resp_closers: dict[int, Callable[[], None]] = {}  # open RESP connections, by id
        self.next_login: dict[str, LoginPlan] = {}
        self._refresh_loop_generation = getattr(self, "_refresh_loop_generation", 0) + 1
        if self.settings.auto_refresh:
            self.enable_auto_refresh(True)

    def now(self) -> datetime:
        return self.clock.now()

    # -- timers on the simulated clock -----------------------------------------------------------

    def schedule(self, delay_s: float, action: Callable[[], None]) -> None:
        heapq.heappush(self.timers, (self.now() + timedelta(seconds=delay_s), next(self._seq), action))

    def run_due(self) -> None:
        """Fire every timer whose time has come; called by the ticker, every request and clock moves."""
        while self.timers and self.timers[0][0] <= self.now():
            _, _, action = heapq.heappop(self.timers)
            action()

    def advance(self, seconds: float) -> datetime:
        """Move the clock forward, firing timers in order as their moments pass."""
        if seconds < 0:
            raise ValueError("the simulated clock only moves forward")
        start_now, start_offset = self.now(), self.clock.offset
        target = start_now + timedelta(seconds=seconds)
        while self.timers and self.timers[0][0] <= target:
            self.clock.advance_offset_to(start_offset + (self.timers[0][0] - start_now))
            self.run_due()
        self.clock.advance_offset_to(start_offset + timedelta(seconds=seconds))
        self.run_due()
        return self.now()

    # -- management key and bans (handler.go AuthenticateManagementKey, contract §1) ---------------

    def authenticate(self, ip: str, local: bool, provided: str) -> tuple[bool, int, str]:
        """Check a management key for a client IP, counting failures toward the ban (§1)."""
        result = self.bans.check(
            ip,
            local,
            provided,
            secret=self.settings.management_key,
            allow_remote=self.settings.allow_remote,
            now=self.now(),
        )
        if result.status == 401:
            self.counters.failed_key_attempts[ip] = self.counters.failed_key_attempts.get(ip, 0) + 1
        return result.allowed, result.status, result.error

    # -- disk and the watcher --------------------------------------------------------------------

    def write_file(self, name: str, content: dict[str, Any], *, reload: bool = True) -> None:
        """Write an auth file (mode 0600 in CPA); the watcher picks it up `watcher_delay` later."""
        raw = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
        self.disk[name] = DiskFile(dict(content), raw, self.now())
        auth = self.auths.get(name)
        if auth is not None:
            auth.touch()
        if reload:
            self.schedule_reload(name)

    def schedule_reload(self, name: str) -> None:
        """Debounced like CPA's watcher: the last write wins and loads after the delay."""
        due = self.now() + timedelta(seconds=self.settings.watcher_delay)
        self.pending_reloads[name] = due

        def fire() -> None:
            if self.pending_reloads.get(name) == due:
                del self.pending_reloads[name]
                self.watcher_reload(name)

        self.schedule(self.settings.watcher_delay, fire)

    def watcher_reload(self, name: str) -> None:
        """Register a new file or reload a changed one (skipped when the content hash is unchanged)."""
        disk = self.disk.get(name)
        auth = self.auths.get(name)
        if disk is None:
            if auth is not None and not auth.runtime_only:
                self.remove_auth(name)
            return
        if auth is None:
            self.register(name, disk.content)
        elif auth.loaded_hash != content_hash(disk.content):
            self.reload_existing(auth, disk.content)

    def reload_existing(self, auth: SimAuth, content: dict[str, Any]) -> None:
        """A changed file for an auth CPA already holds. The runtime auth is rebuilt from the file
        (status active, empty message, failures gone) but, when neither the old nor the new auth is
        disabled, `LastRefreshedAt` is copied from the old one (sdk/cliproxy/service_auth.go
        prepareCoreAuthForModelRegistration): an in-place re-login does not move `last_refresh`."""
        was_disabled = auth.disabled or auth.status == "disabled"
        kept = auth.last_refreshed_at
        auth.load(content, self.now())
        now_disabled = auth.disabled or auth.status == "disabled"
        auth.last_refreshed_at = None if was_disabled or now_disabled else kept
        auth.touch()

    def register_raw_login(self, name: str, content: dict[str, Any]) -> None:
        """saveTokenRecord → postAuthPersistHook → runtimeAuthSyncHook (sdk/cliproxy/builder.go): the raw
        OAuth record is registered at once, before the watcher reloads the file. The record carries no
        status (the listing shows `status: ""`, empty message); an existing auth keeps its
        LastRefreshedAt (prepareCoreAuthForModelRegistration). The watcher's reload replaces it later;
        its hash bookkeeping is the watcher's own, so that reload still happens."""
        auth = self.auths.get(name)
        if auth is None:
            auth = self.register(name, content)
            auth.loaded_hash = ""
        else:
            kept, loaded = auth.last_refreshed_at, auth.loaded_hash
            disabled = auth.disabled or auth.status == "disabled"
            auth.load(content, self.now())
            auth.loaded_hash = loaded
            auth.last_refreshed_at = None if disabled else kept
        auth.status = ""
        auth.status_message = ""
        auth.touch()

    def register(self, name: str, content: dict[str, Any], *, runtime_only: bool = False) -> SimAuth:
        now = self.now()
        provider = str(content.get("type", "")).lower()
        auth = SimAuth(
            name=name,
            provider=provider,
            metadata={},
            loaded_hash="",
            created_at=now,
            runtime_only=runtime_only,
            path="" if runtime_only else f"{AUTH_DIR}/{name}",
        )
        auth.load(content, now)  # LastRefreshedAt stays zero: a loaded file has none (filestore.go)
        self.auths[name] = auth
        self.by_index[auth.auth_index] = auth
        self._sorted = None
        return auth

    def remove_auth(self, name: str) -> None:
        auth = self.auths.pop(name, None)
        if auth is not None:
            self.by_index.pop(auth.auth_index, None)
            self._sorted = None

    def persist_runtime(self, auth: SimAuth) -> None:
        """authManager.Update → FileTokenStore.Save: the in-memory record overwrites the file (§12)."""
        content = dict(auth.metadata)
        content["disabled"] = auth.disabled
        auth.metadata = content
        auth.loaded_hash = content_hash(content)
        if not auth.runtime_only:
            self.write_file(auth.name, content, reload=True)

    def sorted_auths(self) -> list[SimAuth]:
        if self._sorted is None:
            self._sorted = sorted(self.auths.values(), key=lambda a: a.name.lower())
        return self._sorted

    def listing(self, name: str = "", auth_index: str = "") -> bytes:
        """GET /auth-files body, assembled from cached per-entry JSON."""
        now = self.now()
        parts: list[bytes] = []
        pool = self.sorted_auths()
        if name or auth_index:  # exact matches only: look them up instead of scanning 50k entries
            by_name = self.auths.get(name) if name else None
            by_index = self.by_index.get(auth_index) if auth_index else None
            pool = [a for a in (by_name, by_index) if a is not None][:1]
        for auth in pool:
            if name and name != auth.name:
                continue
            if auth_index and auth.auth_index != auth_index:
                continue
            disk = self.disk.get(auth.name) if not auth.runtime_only else None
            if (
                disk is None
                and not auth.runtime_only
                and (auth.disabled or auth.status_message == "removed via management api")
            ):
                continue
            if auth.runtime_only and auth.disabled:
                continue
            parts.append(auth.entry_json(now, len(disk.raw) if disk else None, disk.mtime if disk else None))
        return b'{"files":[' + b",".join(parts) + b"]}"

    def auth_by_name(self, name: str) -> SimAuth | None:
        """Resolve an auth by ID/file name, then by the basename of its path."""
        name = name.strip()
        found = self.auths.get(name)
        if found is not None:
            return found
        for auth in self.auths.values():
            if auth.path.rsplit("/", 1)[-1] == name:
                return auth
        return None

    # -- pub/sub ---------------------------------------------------------------------------------

    def publish(self, channel: str, payload: dict[str, Any]) -> None:
        data = dumps(payload).encode()
        subs = self.subscribers[channel]
        if channel == "usage" and not subs:
            self.usage_queue.append(data)
            return
        for deliver in list(subs):
            deliver(data)

    # -- faults and the operation log -------------------------------------------------------------

    def take_fault(self, method: str, path: str, *, outage: bool = False) -> Fault | None:
        """Consume the first matching fault; `outage` faults are taken by the connection layer."""
        for fault in self.faults:
            if (fault.kind == "outage") != outage:
                continue
            sub = path.removeprefix("/v0/management")
            if fault.path and not sub.startswith(fault.path.removeprefix("/v0/management")):
                continue
            if fault.method and fault.method.upper() != method.upper():
                continue
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self.faults.remove(fault)
            return fault
        return None

    def log_operation(
        self,
        method: str,
        path: str,
        query: list[str],
        body: Any,
        status: int,
        client_ip: str,
        *,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Append one management request (status 0: the connection was dropped by a fault)."""
        now = self.now()
        self.oplog.append(
            (extra or {})
            | {
                "seq": len(self.oplog) + 1,
                "time": go_time(now),
                "ts": now.timestamp(),
                "method": method,
                "path": path,
                "query": sorted(set(query)),
                "body": redact(body),
                "status": status,
                "client_ip": client_ip,
            }
        )

    # -- in-process control API (same operations as the HTTP routes under /_sim/) ----------------

    def add_credential(self, provider: str, **kwargs: Any) -> SimAuth:
        """A pre-existing credential; see scenarios.add_credential for the keyword arguments."""
        from reauthd.sim import scenarios

        return scenarios.add_credential(self, provider, **kwargs)

    def bulk_generate(self, count: int, **kwargs: Any) -> list[str]:
        from reauthd.sim import scenarios

        return scenarios.bulk_generate(self, count, **kwargs)

    def revoke(self, name: str, kind: str | None = None, *, live: bool = False) -> SimAuth:
        from reauthd.sim import scenarios

        return scenarios.revoke(self, name, kind, live=live)

    def exhaust_quota(self, name: str, *, live: bool = False, resets_in: float = 5 * 3600) -> SimAuth:
        from reauthd.sim import scenarios

        return scenarios.set_condition(self, name, "quota", live=live, resets_in=resets_in)

    def deactivate_workspace(self, name: str, *, live: bool = False) -> SimAuth:
        from reauthd.sim import scenarios

        return scenarios.set_condition(self, name, "deactivated", live=live)

    def set_condition(self, name: str, condition: str, *, live: bool = False) -> SimAuth:
        """Account trouble: quota, deactivated, cloudflare, transient, ok."""
        from reauthd.sim import scenarios

        return scenarios.set_condition(self, name, condition, live=live)

    def simulate_request(self, name: str, model: str | None = None, *, no_model: bool = False) -> Any:
        from reauthd.sim import scenarios

        return scenarios.simulate_request(self, name, model, no_model=no_model)

    def neutral_failure(self, name: str, **kwargs: Any) -> dict[str, Any]:
        from reauthd.sim import scenarios

        return scenarios.neutral_failure(self, name, **kwargs)

    def auto_refresh(self, name: str) -> Any:
        from reauthd.sim import scenarios

        return scenarios.auto_refresh(self, scenarios.find(self, name))

    def set_probe(self, name: str, status: int | None, body: str = "") -> None:
        from reauthd.sim import scenarios

        scenarios.set_probe(self, name, status, body)

    def inject_fault(self, kind: str, **kwargs: Any) -> None:
        from reauthd.sim import scenarios

        scenarios.inject_fault(self, kind, **kwargs)

    def enable_auto_refresh(self, on: bool = True) -> None:
        """Run (or stop) CPA's background refresh loop every 5 simulated seconds (§2.3 B)."""
        from reauthd.sim import scenarios

        self.settings.auto_refresh = on
        self._refresh_loop_generation += 1
        generation = self._refresh_loop_generation
        if not on:
            return

        def tick() -> None:
            if generation != self._refresh_loop_generation:
                return
            scenarios.auto_refresh_tick(self)
            self.schedule(scenarios.AUTO_REFRESH_EVERY, tick)

        self.schedule(scenarios.AUTO_REFRESH_EVERY, tick)

    def relogin_as(self, name: str, *, plan: str | None = None, exchange_fails: bool = False) -> None:
        """The next login at the fake provider signs into the same account as credential `name`."""
        from reauthd.sim import scenarios

        scenarios.relogin_as(self, name, plan=plan, exchange_fails=exchange_fails)

    def restart(self) -> None:
        """A CPA restart: runtime state (status, cooldowns, counters, bans, OAuth sessions, queue)
        is lost; every file auth is loaded again from disk, `active` or `disabled` (§2.2)."""
        self.disconnect_resp()
        self.auths.clear()
        self.by_index.clear()
        self._sorted = None
        self.bans.clear()
        self.sessions = OAuthSessions()
        self.codes.clear()
        self.timers.clear()
        self.pending_reloads.clear()
        self.usage_queue.clear()
        for name, disk in sorted(self.disk.items()):
            if str(disk.content.get("type", "")).lower() not in ("", "gemini", "gemini-cli"):
                self.register(name, disk.content)
        if self.settings.auto_refresh:
            self.enable_auto_refresh(True)

    def disconnect_resp(self) -> int:
        """Close every open RESP connection (an error-stream outage); returns how many were open."""
        closers = list(self.resp_closers.values())
        for close in closers:
            close()
        return len(closers)

    def clear_faults(self) -> None:
        self.faults.clear()

    def set_next_login(self, provider: str = "*", **kwargs: Any) -> None:
        from reauthd.sim import scenarios

        scenarios.set_next_login(self, provider, **kwargs)

    def set_timing(
        self,
        *,
        watcher_delay: float | None = None,
        exchange_delay: float | None = None,
        device_poll_interval: float | None = None,
    ) -> None:
        if watcher_delay is not None:
            self.settings.watcher_delay = watcher_delay
        if exchange_delay is not None:
            self.settings.exchange_delay = exchange_delay
        if device_poll_interval is not None:
            self.settings.device_poll_interval = device_poll_interval

    def counter_snapshot(self) -> dict[str, Any]:
        from reauthd.sim import scenarios

        return scenarios.counters(self)

    def provider_login(
        self,
        oauth_state: str,
        *,
        email: str | None = None,
        plan: str = "",
        account_id: str = "",
        deny: bool = False,
    ) -> str:
        """A person signing in at the fake provider page, without a browser: returns the localhost
        callback URL the provider would redirect to (with code and state)."""
        from urllib.parse import urlencode, urlsplit

        from reauthd.sim import flows
        from reauthd.sim.oauth import CALLBACK_PROVIDERS

        session = self.sessions.get(oauth_state, self.now())
        provider = session.provider if session is not None else "codex"
        if provider in CALLBACK_PROVIDERS:
            redirect = CALLBACK_PROVIDERS[provider][1]
        else:  # a plugin redirects to CPA's own callback route (flows.start_plugin_flow)
            port = urlsplit(self.settings.base_url).port
            redirect = f"http://127.0.0.1:{port}/v0/management/oauth-callback"
        if deny:
            return f"{redirect}?{urlencode({'error': 'access_denied', 'state': oauth_state})}"
        file_type = CALLBACK_PROVIDERS.get(provider, (provider, "", ""))[0]
        ident = Identity(file_type, email, account_id, plan) if email else None
        code = flows.issue_code(self, provider, oauth_state, ident)
        return f"{redirect}?{urlencode({'code': code, 'state': oauth_state})}"

    def approve_device(self, oauth_state: str, *, email: str | None = None) -> bool:
        """A person approving a device-flow code; the session completes at the next poll."""
        from reauthd.sim import flows

        session = self.sessions.get(oauth_state, self.now())
        if session is None or session.flow != "device" or not session.pending:
            return False
        ident, fails = flows.device_identity(
            self, session.provider, Identity(session.provider, email) if email else None
        )
        if fails:
            session.denied = True
        else:
            session.approved = ident
        return True

    def ban_remaining(self, ip: str) -> float:
        return self.bans.remaining(ip, self.now())


def redact(body: Any) -> Any:
    """Remove secrets (tokens, OAuth code/state, callback URLs, keys) from a logged JSON body."""
    if isinstance(body, dict):
        return {k: ("<redacted>" if k.lower() in SECRET_KEYS else redact(v)) for k, v in body.items()}
    if isinstance(body, list):
        return [redact(v) for v in body]
    return body
