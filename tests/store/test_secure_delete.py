"""Issue 11 item 14: a finished login's OAuth state and authorize URL do not linger in the database file or
its WAL once the session is deleted or replaced."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from reauthd.store.records import LoginSession
from reauthd.store.sqlite import Store

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _on_disk(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.iterdir() if p.name.startswith(path.name))


def _session(task_id: str, state: str) -> LoginSession:
    return LoginSession(
        task_id=task_id,
        provider="codex",
        oauth_state=state,
        flow="callback",
        expires_at=NOW + timedelta(minutes=5),
        verification_url=f"https://auth.openai.com/oauth/authorize?state={state}&client_id=x",
        created_at=NOW,
    )


def test_deleted_and_replaced_login_sessions_leave_no_trace(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with Store.open(path) as store:
        task = store.create_task(
            cpa="main", auth_name="codex-a.json", auth_index="0" * 16, provider="codex",
            account_masked="a***@example.com", reason="revoked", now=NOW, deadline=NOW + timedelta(days=1),
        )  # fmt: skip
        first, second = "STATEONECANARY" * 3, "STATETWOCANARY" * 3
        store.save_login_session(_session(task.id, first), NOW)
        assert first.encode() in _on_disk(path)
        store.save_login_session(_session(task.id, second), NOW)  # "Start again": a new login replaces it
        assert first.encode() not in _on_disk(path)
        store.delete_login_session(task.id)
        data = _on_disk(path)
        assert first.encode() not in data and second.encode() not in data
    assert second.encode() not in _on_disk(path)


def test_the_state_is_stored_once_not_again_inside_the_authorize_url(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with Store.open(path) as store:
        task = store.create_task(
            cpa="main", auth_name="codex-a.json", auth_index="0" * 16, provider="codex",
            account_masked="a***@example.com", reason="revoked", now=NOW, deadline=NOW + timedelta(days=1),
        )  # fmt: skip
        state = "STATEONCECANARY" * 3
        session = _session(task.id, state)
        store.save_login_session(session, NOW)
        assert _on_disk(path).count(state.encode()) == 1
        back = store.get_login_session(task.id)
        assert back is not None and back.verification_url == session.verification_url
