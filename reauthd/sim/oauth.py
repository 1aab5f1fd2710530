"""CPA's OAuth session store with its lifetimes (oauth_sessions.go, contract §4.2).

Lifetimes: pending 30 min from creation, completed 60 s, errored 30 min from the error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from reauthd.sim.credentials import Identity

PENDING_TTL = timedelta(minutes=30)
COMPLETED_TTL = timedelta(minutes=1)
CALLBACK_WAIT = timedelta(minutes=5)

CALLBACK_PROVIDERS = {
    # session provider: (saved file type, redirect_uri, callback path on CPA's main port)
    "anthropic": ("claude", "http://localhost:54545/callback", "/anthropic/callback"),
    "codex": ("codex", "http://localhost:1455/auth/callback", "/codex/callback"),
    "antigravity": ("antigravity", "http://localhost:51121/oauth-callback", "/antigravity/callback"),
}
# With `is_webui`, CPA forwards the provider's fixed localhost port to its own callback route
# (auth_files_oauth_callback.go startCallbackForwarder, listening on 0.0.0.0:<port>).
FORWARDER_PORTS = {"anthropic": 54545, "codex": 1455, "antigravity": 51121}
# session provider: (state prefix, how long CPA polls at most). Kimi polls min(expires_in, 15 min)
# (internal/auth/kimi/kimi.go maxPollDuration), xAI min(expires_in, 30 min) (xai.go MaxPollDuration).
DEVICE_PROVIDERS = {"kimi": ("kmi-", 900), "xai": ("xai-", 1800)}

_STATE_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def valid_state(state: str) -> bool:
    """ValidateOAuthState: 1-128 chars of [A-Za-z0-9._-], no "..", no slashes."""
    return bool(_STATE_RE.match(state)) and ".." not in state


def normalize_provider(provider: str) -> str | None:
    """NormalizeOAuthCallbackProvider: built-in aliases, else a plugin id [a-z0-9-]+, else None."""
    p = provider.strip().lower()
    aliases = {
        "anthropic": "anthropic",
        "claude": "anthropic",
        "codex": "codex",
        "openai": "codex",
        "antigravity": "antigravity",
        "anti-gravity": "antigravity",
        "xai": "xai",
        "x-ai": "xai",
        "x.ai": "xai",
        "grok": "xai",
    }
    if p in aliases:
        return aliases[p]
    if p and re.fullmatch(r"[a-z0-9-]+", p):
        return p
    return None


@dataclass(slots=True)
class OAuthSession:
    state: str
    provider: str
    created_at: datetime
    expires_at: datetime
    flow: str  # "callback" or "device"
    status: str = ""  # the error message once failed
    completed: bool = False
    callback: dict[str, str] | None = None  # the written .oauth file: code, state, error
    user_code: str = ""
    device_expires_at: datetime | None = None
    approved: Identity | None = None
    denied: bool = False
    saved_file: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def pending(self) -> bool:
        return not self.completed and not self.status


class OAuthSessions:
    """The in-memory map of states, purged lazily on every access like CPA's store.

    Two switches for tests and demos live here too (like the sessions, a simulated CPA restart clears them):
    - `forwarder_ports_in_use`: ports another program holds. An `is_webui` login whose forwarder port is
      listed gets CPA's `500 {"error":"failed to start callback server"}`, its session left pending.
    - `kimi_expires_in`: what Kimi's upstream says about its device code. None (the default): it says
      nothing, and CPA's answer has no `expires_in` (it sends one only when the upstream gave it, §4.1).
    """

    def __init__(self) -> None:
        self.sessions: dict[str, OAuthSession] = {}
        self.forwarder_ports_in_use: set[int] = set()
        # CPA's own `is_webui` forwarders: port → the state of the login that started it. One per port
        # (auth_files_oauth_callback.go startCallbackForwarder stops the previous one first); it stops when
        # its login's waiter ends (stopCallbackForwarderInstance, only if it is still the current one).
        self.forwarders: dict[int, str] = {}
        self.kimi_expires_in: int | None = None

    def _purge(self, now: datetime) -> None:
        for state in [s for s, v in self.sessions.items() if now > v.expires_at]:
            del self.sessions[state]

    def register(self, session: OAuthSession, now: datetime) -> None:
        self._purge(now)
        self.sessions[session.state] = session

    def get(self, state: str, now: datetime) -> OAuthSession | None:
        self._purge(now)
        return self.sessions.get(state.strip())

    def start_forwarder(self, port: int, state: str) -> None:
        self.forwarders[port] = state  # replaces (stops) another login's forwarder on that port

    def _stop_forwarder(self, state: str) -> None:
        for port in [p for p, owner in self.forwarders.items() if owner == state]:
            del self.forwarders[port]

    def set_error(self, state: str, message: str, now: datetime) -> None:
        self._purge(now)
        self._stop_forwarder(state)
        s = self.sessions.get(state)
        if s is None or s.completed:
            return
        s.status = message.strip() or "Authentication failed"
        s.expires_at = now + PENDING_TTL

    def complete(self, state: str, now: datetime) -> None:
        self._purge(now)
        self._stop_forwarder(state)
        s = self.sessions.get(state)
        if s is None or s.completed:
            return
        s.status = ""
        s.completed = True
        s.expires_at = now + COMPLETED_TTL

    def cancel(self, state: str, now: datetime) -> bool:
        self._purge(now)
        s = self.sessions.get(state)
        if s is None or not s.pending:
            return False
        self._stop_forwarder(state)
        del self.sessions[state]
        return True

    def is_pending(self, state: str, now: datetime) -> bool:
        s = self.get(state, now)
        return s is not None and s.pending
