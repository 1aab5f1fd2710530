"""CPA's runtime auth records: MarkResult bookkeeping, the `/auth-files` entry and auth_index.

Mirrors sdk/cliproxy/auth/conductor_cooldown.go (MarkResult, applyAuthFailureState,
updateAggregatedAvailability) and internal/api/handlers/management/auth_files.go
(buildAuthFileEntryLocked) as described in shared/cpa-contract.md §2.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from reauthd.sim.clock import DEFAULT_TZ, go_time
from reauthd.sim.credentials import codex_claims
from reauthd.sim.upstream import dumps

AUTH_DIR = "/sim/auths"
BUCKET_SECONDS = 600
BUCKET_COUNT = 20
SUSPEND = timedelta(minutes=30)
NOT_FOUND_SUSPEND = timedelta(hours=12)
TRANSIENT_COOLDOWN = timedelta(minutes=1)
QUOTA_BACKOFF_MAX = timedelta(minutes=30)

# Keys that a re-login never copies from the old file, and that a login's raw record leaves out of its
# Metadata (sdk/cliproxy/auth/metadata_merge.go IsAuthTokenPayloadKey).
TOKEN_LIFECYCLE_KEYS = frozenset(
    {
        "access_token",
        "refresh_token",
        "id_token",
        "session_id",
        "expired",
        "last_refresh",
        "expires_in",
        "timestamp",
        "token_type",
        "user_code",
        "verification_uri",
        "verification_uri_complete",
    }
)


def auth_index_for(provider: str, path: str) -> str:
    """sdk/cliproxy/auth/types.go stableAuthIndex: first 8 bytes of sha256("<type>:<abs path>")."""
    return hashlib.sha256(f"{provider.lower()}:{path}".encode()).hexdigest()[:16]


def content_hash(content: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


@dataclass(slots=True)
class ModelState:
    status: str = "active"
    status_message: str = ""
    unavailable: bool = False
    next_retry_after: datetime | None = None
    quota: dict[str, Any] | None = None
    backoff_level: int = 0


@dataclass(slots=True)
class Failure:
    """One failed upstream result as CPA records it: `message` is the (classified) body string."""

    status: int
    message: str
    model: str | None
    retry_after_s: float | None = None
    cloudflare: bool = False


@dataclass(eq=False, slots=True)
class SimAuth:
    """One auth as CPA's manager holds it in memory (file content is kept apart, see state.Disk)."""

    name: str
    provider: str
    metadata: dict[str, Any]
    loaded_hash: str
    created_at: datetime
    runtime_only: bool = False
    # A plugin "virtual" auth expanded from one source file (coreauth.MarkPluginVirtualAuth): the source's
    # file name. CPA answers 409 to any change made through another name (auth_files_crud.go).
    virtual_source: str | None = None
    path: str = ""
    auth_index: str = ""
    status: str = "active"
    status_message: str = ""
    disabled: bool = False
    unavailable: bool = False
    next_retry_after: datetime | None = None
    last_error: dict[str, Any] | None = None
    quota: dict[str, Any] | None = None
    model_states: dict[str, ModelState] = field(default_factory=dict)
    success: int = 0
    failed: int = 0
    recent: dict[int, list[int]] = field(default_factory=dict)
    updated_at: datetime | None = None
    last_refreshed_at: datetime | None = None
    next_refresh_after: datetime | None = None
    # The prefix the model registry routes by: set when the file is (re)loaded, so a PATCH of `prefix`
    # routes only after the watcher reloaded the rewritten file (contract §13).
    routed_prefix: str = ""
    cache: bytes | None = None
    cache_bucket: int = -1

    def __post_init__(self) -> None:
        if not self.path and not self.runtime_only:
            self.path = f"{AUTH_DIR}/{self.name}"
        if not self.auth_index:
            self.auth_index = auth_index_for(self.provider, self.path or f"runtime:{self.name}")

    def touch(self) -> None:
        self.cache = None

    @property
    def access_token(self) -> str:
        """api_tools.go tokenValueForAuth order: accessToken, access_token, token, id_token, cookie."""
        md = self.metadata
        for key in ("accessToken", "access_token"):
            if isinstance(md.get(key), str) and md[key]:
                return str(md[key])
        tok = md.get("token")
        if isinstance(tok, str) and tok:
            return tok
        if isinstance(tok, dict):
            inner = tok.get("access_token") or tok.get("accessToken")
            if isinstance(inner, str) and inner:
                return inner
        for key in ("id_token", "cookie"):
            if isinstance(md.get(key), str) and md[key]:
                return str(md[key])
        return ""

    def load(self, content: dict[str, Any], now: datetime) -> None:
        """The watcher (re)registers the file: new metadata, every model state reset (§2.3 C)."""
        self.metadata = dict(content)
        self.loaded_hash = content_hash(content)
        prefix = content.get("prefix")
        self.routed_prefix = prefix if isinstance(prefix, str) else ""
        self.disabled = content.get("disabled") is True
        # The file synthesizer sets only the status; the message stays empty (synthesizer/file.go).
        self.status = "disabled" if self.disabled else "active"
        self.status_message = ""
        self.clear_failures()
        self.updated_at = now
        # `last_refresh` is runtime state, never read from the file here (sdk/auth/filestore.go builds the
        # auth with a zero LastRefreshedAt; watcher/dispatcher.go clears it on the clone it dispatches).
        # The callers keep or set it as CPA does (SimState.register/watcher_reload, management upload).
        self.touch()

    def clear_failures(self) -> None:
        self.unavailable = False
        self.next_retry_after = None
        self.last_error = None
        self.quota = None
        self.model_states.clear()
        self.next_refresh_after = None

    # -- MarkResult -----------------------------------------------------------------------------

    def record_recent(self, now: datetime, ok: bool) -> None:
        bucket = int(now.timestamp()) // BUCKET_SECONDS
        counts = self.recent.setdefault(bucket, [0, 0])
        counts[0 if ok else 1] += 1
        if len(self.recent) > BUCKET_COUNT + 2:
            for old in sorted(self.recent)[: len(self.recent) - BUCKET_COUNT]:
                del self.recent[old]

    def mark_success(self, model: str | None, now: datetime) -> None:
        self.success += 1
        self.record_recent(now, True)
        if model:
            self.model_states[model] = ModelState()
        if not any(s.status == "error" for s in self.model_states.values()):
            if not self.disabled:
                self.status = "active"
                self.status_message = ""
            self.unavailable = False
            self.next_retry_after = None
            self.last_error = None
            self.quota = None
        else:
            self.aggregate(now)
        self.updated_at = now
        self.touch()

    def mark_failure(self, failure: Failure, now: datetime) -> None:
        """MarkResult's failure branch (model path) or applyAuthFailureState (no model)."""
        self.failed += 1
        self.record_recent(now, False)
        self.updated_at = now
        self.touch()
        code = failure.status
        self.last_error = {"message": failure.message, "http_status": code}
        if not failure.model:
            self._apply_auth_failure_state(failure, now)
            return
        state = self.model_states.setdefault(failure.model, ModelState())
        state.unavailable = True
        state.status = "error"
        state.status_message = failure.message
        self.status_message = failure.message
        invalid_grant = code in (400, 401) and "invalid_grant" in failure.message
        if failure.cloudflare:
            state.backoff_level += 1
            state.next_retry_after = now + min(QUOTA_BACKOFF_MAX, timedelta(seconds=2**state.backoff_level))
            state.status_message = "cloudflare challenge"
            self.status_message = "cloudflare challenge"
        elif invalid_grant or code in (401, 402, 403):
            state.next_retry_after = now + SUSPEND
        elif code == 404:
            state.next_retry_after = now + NOT_FOUND_SUSPEND
        elif code == 429:
            if failure.retry_after_s is not None:
                nxt = now + timedelta(seconds=failure.retry_after_s)
            else:
                nxt = now + min(QUOTA_BACKOFF_MAX, timedelta(seconds=2**state.backoff_level))
                state.backoff_level += 1
            state.next_retry_after = nxt
            state.quota = {
                "exceeded": True,
                "reason": "quota",
                "next_recover_at": go_time(nxt),
                "backoff_level": state.backoff_level,
            }
        else:
            state.next_retry_after = now + TRANSIENT_COOLDOWN
        self.status = "error"
        self.aggregate(now)

    def _apply_auth_failure_state(self, failure: Failure, now: datetime) -> None:
        code = failure.status
        self.status = "error"
        self.unavailable = True
        if failure.cloudflare:
            self.status_message, self.next_retry_after = "cloudflare challenge", now + timedelta(seconds=2)
        elif code in (400, 401) and "invalid_grant" in failure.message:
            self.status_message, self.next_retry_after = "invalid_grant", now + SUSPEND
        elif code == 401:
            self.status_message, self.next_retry_after = "unauthorized", now + SUSPEND
        elif code in (402, 403):
            self.status_message, self.next_retry_after = "payment_required", now + SUSPEND
        elif code == 404:
            self.status_message, self.next_retry_after = "not_found", now + NOT_FOUND_SUSPEND
        elif code == 429:
            wait = (
                timedelta(seconds=failure.retry_after_s)
                if failure.retry_after_s is not None
                else timedelta(seconds=1)
            )
            self.status_message, self.next_retry_after = "quota exhausted", now + wait
            self.quota = {
                "exceeded": True,
                "reason": "quota",
                "next_recover_at": go_time(now + wait),
                "backoff_level": 0,
            }
        elif code == 408 or code >= 500:
            self.status_message, self.next_retry_after = "transient upstream error", now + TRANSIENT_COOLDOWN
        else:
            self.status_message = failure.message or "request failed"
            self.next_retry_after = now + TRANSIENT_COOLDOWN

    def mark_refresh_unauthorized(self, body: str) -> None:
        """conductor_refresh.go: a refresh answered 401 → error/unauthorized, no next_retry_after."""
        self.status = "error"
        self.status_message = "unauthorized"
        self.unavailable = True
        self.last_error = {
            "code": "unauthorized",
            "message": f"token refresh failed with status 401: {body}",
            "http_status": 401,
        }
        self.touch()

    def aggregate(self, now: datetime) -> None:
        """updateAggregatedAvailability: unavailable only when every tracked model is blocked."""
        states = list(self.model_states.values())
        blocked = [
            s.next_retry_after
            for s in states
            if s.unavailable and s.next_retry_after is not None and s.next_retry_after > now
        ]
        if states and len(blocked) == len(states):
            self.unavailable = True
            self.next_retry_after = min(t for t in blocked if t is not None)
        else:
            self.unavailable = False
            self.next_retry_after = None

    # -- listing ----------------------------------------------------------------------------------

    def entry(self, now: datetime, disk_size: int | None, disk_mtime: datetime | None) -> dict[str, Any]:
        """The map buildAuthFileEntryLocked returns (contract §2.1)."""
        md = self.metadata
        email = md.get("email") if isinstance(md.get("email"), str) else ""
        e: dict[str, Any] = {
            "id": self.name,
            "auth_index": self.auth_index,
            "name": self.name,
            "type": self.provider,
            "provider": self.provider,
            "label": email or self.provider,
            "status": self.status,
            "status_message": self.status_message,
            "disabled": self.disabled,
            "unavailable": self.unavailable,
            "runtime_only": self.runtime_only,
            "source": "memory",
            "size": 0,
            "success": self.success,
            "failed": self.failed,
            "recent_requests": self.recent_snapshot(now),
        }
        if email:
            e["email"] = email
        if isinstance(md.get("project_id"), str) and md["project_id"]:
            e["project_id"] = md["project_id"]
        e["account_type"] = "oauth"  # Auth.AccountInfo: every file auth is an OAuth kind
        if email:
            e["account"] = email
        e["created_at"] = go_time(self.created_at)
        if self.updated_at is not None:
            e["modtime"] = e["updated_at"] = go_time(self.updated_at)
        if self.last_refreshed_at is not None:
            e["last_refresh"] = go_time(self.last_refreshed_at)
        if self.next_retry_after is not None:
            e["next_retry_after"] = go_time(self.next_retry_after)
        if self.path:
            e["path"] = self.path
            e["source"] = "file"
            if disk_size is not None and disk_mtime is not None:
                e["size"], e["modtime"] = disk_size, go_time(disk_mtime)
            else:
                e["source"] = "memory"
        if self.provider == "codex" and isinstance(md.get("id_token"), str):
            claims = codex_claims(md["id_token"])
            if claims is not None:
                e["id_token"] = claims
        prio = md.get("priority")
        if isinstance(prio, bool):
            pass
        elif isinstance(prio, int | float):
            e["priority"] = int(prio)
        elif isinstance(prio, str) and prio.strip().lstrip("-").isdigit():
            e["priority"] = int(prio.strip())
        if isinstance(md.get("note"), str) and md["note"].strip():
            e["note"] = md["note"].strip()
        for key in ("weight", "websockets", "request_retry"):
            if key in md and md[key] is not None:
                e[key] = md[key]
        return e

    def entry_json(self, now: datetime, disk_size: int | None, disk_mtime: datetime | None) -> bytes:
        """The entry serialised once and reused until the auth, its file or the 10-min bucket changes."""
        bucket = int(now.timestamp()) // BUCKET_SECONDS
        if self.cache is None or self.cache_bucket != bucket:
            head = dumps(self.entry(now, disk_size, disk_mtime)).encode()
            self.cache = head.replace(
                b'"recent_requests":null', b'"recent_requests":' + self.recent_json(now), 1
            )
            self.cache_bucket = bucket
        return self.cache

    def recent_json(self, now: datetime) -> bytes:
        """The 20 buckets as JSON; idle auths share one cached rendering per 10-minute bucket."""
        current = int(now.timestamp()) // BUCKET_SECONDS
        if not any(b > current - BUCKET_COUNT for b in self.recent):
            return _idle_recent_json(current)
        return dumps(self.recent_snapshot(now)).encode()

    def recent_snapshot(self, now: datetime) -> list[dict[str, Any]]:
        """RecentRequestsSnapshot: 20 buckets of 10 min, oldest first, labels in server local time."""
        current = int(now.timestamp()) // BUCKET_SECONDS
        out = []
        for bucket in range(current - BUCKET_COUNT + 1, current + 1):
            s, f = self.recent.get(bucket, (0, 0))
            out.append({"time": _bucket_label(bucket), "success": s, "failed": f})
        return out

    def error_event(self, failure: Failure, now: datetime) -> dict[str, Any]:
        """The RESP `errors` channel payload (sdk/cliproxy/auth/error_events.go, contract §7)."""
        status: dict[str, Any] = {
            "status": self.status,
            "status_message": self.status_message,
            "disabled": self.disabled,
            "unavailable": self.unavailable,
        }
        if self.next_retry_after is not None:
            status["next_retry_after"] = go_time(self.next_retry_after)
        if self.quota:
            status["quota"] = self.quota
        if failure.model and failure.model in self.model_states:
            ms = self.model_states[failure.model]
            model: dict[str, Any] = {
                "name": failure.model,
                "status": ms.status,
                "status_message": ms.status_message,
                "unavailable": ms.unavailable,
            }
            if ms.next_retry_after is not None:
                model["next_retry_after"] = go_time(ms.next_retry_after)
            if ms.quota:
                model["quota"] = ms.quota
            status["model"] = model
        event: dict[str, Any] = {
            "timestamp": go_time(now),
            "provider": self.provider,
            "model": failure.model or "",
            "auth_id": self.name,
            "auth_index": self.auth_index,
            "status_code": failure.status or 500,
            "body": failure.message,
        }
        if self.last_error and self.last_error.get("code"):
            event["code"] = self.last_error["code"]
        if failure.status in (408, 429) or failure.status >= 500:
            event["retryable"] = True
        event["auth_status"] = status
        return event


@lru_cache(maxsize=64)
def _bucket_label(bucket: int) -> str:
    start = datetime.fromtimestamp(bucket * BUCKET_SECONDS, DEFAULT_TZ)
    end = start + timedelta(seconds=BUCKET_SECONDS)
    return f"{start:%H:%M}-{end:%H:%M}"


@lru_cache(maxsize=4)
def _idle_recent_json(current: int) -> bytes:
    return dumps(
        [
            {"time": _bucket_label(b), "success": 0, "failed": 0}
            for b in range(current - BUCKET_COUNT + 1, current + 1)
        ]
    ).encode()


def parse_last_refresh(content: dict[str, Any]) -> datetime | None:
    for key in ("last_refresh", "lastRefresh", "last_refreshed_at", "lastRefreshedAt"):
        raw = content.get(key)
        if isinstance(raw, str) and raw:
            try:
                return datetime.fromisoformat(raw.replace("Z", "+00:00"))
            except ValueError:
                continue
    return None
