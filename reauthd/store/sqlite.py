"""reauthd's durable state in SQLite: tasks with their history, the notification outbox, hashed link tokens,
the audit trail of CPA changes, login sessions, key-gate snapshots and a small key→JSON table.

Synchronous sqlite3 on purpose: every write is a few rows on a local file (well under a millisecond in WAL
mode), so it runs on the event loop thread; a lock makes it safe from starlette's worker threads as well.
Every public method is its own transaction; `transaction()` groups several into one.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from reauthd.core.model import ReauthTask, TaskEvent, TaskState
from reauthd.core.sanitize import sanitize_line
from reauthd.core.tasks import IllegalTransition, transition
from reauthd.store.lock import StateLock, StateLocked
from reauthd.store.records import (
    AuditEntry,
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    KeyGateSnapshot,
    LoginSession,
)
from reauthd.store.safety import state_paths_problem
from reauthd.store.schema import LATEST_VERSION, MIGRATIONS

__all__ = ["DuplicateOpenTask", "StateLocked", "Store", "StoreError", "TaskNotFound"]

_TS = "%Y-%m-%dT%H:%M:%S.%fZ"
_TERMINAL = tuple(s.value for s in TaskState if s.terminal)
# Fields of ReauthTask that `update_task_fields` may change (the state only changes through transitions).
_UPDATABLE = frozenset(
    {
        "reason",
        "provider",
        "account_masked",
        "deadline",
        "notified_at",
        "opened_at",
        "reminders_sent",
        "reminded_at",
        "escalated_at",
        "quiet_until_healthy",
        "new_auth_name",
        "new_auth_index",
        "verification",
        "disabled_by_person",
        "details",
    }
)


class StoreError(Exception):
    """The state database cannot be used (newer schema, corrupt file, unreadable path)."""


# The authorize URL carries the OAuth state; it is stored once, in its own column (issue 11), and the URL
# keeps this mark in its place.
_STATE_MARK = "{reauthd:state}"


def _without_state(url: str | None, state: str) -> str | None:
    if not url or not state or len(state) < 8:
        return url
    return url.replace(state, _STATE_MARK)


def _with_state(url: str | None, state: str) -> str | None:
    return url.replace(_STATE_MARK, state) if url else url


class StateUnsafe(StoreError):
    """The state directory or a state file is writable or owned by another user, or a symlink."""


class TaskNotFound(StoreError):
    def __init__(self, task_id: str) -> None:
        super().__init__(f"no task with id {task_id!r}")
        self.task_id = task_id


class DuplicateOpenTask(StoreError):
    """There is already an open task for this credential (one open task per credential)."""


def _carries_oauth_code(url: str) -> bool:
    """Whether a URL carries an OAuth authorization code (a callback URL), which must never be stored.

    Any `code` parameter counts, except the literal `code=true` of an authorization *request*: Claude's
    authorize URL carries it as a flag (CPA internal/auth/claude/anthropic_auth.go GenerateAuthURL,
    `"code": {"true"}`), next to `response_type=code`. A callback URL never has `response_type`, and a real
    code is never the word "true"; so `code=true` passes only together with `response_type`.
    """
    query = parse_qs(urlsplit(url).query, keep_blank_values=True)
    codes = query.get("code")
    if codes is None:
        return False
    return not (codes == ["true"] and "response_type" in query)


def ts(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("the store only accepts timezone-aware datetimes")
    return value.astimezone(UTC).strftime(_TS)


def _ts_opt(value: datetime | None) -> str | None:
    return None if value is None else ts(value)


def parse_ts(value: str) -> datetime:
    # fromisoformat reads what `ts` writes ("...T12:00:00.000000Z") and is ~20x faster than strptime,
    # which dominated a wave of 500 revocations.
    return datetime.fromisoformat(value).astimezone(UTC)


def _parse_opt(value: str | None) -> datetime | None:
    return None if value is None else parse_ts(value)


def hash_link_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Store:
    """The state database. Open with `Store.open(path)` (takes the single-instance lock), close with `close()`."""

    def __init__(self, conn: sqlite3.Connection, lock: StateLock | None, path: Path) -> None:
        self._conn = conn
        self._lock = lock
        self.path = path
        self._mutex = threading.RLock()
        self._depth = 0

    # ------------------------------------------------------------------------------------ lifecycle

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, lock: bool = True) -> Store:
        """Open (creating if needed) the state at `path`, mode 0600, and migrate it to the latest schema.

        Raises StateLocked when another process holds the state, StoreError when it cannot be used.
        `lock=False` is for read-only tools (the CLI listing tasks next to a running daemon).
        """
        state_path = Path(path)
        try:
            state_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StoreError(
                f"cannot create the state directory {state_path.parent}: {exc.strerror}"
            ) from None
        unsafe = state_paths_problem(state_path)  # issue 11: never a file someone else could swap
        if unsafe is not None:
            raise StateUnsafe(unsafe)
        state_lock = StateLock(state_path) if lock else None
        if state_lock is not None:
            try:
                state_lock.acquire()
            except OSError as exc:
                raise StoreError(f"cannot create the lock file {state_lock.path}: {exc.strerror}") from None
        try:
            try:
                fd = os.open(state_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
                os.close(fd)
                os.chmod(state_path, 0o600)
            except OSError as exc:
                raise StoreError(f"cannot open the state file {state_path}: {exc.strerror}") from None
            # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves (explicit transactions).
            conn = sqlite3.connect(state_path, isolation_level=None, check_same_thread=False, timeout=10)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # a committed transition survives power loss
            conn.execute("PRAGMA foreign_keys=ON")
            # Deleted rows (an OAuth state, an authorize URL, a link token hash) are overwritten with zeros
            # rather than left in free pages (issue 11); forget_secrets() clears the WAL's old copies too.
            conn.execute("PRAGMA secure_delete=ON")
            store = cls(conn, state_lock, state_path)
            store._migrate()
        except sqlite3.DatabaseError as exc:
            if state_lock is not None:
                state_lock.release()
            raise StoreError(f"the state file {state_path} cannot be used: {exc}") from None
        except BaseException:
            if state_lock is not None:
                state_lock.release()
            raise
        return store

    def close(self) -> None:
        with self._mutex:
            self._conn.close()
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group several store calls into one atomic transaction (re-entrant)."""
        with self._mutex:
            if self._depth == 0:
                self._conn.execute("BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if self._depth == 0:
                    self._conn.execute("ROLLBACK")
                raise
            self._depth -= 1
            if self._depth == 0:
                try:
                    self._conn.execute("COMMIT")
                except BaseException:
                    # A failed COMMIT (disk full, I/O error) can leave the transaction open; end it so the
                    # next call starts clean, and let the caller see the error.
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise

    def schema_version(self) -> int:
        row = self._conn.execute("SELECT version FROM schema_version").fetchone()
        return int(row[0]) if row else 0

    def _migrate(self) -> None:
        with self.transaction():
            self._conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            current = self.schema_version()
            if self._conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 0:
                self._conn.execute("INSERT INTO schema_version(version) VALUES (0)")
            if current > LATEST_VERSION:
                raise StoreError(
                    f"the state file {self.path} was written by a newer reauthd (schema {current}, "
                    f"this one knows {LATEST_VERSION}); refusing to touch it"
                )
            for version in range(current, LATEST_VERSION):
                for statement in _split_sql(MIGRATIONS[version]):
                    self._conn.execute(statement)
                self._conn.execute("UPDATE schema_version SET version = ?", (version + 1,))

    def _q(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> _Result:
        # Fetch under the mutex: a cursor read while another thread executes would interleave.
        with self._mutex:
            cursor = self._conn.execute(sql, params)
            return _Result(cursor.fetchall(), cursor.lastrowid)

    # ------------------------------------------------------------------------------------ tasks

    def create_task(
        self,
        *,
        cpa: str,
        auth_name: str,
        auth_index: str,
        provider: str,
        account_masked: str,
        reason: str,
        now: datetime,
        deadline: datetime,
        source: str = "detect",
        task_id: str | None = None,
    ) -> ReauthTask:
        """Persist a new task in state `open` with its first event. Raises DuplicateOpenTask if the credential
        already has an open task."""
        task = ReauthTask(
            id=task_id or uuid.uuid4().hex[:12],
            cpa=cpa,
            auth_name=auth_name,
            auth_index=auth_index,
            provider=provider,
            account_masked=account_masked,
            state=TaskState.OPEN,
            reason=sanitize_line(reason),
            created_at=now,
            updated_at=now,
            deadline=deadline,
            source=source,
        )
        event = TaskEvent(at=now, from_state=None, to_state=TaskState.OPEN, reason=task.reason)
        with self.transaction():
            if self.find_open_task(cpa, auth_index, auth_name) is not None:
                raise DuplicateOpenTask(f"credential {auth_name} on {cpa} already has an open task")
            try:
                self._q(
                    "INSERT INTO tasks(id, cpa, auth_name, auth_index, provider, account_masked, state, reason,"
                    " source, created_at, updated_at, deadline, details) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,'{}')",
                    (
                        task.id,
                        cpa,
                        auth_name,
                        auth_index,
                        provider,
                        account_masked,
                        task.state.value,
                        task.reason,
                        source,
                        ts(now),
                        ts(now),
                        ts(deadline),
                    ),
                )
            except sqlite3.IntegrityError:
                raise DuplicateOpenTask(f"credential {auth_name} on {cpa} already has an open task") from None
            self._insert_event(task.id, event)
        task.history.append(event)
        return task

    def get_task(self, task_id: str, *, with_history: bool = True) -> ReauthTask:
        """The task with `task_id` (history included by default). Raises TaskNotFound."""
        row = self._q("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
        if row is None:
            raise TaskNotFound(task_id)
        task = _task_from_row(row)
        if with_history:
            task.history = self.task_history(task_id)
        return task

    def task_history(self, task_id: str) -> list[TaskEvent]:
        rows = self._q("SELECT * FROM task_events WHERE task_id = ? ORDER BY id", (task_id,)).fetchall()
        return [
            TaskEvent(
                at=parse_ts(r["at"]),
                from_state=TaskState(r["from_state"]) if r["from_state"] else None,
                to_state=TaskState(r["to_state"]),
                reason=r["reason"],
            )
            for r in rows
        ]

    def find_open_task(self, cpa: str, auth_index: str, name: str) -> ReauthTask | None:
        """The non-terminal task for this credential: by CPA + auth_index, else by CPA + file name."""
        marks = ",".join("?" * len(_TERMINAL))
        base = f"SELECT * FROM tasks WHERE cpa = ? AND state NOT IN ({marks})"  # noqa: S608 (only "?" marks)
        row = None
        if auth_index:
            row = self._q(f"{base} AND auth_index = ?", (cpa, *_TERMINAL, auth_index)).fetchone()
        if row is None:
            row = self._q(
                f"{base} AND auth_name = ? AND (auth_index = '' OR ? = '')",
                (cpa, *_TERMINAL, name, auth_index),
            ).fetchone()
        return None if row is None else _task_from_row(row)

    def list_tasks(
        self,
        states: Iterable[TaskState] | None = None,
        *,
        with_history: bool = False,
        closed_since: datetime | None = None,
    ) -> list[ReauthTask]:
        """Tasks, oldest first, optionally only those in `states`; `closed_since` keeps open tasks and tasks
        that ended at or after that time (reconcile and the outbox do not need the whole archive)."""
        sql = "SELECT * FROM tasks WHERE 1=1"
        params: list[Any] = []
        if states is not None:
            values = [s.value for s in states]
            if not values:
                return []
            sql += f" AND state IN ({','.join('?' * len(values))})"
            params += values
        if closed_since is not None:
            sql += " AND (closed_at IS NULL OR closed_at >= ?)"
            params.append(ts(closed_since))
        rows = self._q(sql + " ORDER BY created_at, id", params).fetchall()
        tasks = [_task_from_row(r) for r in rows]
        if with_history:
            for task in tasks:
                task.history = self.task_history(task.id)
        return tasks

    def open_tasks(self) -> list[ReauthTask]:
        return self.list_tasks([s for s in TaskState if not s.terminal])

    def apply_transition(
        self,
        task_id: str,
        to: TaskState,
        reason: str,
        now: datetime,
        *,
        expect: TaskState | Iterable[TaskState] | None = None,
        **fields: Any,
    ) -> ReauthTask:
        """Move a task to `to` and record the event in the same transaction; optionally update flow fields.

        `expect` guards against a race (web page vs. reconcile): if the task is not in one of those states,
        IllegalTransition is raised and nothing changes. Illegal transitions raise IllegalTransition
        (reauthd.core.tasks). Returns the updated task (with history).
        """
        with self.transaction():
            current = self.get_task(task_id)
            if expect is not None:
                allowed = {expect} if isinstance(expect, TaskState) else set(expect)
                if current.state not in allowed:
                    raise IllegalTransition(task_id, current.state, to)
            changed = transition(current, to, reason, now)
            for name, value in fields.items():
                _check_field(name)
                setattr(changed, name, value)
            self._write_task(changed)
            self._insert_event(task_id, changed.history[-1])
        return changed

    def update_task_fields(self, task_id: str, now: datetime, **fields: Any) -> ReauthTask:
        """Change flow data without a state change (new credential name/index, verification result,
        `disabled_by_person`, `details`, reminder bookkeeping). Text fields are sanitised."""
        with self.transaction():
            task = self.get_task(task_id, with_history=False)
            for name, value in fields.items():
                _check_field(name)
                setattr(task, name, value)
            task.updated_at = now
            self._write_task(task)
        return self.get_task(task_id)

    def _write_task(self, task: ReauthTask) -> None:
        self._q(
            "UPDATE tasks SET state=?, reason=?, provider=?, account_masked=?, updated_at=?, deadline=?,"
            " notified_at=?, opened_at=?, reminders_sent=?, reminded_at=?, escalated_at=?, closed_at=?, quiet_until_healthy=?,"
            " new_auth_name=?, new_auth_index=?, verification=?, disabled_by_person=?, details=? WHERE id=?",
            (
                task.state.value,
                sanitize_line(task.reason),
                task.provider,
                task.account_masked,
                ts(task.updated_at),
                ts(task.deadline),
                _ts_opt(task.notified_at),
                _ts_opt(task.opened_at),
                task.reminders_sent,
                _ts_opt(task.reminded_at),
                _ts_opt(task.escalated_at),
                _ts_opt(task.closed_at),
                int(task.quiet_until_healthy),
                task.new_auth_name,
                task.new_auth_index,
                None if task.verification is None else sanitize_line(task.verification),
                int(task.disabled_by_person),
                json.dumps(task.details, sort_keys=True, default=str),
                task.id,
            ),
        )

    def _insert_event(self, task_id: str, event: TaskEvent) -> None:
        self._q(
            "INSERT INTO task_events(task_id, at, from_state, to_state, reason) VALUES (?,?,?,?,?)",
            (
                task_id,
                ts(event.at),
                event.from_state.value if event.from_state else None,
                event.to_state.value,
                sanitize_line(event.reason),
            ),
        )

    # ------------------------------------------------------------------------------------ link tokens

    def issue_link_token(self, task_id: str, expires_at: datetime, now: datetime | None = None) -> str:
        """Mint an opaque 256-bit link token for a task; only its sha256 is stored. The raw token is returned
        once and never again."""
        token = secrets.token_urlsafe(32)
        created = now or datetime.now(UTC)
        self._q(
            "INSERT INTO link_tokens(token_sha256, task_id, created_at, expires_at) VALUES (?,?,?,?)",
            (hash_link_token(token), task_id, ts(created), ts(expires_at)),
        )
        return token

    def resolve_link_token(self, token: str, now: datetime) -> str | None:
        """The task id a link token belongs to, or None (unknown, tampered or expired).

        The lookup is by sha256, so timing reveals nothing about stored tokens. The caller must still check
        the task's state (a done task's link may show "already done").
        """
        if not token or len(token) > 200:
            return None
        digest = hash_link_token(token)
        row = self._q(
            "SELECT token_sha256, task_id, expires_at FROM link_tokens WHERE token_sha256 = ?", (digest,)
        )
        found = row.fetchone()
        if found is None or not hmac.compare_digest(found["token_sha256"], digest):
            return None
        if parse_ts(found["expires_at"]) <= now:
            return None
        return str(found["task_id"])

    def expire_link_tokens(self, task_id: str, now: datetime) -> None:
        """End every link of a task now (e.g. when it is cancelled)."""
        self._q(
            "UPDATE link_tokens SET expires_at = ? WHERE task_id = ? AND expires_at > ?",
            (ts(now), task_id, ts(now)),
        )

    # ------------------------------------------------------------------------------------ login sessions

    def save_login_session(self, session: LoginSession, now: datetime) -> None:
        """Insert or replace the login session of a task. Refuses anything that looks like a callback URL."""
        if session.verification_url and _carries_oauth_code(session.verification_url):
            raise ValueError("a login session must never hold a callback URL (it carries the OAuth code)")
        self._q(
            "INSERT INTO login_sessions(task_id, provider, oauth_state, flow, user_code, verification_url,"
            " expires_at, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT(task_id) DO UPDATE SET provider=excluded.provider, oauth_state=excluded.oauth_state,"
            " flow=excluded.flow, user_code=excluded.user_code, verification_url=excluded.verification_url,"
            " expires_at=excluded.expires_at, updated_at=excluded.updated_at",
            (
                session.task_id,
                session.provider,
                session.oauth_state,
                session.flow,
                session.user_code,
                _without_state(session.verification_url, session.oauth_state),
                ts(session.expires_at),
                ts(now),
                ts(now),
            ),
        )
        self.forget_secrets()  # the replaced session's state may sit in the WAL

    def get_login_session(self, task_id: str) -> LoginSession | None:
        row = self._q("SELECT * FROM login_sessions WHERE task_id = ?", (task_id,)).fetchone()
        if row is None:
            return None
        return LoginSession(
            task_id=row["task_id"],
            provider=row["provider"],
            oauth_state=row["oauth_state"],
            flow=row["flow"],
            user_code=row["user_code"],
            verification_url=_with_state(row["verification_url"], row["oauth_state"]),
            expires_at=parse_ts(row["expires_at"]),
            created_at=parse_ts(row["created_at"]),
            updated_at=parse_ts(row["updated_at"]),
        )

    def delete_login_session(self, task_id: str) -> None:
        self._q("DELETE FROM login_sessions WHERE task_id = ?", (task_id,))
        self.forget_secrets()

    def forget_secrets(self) -> None:
        """Checkpoint and truncate the WAL, whose old page images still hold what was just deleted or
        replaced (an OAuth state, an authorize URL). Best effort: a reader holding the WAL defers it."""
        if self._conn.in_transaction:
            return
        with contextlib.suppress(sqlite3.OperationalError):
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # ------------------------------------------------------------------------------------ audit

    def record_audit(
        self,
        *,
        task_id: str | None,
        cpa: str,
        action: str,
        target_name: str,
        target_auth_index: str,
        outcome: str,
        at: datetime,
    ) -> int:
        """Append one change reauthd made in CPA and CPA's answer (sanitised). Returns the entry id."""
        cur = self._q(
            "INSERT INTO audit(task_id, cpa, action, target_name, target_auth_index, outcome, at)"
            " VALUES (?,?,?,?,?,?,?)",
            (task_id, cpa, action, target_name, target_auth_index, sanitize_line(outcome), ts(at)),
        )
        return int(cur.lastrowid or 0)

    def audit_for(self, task_id: str | None = None, *, limit: int = 1000) -> list[AuditEntry]:
        """The audit trail of one task (or of everything when task_id is None), oldest first."""
        if task_id is None:
            rows = self._q("SELECT * FROM audit ORDER BY id LIMIT ?", (limit,)).fetchall()
        else:
            rows = self._q(
                "SELECT * FROM audit WHERE task_id = ? ORDER BY id LIMIT ?", (task_id, limit)
            ).fetchall()
        return [
            AuditEntry(
                id=r["id"],
                task_id=r["task_id"],
                cpa=r["cpa"],
                action=r["action"],
                target_name=r["target_name"],
                target_auth_index=r["target_auth_index"],
                outcome=r["outcome"],
                at=parse_ts(r["at"]),
            )
            for r in rows
        ]

    # ------------------------------------------------------------------------------------ key→JSON

    def get_kv(self, key: str, default: Any = None) -> Any:
        """A JSON value stored under `key` (detection confirmation state and the like), or `default`."""
        row = self._q("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row["value"])

    def put_kv(self, key: str, value: Any, now: datetime) -> None:
        self._q(
            "INSERT INTO kv(key, value, updated_at) VALUES (?,?,?)"
            " ON CONFLICT(key) DO UPDATE SET value=excluded.value, updated_at=excluded.updated_at",
            (key, json.dumps(value, sort_keys=True), ts(now)),
        )

    def delete_kv(self, key: str) -> None:
        self._q("DELETE FROM kv WHERE key = ?", (key,))

    def kv_prefix(self, prefix: str) -> dict[str, Any]:
        """Every key starting with `prefix` and its value."""
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self._q("SELECT key, value FROM kv WHERE key LIKE ? ESCAPE '\\'", (escaped + "%",)).fetchall()
        return {r["key"]: json.loads(r["value"]) for r in rows}

    # ------------------------------------------------------------------------------------ key gate

    def save_key_gate(self, cpa: str, fingerprint: str, snapshot: Mapping[str, Any], now: datetime) -> None:
        """Remember what reauthd knows about a CPA's management key, under the key's fingerprint (a hash,
        never the key itself)."""
        self._q(
            "INSERT INTO key_gate(cpa, fingerprint, snapshot, updated_at) VALUES (?,?,?,?)"
            " ON CONFLICT(cpa) DO UPDATE SET fingerprint=excluded.fingerprint, snapshot=excluded.snapshot,"
            " updated_at=excluded.updated_at",
            (cpa, fingerprint, json.dumps(dict(snapshot), sort_keys=True, default=str), ts(now)),
        )

    def get_key_gate(self, cpa: str) -> KeyGateSnapshot | None:
        row = self._q("SELECT * FROM key_gate WHERE cpa = ?", (cpa,)).fetchone()
        if row is None:
            return None
        return KeyGateSnapshot(
            cpa=row["cpa"],
            fingerprint=row["fingerprint"],
            snapshot=json.loads(row["snapshot"]),
            updated_at=parse_ts(row["updated_at"]),
        )

    # ------------------------------------------------------------------------------------ outbox

    def enqueue_delivery(
        self,
        *,
        kind: DeliveryKind,
        route: str,
        task_ids: Sequence[str],
        due_at: datetime,
        now: datetime,
        dedupe_key: str | None = None,
    ) -> int | None:
        """Add a message to the outbox. With a `dedupe_key` already present, nothing is added (None)."""
        with self.transaction():
            try:
                cur = self._q(
                    "INSERT INTO deliveries(kind, route, dedupe_key, created_at, due_at, next_attempt_at, status)"
                    " VALUES (?,?,?,?,?,?,?)",
                    (
                        kind.value,
                        route,
                        dedupe_key,
                        ts(now),
                        ts(due_at),
                        ts(due_at),
                        DeliveryStatus.PENDING.value,
                    ),
                )
            except sqlite3.IntegrityError:
                if dedupe_key is not None:
                    return None
                raise
            delivery_id = int(cur.lastrowid or 0)
            for task_id in dict.fromkeys(task_ids):
                self._q(
                    "INSERT INTO delivery_tasks(delivery_id, task_id) VALUES (?,?)", (delivery_id, task_id)
                )
        return delivery_id

    def due_deliveries(self, now: datetime, *, limit: int = 100) -> list[Delivery]:
        """Pending (or interrupted `sending`) deliveries whose next attempt is due, oldest first."""
        rows = self._q(
            "SELECT * FROM deliveries WHERE status IN (?, ?) AND next_attempt_at <= ? ORDER BY next_attempt_at, id"
            " LIMIT ?",
            (DeliveryStatus.PENDING.value, DeliveryStatus.SENDING.value, ts(now), limit),
        ).fetchall()
        return [self._delivery(r) for r in rows]

    def get_delivery(self, delivery_id: int) -> Delivery:
        row = self._q("SELECT * FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
        if row is None:
            raise StoreError(f"no delivery {delivery_id}")
        return self._delivery(row)

    def list_deliveries(
        self,
        *,
        statuses: Iterable[DeliveryStatus] | None = None,
        task_id: str | None = None,
        kinds: Iterable[DeliveryKind] | None = None,
    ) -> list[Delivery]:
        sql = "SELECT DISTINCT d.* FROM deliveries d LEFT JOIN delivery_tasks t ON t.delivery_id = d.id WHERE 1=1"
        params: list[Any] = []
        if statuses is not None:
            values = [s.value for s in statuses]
            sql += f" AND d.status IN ({','.join('?' * len(values))})"
            params += values
        if kinds is not None:
            values = [k.value for k in kinds]
            sql += f" AND d.kind IN ({','.join('?' * len(values))})"
            params += values
        if task_id is not None:
            sql += " AND t.task_id = ?"
            params.append(task_id)
        rows = self._q(sql + " ORDER BY d.id", params).fetchall()
        return [self._delivery(r) for r in rows]

    def task_ids_with_delivery(
        self, kinds: Iterable[DeliveryKind], statuses: Iterable[DeliveryStatus] | None = None
    ) -> set[str]:
        """Ids of tasks named by at least one delivery of these kinds (optionally only in these statuses)."""
        kind_values = [k.value for k in kinds]
        marks = ",".join("?" * len(kind_values))
        sql = f"SELECT DISTINCT t.task_id FROM delivery_tasks t JOIN deliveries d ON d.id = t.delivery_id WHERE d.kind IN ({marks})"  # noqa: S608
        params: list[Any] = list(kind_values)
        if statuses is not None:
            status_values = [s.value for s in statuses]
            sql += f" AND d.status IN ({','.join('?' * len(status_values))})"
            params += status_values
        return {r["task_id"] for r in self._q(sql, params).fetchall()}

    def last_channel_outcomes(self) -> dict[str, bool]:
        """For each channel, whether its most recent attempted delivery succeeded (health after a restart)."""
        rows = self._q(
            "SELECT route, status, last_error FROM deliveries d WHERE id ="
            " (SELECT MAX(id) FROM deliveries WHERE route = d.route AND attempts > 0)"
        ).fetchall()
        outcomes: dict[str, bool] = {}
        for row in rows:
            if row["status"] == DeliveryStatus.SENT.value:
                outcomes[row["route"]] = True
            elif row["last_error"] is not None:
                outcomes[row["route"]] = False
        return outcomes

    def reschedule_delivery(self, delivery_id: int, at: datetime) -> None:
        """Move a pending delivery's next attempt (quiet hours defer, they never drop)."""
        self._q("UPDATE deliveries SET next_attempt_at = ? WHERE id = ?", (ts(at), delivery_id))

    def claim_delivery(self, delivery_id: int, now: datetime, retry_at: datetime) -> Delivery:
        """Mark a delivery as being sent (attempts + 1) before the send; if the process dies during the send
        the row is due again at `retry_at`."""
        self._q(
            "UPDATE deliveries SET status = ?, attempts = attempts + 1, next_attempt_at = ? WHERE id = ?",
            (DeliveryStatus.SENDING.value, ts(retry_at), delivery_id),
        )
        return self.get_delivery(delivery_id)

    def finish_delivery(
        self, delivery_id: int, status: DeliveryStatus, now: datetime, *, error: str | None = None
    ) -> None:
        """Record the outcome of an attempt: SENT, GAVE_UP, SKIPPED, or PENDING again (a retry is due at the
        `next_attempt_at` set by `claim_delivery`)."""
        self._q(
            "UPDATE deliveries SET status = ?, last_error = ?, sent_at = ? WHERE id = ?",
            (
                status.value,
                None if error is None else sanitize_line(error),
                ts(now) if status is DeliveryStatus.SENT else None,
                delivery_id,
            ),
        )

    def _delivery(self, row: sqlite3.Row) -> Delivery:
        task_rows = self._q(
            "SELECT task_id FROM delivery_tasks WHERE delivery_id = ? ORDER BY rowid", (row["id"],)
        ).fetchall()
        return Delivery(
            id=row["id"],
            kind=DeliveryKind(row["kind"]),
            route=row["route"],
            task_ids=tuple(r["task_id"] for r in task_rows),
            created_at=parse_ts(row["created_at"]),
            due_at=parse_ts(row["due_at"]),
            next_attempt_at=parse_ts(row["next_attempt_at"]),
            attempts=row["attempts"],
            status=DeliveryStatus(row["status"]),
            last_error=row["last_error"],
            sent_at=_parse_opt(row["sent_at"]),
            dedupe_key=row["dedupe_key"],
        )


class _Result:
    __slots__ = ("_rows", "lastrowid")

    def __init__(self, rows: list[sqlite3.Row], lastrowid: int | None) -> None:
        self._rows = rows
        self.lastrowid = lastrowid

    def fetchone(self) -> sqlite3.Row | None:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[sqlite3.Row]:
        return self._rows


def _check_field(name: str) -> None:
    if name not in _UPDATABLE:
        raise ValueError(f"task field {name!r} cannot be updated directly")


def _task_from_row(row: sqlite3.Row) -> ReauthTask:
    return ReauthTask(
        id=row["id"],
        cpa=row["cpa"],
        auth_name=row["auth_name"],
        auth_index=row["auth_index"],
        provider=row["provider"],
        account_masked=row["account_masked"],
        state=TaskState(row["state"]),
        reason=row["reason"],
        created_at=parse_ts(row["created_at"]),
        updated_at=parse_ts(row["updated_at"]),
        deadline=parse_ts(row["deadline"]),
        source=row["source"],
        notified_at=_parse_opt(row["notified_at"]),
        opened_at=_parse_opt(row["opened_at"]),
        reminders_sent=row["reminders_sent"],
        reminded_at=_parse_opt(row["reminded_at"]),
        escalated_at=_parse_opt(row["escalated_at"]),
        closed_at=_parse_opt(row["closed_at"]),
        quiet_until_healthy=bool(row["quiet_until_healthy"]),
        new_auth_name=row["new_auth_name"],
        new_auth_index=row["new_auth_index"],
        verification=row["verification"],
        disabled_by_person=bool(row["disabled_by_person"]),
        details=json.loads(row["details"]),
    )


def _split_sql(script: str) -> list[str]:
    # sqlite3.executescript would COMMIT our open transaction; run statements one by one instead.
    statements: list[str] = []
    for chunk in script.split(";"):
        lines = [line for line in chunk.splitlines() if not line.strip().startswith("--")]
        statement = "\n".join(lines).strip()
        if statement:
            statements.append(statement)
    return statements
