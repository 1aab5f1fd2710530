"""The SQLite store: schema and migrations, the single-instance lock, atomic transitions, tokens, outbox."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reauthd.core.model import TaskState
from reauthd.core.tasks import IllegalTransition
from reauthd.store import (
    DeliveryKind,
    DeliveryStatus,
    DuplicateOpenTask,
    LoginSession,
    StateLocked,
    Store,
    StoreError,
    TaskNotFound,
)
from reauthd.store.schema import LATEST_VERSION

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.open(tmp_path / "deep" / "state.db")
    yield s
    s.close()


def new_task(store: Store, name: str = "codex-a.json", index: str = "aaaa000011112222") -> str:
    task = store.create_task(
        cpa="main",
        auth_name=name,
        auth_index=index,
        provider="codex",
        account_masked="a***@example.com",
        reason="token revoked",
        now=T0,
        deadline=T0 + timedelta(days=7),
    )
    return task.id


def test_open_creates_private_file_with_latest_schema(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "state.db"
    with Store.open(path) as store:
        assert store.schema_version() == LATEST_VERSION
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert {
        "tasks",
        "task_events",
        "deliveries",
        "link_tokens",
        "audit",
        "kv",
        "login_sessions",
        "key_gate",
    } <= tables


def test_wal_and_lock_files_are_private_too(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with Store.open(path) as store:
        new_task(store)
        for suffix in ("-wal", "-shm", ".lock"):
            side = path.with_name(path.name + suffix)
            assert side.exists(), suffix
            assert stat.S_IMODE(os.stat(side).st_mode) & 0o077 == 0, suffix


def test_reopen_keeps_data_and_does_not_remigrate(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with Store.open(path) as store:
        task_id = new_task(store)
    with Store.open(path) as store:
        assert store.get_task(task_id).state is TaskState.OPEN
        assert store.schema_version() == LATEST_VERSION


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    Store.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE schema_version SET version = 999")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer reauthd"):
        Store.open(path)
    with pytest.raises(StoreError):
        Store.open(path)


def test_garbage_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="cannot be used"):
        Store.open(path)


def test_second_instance_in_same_process_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with Store.open(path), pytest.raises(StateLocked, match="already running") as info:
        Store.open(path)
    assert str(info.value).count(".") <= 3  # one sentence
    Store.open(path).close()  # released on close


def test_second_instance_in_another_process_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    code = (
        "import sys\nfrom reauthd.store import Store, StateLocked\n"
        "try:\n    Store.open(sys.argv[1])\nexcept StateLocked as e:\n    print(e); sys.exit(3)\n"
    )
    with Store.open(path):
        proc = subprocess.run(
            [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=False
        )
    assert proc.returncode == 3, proc.stderr
    assert f"pid {os.getpid()}" in proc.stdout


def test_one_open_task_per_credential(store: Store) -> None:
    first = new_task(store)
    with pytest.raises(DuplicateOpenTask):
        new_task(store)
    with pytest.raises(DuplicateOpenTask):  # same name, no index on one side: still the same credential
        new_task(store, index="")
    store.apply_transition(first, TaskState.CANCELLED, "operator", T0)
    second = new_task(store)
    assert second != first
    found = store.find_open_task("main", "aaaa000011112222", "codex-a.json")
    assert found is not None and found.id == second
    assert store.find_open_task("other", "aaaa000011112222", "codex-a.json") is None


def test_transition_persists_event_in_same_transaction(store: Store) -> None:
    task_id = new_task(store)
    store.apply_transition(task_id, TaskState.NOTIFIED, "digest sent", T0 + timedelta(seconds=30))
    task = store.get_task(task_id)
    assert task.state is TaskState.NOTIFIED
    assert task.notified_at == T0 + timedelta(seconds=30)
    assert [(e.from_state, e.to_state) for e in task.history] == [
        (None, TaskState.OPEN),
        (TaskState.OPEN, TaskState.NOTIFIED),
    ]


def test_illegal_transition_changes_nothing(store: Store) -> None:
    task_id = new_task(store)
    with pytest.raises(IllegalTransition):
        store.apply_transition(task_id, TaskState.RETIRING, "skip ahead", T0)
    with pytest.raises(IllegalTransition):
        store.apply_transition(task_id, TaskState.OPENED, "race", T0, expect=TaskState.NOTIFIED)
    task = store.get_task(task_id)
    assert task.state is TaskState.OPEN and len(task.history) == 1


def test_crash_inside_transaction_rolls_back_state_and_event(store: Store) -> None:
    task_id = new_task(store)

    class Boom(Exception):
        pass

    def send_then_crash() -> None:
        with store.transaction():
            store.apply_transition(task_id, TaskState.NOTIFIED, "sent", T0)
            raise Boom

    with pytest.raises(Boom):
        send_then_crash()
    task = store.get_task(task_id)
    assert task.state is TaskState.OPEN and len(task.history) == 1


def test_crash_of_process_mid_transaction_leaves_previous_state(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with Store.open(path) as store:
        task_id = new_task(store)
    code = (
        "import os, sys\nfrom datetime import UTC, datetime\nfrom reauthd.store import Store\n"
        "from reauthd.core.model import TaskState\n"
        "s = Store.open(sys.argv[1])\n"
        "with s.transaction():\n"
        "    s.apply_transition(sys.argv[2], TaskState.NOTIFIED, 'sent', datetime.now(UTC))\n"
        "    os.kill(os.getpid(), 9)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path), task_id], check=False)
    assert proc.returncode == -9
    with Store.open(path) as store:  # the lock died with the process
        task = store.get_task(task_id)
    assert task.state is TaskState.OPEN and len(task.history) == 1


def test_reasons_and_fields_are_sanitised(store: Store) -> None:
    task_id = store.create_task(
        cpa="main",
        auth_name="x.json",
        auth_index="",
        provider="claude",
        account_masked="b***@example.com",
        reason="401 for bob@example.com with Bearer eyJhbGciOiJIUzI1NiJ9.payloadpayload.sig at "
        "http://localhost:1455/auth/callback?code=abc&state=xyz",
        now=T0,
        deadline=T0 + timedelta(days=1),
    ).id
    store.apply_transition(task_id, TaskState.FAILED, "refresh_token=rt-abcdefghijklmnop rejected", T0)
    store.update_task_fields(task_id, T0, verification="probe said access_token: sk-1234567890abcdef")
    task = store.get_task(task_id)
    text = " ".join([task.reason, task.verification or "", *(e.reason for e in task.history)])
    for secret in ("bob@", "eyJ", "code=abc", "xyz", "rt-abc", "sk-123", "localhost:1455"):
        assert secret not in text
    with pytest.raises(ValueError, match="cannot be updated"):
        store.update_task_fields(task_id, T0, state=TaskState.DONE)


def test_link_tokens_are_hashed_and_expire(store: Store, tmp_path: Path) -> None:
    task_id = new_task(store)
    token = store.issue_link_token(task_id, T0 + timedelta(days=7), T0)
    assert len(token) >= 40
    assert store.resolve_link_token(token, T0 + timedelta(days=1)) == task_id
    assert store.resolve_link_token(token, T0 + timedelta(days=7)) is None
    assert store.resolve_link_token(token[:-1] + ("A" if token[-1] != "A" else "B"), T0) is None
    assert store.resolve_link_token("", T0) is None
    raw = (tmp_path / "deep" / "state.db").read_bytes()
    assert token.encode() not in raw
    store.expire_link_tokens(task_id, T0 + timedelta(hours=1))
    assert store.resolve_link_token(token, T0 + timedelta(hours=2)) is None


def test_login_session_roundtrip_and_refuses_callback_urls(store: Store) -> None:
    task_id = new_task(store)
    session = LoginSession(
        task_id=task_id,
        provider="codex",
        oauth_state="state-secret-123",
        flow="callback",
        expires_at=T0 + timedelta(minutes=5),
        verification_url="https://auth.openai.com/oauth/authorize?state=state-secret-123",
    )
    store.save_login_session(session, T0)
    loaded = store.get_login_session(task_id)
    assert loaded is not None and loaded.oauth_state == "state-secret-123"
    assert "state-secret-123" not in repr(loaded)
    bad = LoginSession(
        task_id=task_id,
        provider="codex",
        oauth_state="s",
        flow="callback",
        expires_at=T0,
        verification_url="http://localhost:1455/auth/callback?code=ac_123&state=s",
    )
    with pytest.raises(ValueError, match="callback URL"):
        store.save_login_session(bad, T0)
    store.delete_login_session(task_id)


CLAUDE_AUTHORIZE = (
    "https://claude.ai/oauth/authorize?client_id=9d1c250a-e61b-44d9-88ed-5944d1962f5e&code=true"
    "&code_challenge=abc&code_challenge_method=S256&redirect_uri=http%3A%2F%2Flocalhost%3A54545%2Fcallback"
    "&response_type=code&scope=user%3Aprofile+user%3Ainference&state=0123456789abcdef0123456789abcdef"
)


@pytest.mark.parametrize(
    ("url", "stored"),
    [
        # CPA's Claude authorize URL (anthropic_auth.go GenerateAuthURL): `code=true` is a flag
        (CLAUDE_AUTHORIZE, True),
        # callback URLs, whatever their shape
        ("http://localhost:54545/callback?code=ac_123%23state&state=s", False),
        ("http://localhost:54545/callback?code=true&state=s", False),
        ("http://localhost:54545/callback?code=ac&code=true&response_type=code&state=s", False),
        ("http://localhost:54545/callback?code=&state=s", False),
        (CLAUDE_AUTHORIZE.replace("code=true", "code=ac_secret"), False),
    ],
)
def test_login_session_keeps_claude_authorize_urls_and_refuses_callbacks(
    store: Store, url: str, stored: bool
) -> None:
    """A real Claude authorize URL must be stored (else every Claude login through the page fails);
    anything carrying an OAuth code still is not."""
    task_id = new_task(store)
    session = LoginSession(
        task_id=task_id,
        provider="anthropic",
        oauth_state="s",
        flow="callback",
        expires_at=T0 + timedelta(minutes=5),
        verification_url=url,
    )
    if stored:
        store.save_login_session(session, T0)
        loaded = store.get_login_session(task_id)
        assert loaded is not None and loaded.verification_url == url
    else:
        with pytest.raises(ValueError, match="callback URL"):
            store.save_login_session(session, T0)
        assert store.get_login_session(task_id) is None


def test_audit_kv_and_key_gate(store: Store) -> None:
    task_id = new_task(store)
    store.record_audit(
        task_id=task_id,
        cpa="main",
        action="patch-status disabled",
        target_name="codex-a.json",
        target_auth_index="aaaa000011112222",
        outcome='200 {"status":"ok","disabled":true}',
        at=T0,
    )
    entries = store.audit_for(task_id)
    assert [(e.action, e.target_name) for e in entries] == [("patch-status disabled", "codex-a.json")]
    assert store.audit_for("nope") == []
    store.put_kv("detect:main:aaaa", {"streak": 2}, T0)
    store.put_kv("detect:main:bbbb", {"streak": 1}, T0)
    store.put_kv("other", [1], T0)
    assert store.get_kv("detect:main:aaaa") == {"streak": 2}
    assert store.get_kv("missing", "d") == "d"
    assert set(store.kv_prefix("detect:")) == {"detect:main:aaaa", "detect:main:bbbb"}
    store.save_key_gate("main", "fp-1234", {"rejected_at": "x"}, T0)
    gate = store.get_key_gate("main")
    assert gate is not None and gate.fingerprint == "fp-1234" and gate.snapshot == {"rejected_at": "x"}


def test_outbox_dedupe_claim_and_finish(store: Store) -> None:
    a, b = new_task(store), new_task(store, "codex-b.json", "bbbb000011112222")
    first = store.enqueue_delivery(
        kind=DeliveryKind.NEW, route="default#0", task_ids=[a, b], due_at=T0, now=T0, dedupe_key="new:x"
    )
    assert first is not None
    again = store.enqueue_delivery(
        kind=DeliveryKind.NEW, route="default#0", task_ids=[a], due_at=T0, now=T0, dedupe_key="new:x"
    )
    assert again is None
    assert store.due_deliveries(T0 - timedelta(seconds=1)) == []
    (due,) = store.due_deliveries(T0)
    assert due.task_ids == (a, b)
    claimed = store.claim_delivery(due.id, T0, T0 + timedelta(minutes=1))
    assert claimed.status is DeliveryStatus.SENDING and claimed.attempts == 1
    # Interrupted "sending" rows come back when their retry time is due (at-least-once after a crash).
    assert store.due_deliveries(T0) == []
    assert [d.id for d in store.due_deliveries(T0 + timedelta(minutes=1))] == [due.id]
    store.finish_delivery(due.id, DeliveryStatus.SENT, T0 + timedelta(minutes=1))
    assert store.due_deliveries(T0 + timedelta(days=1)) == []
    assert [d.id for d in store.list_deliveries(task_id=b)] == [due.id]


def test_unknown_task_is_typed(store: Store) -> None:
    with pytest.raises(TaskNotFound):
        store.get_task("nope")


def test_naive_datetimes_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        store.put_kv("k", 1, datetime(2026, 1, 1))


def test_pending_migrations_apply_in_order_and_a_failing_one_rolls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import reauthd.store.sqlite as sqlite_store
    from reauthd.store.schema import MIGRATIONS

    path = tmp_path / "state.db"
    with Store.open(path) as store:
        task_id = new_task(store)
    broken = (*MIGRATIONS, "CREATE TABLE extra (x INTEGER); INSERT INTO no_such_table VALUES (1)")
    monkeypatch.setattr(sqlite_store, "MIGRATIONS", broken)
    monkeypatch.setattr(sqlite_store, "LATEST_VERSION", len(broken))
    with pytest.raises(StoreError):
        Store.open(path)
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT version FROM schema_version").fetchone()[0] == LATEST_VERSION
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'extra'").fetchone() is None
    conn.close()
    good = (*MIGRATIONS, "CREATE TABLE extra (x INTEGER)", "ALTER TABLE extra ADD COLUMN y TEXT")
    monkeypatch.setattr(sqlite_store, "MIGRATIONS", good)
    monkeypatch.setattr(sqlite_store, "LATEST_VERSION", len(good))
    with Store.open(path) as store:
        assert store.schema_version() == LATEST_VERSION + 2
        assert store.get_task(task_id).state is TaskState.OPEN  # data kept


def test_unusable_location_is_one_sentence(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot create the state directory"):
        Store.open(blocker / "sub" / "state.db")
    directory = tmp_path / "dir.db"
    directory.mkdir()
    with pytest.raises(StoreError):
        Store.open(directory)
