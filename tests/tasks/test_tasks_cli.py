"""`reauthd tasks list|show|cancel` and `reauthd reauth` through the real command line entry point, with
`reauth` looking the credential up in the CPA simulator over loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from reauthd.cli import main
from reauthd.core.model import TaskState
from reauthd.sim.server import SimThread, run_sim_in_thread
from reauthd.store import Store
from reauthd.store.records import LoginSession

KEY = "sim-key-for-cli-tests"


@pytest.fixture
def sim() -> Iterator[SimThread]:
    thread = run_sim_in_thread(management_key=KEY)
    yield thread
    thread.stop()


def write_config(tmp_path: Path, base_url: str = "http://127.0.0.1:9") -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[state]
path = "{tmp_path / "state" / "state.db"}"

[[cpa]]
name = "main"
base_url = "{base_url}"
management_key = "{KEY}"

[web]
public_url = "https://reauthd.example.org"
""",
        encoding="utf-8",
    )
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_reauth_list_show_cancel(sim: SimThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    auth = sim.call(lambda st: st.add_credential("codex", email="carol@example.com", name="codex-carol.json"))
    config = str(write_config(tmp_path, sim.base_url))

    code, out, err = run(
        capsys, "reauth", "--config", config, "--cpa", "main", "codex-carol.json", "--json", "--link"
    )
    assert code == 0, err
    raised = json.loads(out)
    assert raised["created"] is True and raised["state"] == "open" and raised["source"] == "manual"
    assert raised["auth_index"] == auth.auth_index and raised["provider"] == "codex"
    assert raised["account"] == "c***@example.com"
    assert raised["link"].startswith("https://reauthd.example.org/r/")

    code, out, _ = run(capsys, "reauth", "--config", config, "--cpa", "main", "codex-carol.json")
    assert code == 0 and f"already has an open task: {raised['id']}" in out

    code, out, _ = run(capsys, "tasks", "list", "--config", config, "--json")
    (row,) = json.loads(out)
    for key in ("id", "cpa", "auth_name", "provider", "state", "reason", "created_at", "updated_at"):
        assert key in row
    code, out, _ = run(capsys, "tasks", "list", "--config", config)
    assert raised["id"] in out and "codex-carol.json" in out

    code, out, _ = run(capsys, "tasks", "cancel", raised["id"], "--config", config)
    assert code == 0 and "cancelled" in out
    code, out, err = run(capsys, "tasks", "cancel", raised["id"], "--config", config)
    assert code == 1 and "cannot go from cancelled to cancelled" in err

    code, out, _ = run(capsys, "tasks", "show", raised["id"], "--config", config, "--json")
    shown = json.loads(out)
    assert [e["to"] for e in shown["history"]] == ["open", "cancelled"]
    code, out, _ = run(capsys, "tasks", "show", raised["id"], "--config", config)
    assert "open -> cancelled" in out
    assert KEY not in out


def test_reauth_unknown_file_and_cpa(
    sim: SimThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(write_config(tmp_path, sim.base_url))
    code, _, err = run(capsys, "reauth", "--config", config, "--cpa", "main", "nope.json")
    assert code == 1 and "has no auth file named nope.json" in err
    code, _, err = run(capsys, "reauth", "--config", config, "--cpa", "other", "x.json")
    assert code == 2 and "no [[cpa]] named 'other'" in err


def test_reauth_with_unreachable_cpa_is_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(write_config(tmp_path, "http://127.0.0.1:9"))
    code, _, err = run(capsys, "reauth", "--config", config, "--cpa", "main", "x.json")
    last = err.strip().splitlines()[-1]  # earlier lines are the client's retry log
    assert code == 1 and last.startswith("reauthd: cannot look up x.json in CPA main")
    assert "Traceback" not in err and KEY not in err


def test_show_unknown_task_and_list_next_to_a_running_daemon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(write_config(tmp_path))
    daemon_store = Store.open(tmp_path / "state" / "state.db")  # holds the daemon lock
    try:
        daemon_store.create_task(
            cpa="main",
            auth_name="a.json",
            auth_index="i",
            provider="codex",
            account_masked="a***@example.com",
            reason="revoked",
            now=datetime(2026, 11, 27, tzinfo=UTC),
            deadline=datetime(2026, 12, 4, tzinfo=UTC),
        )
        code, out, _ = run(capsys, "tasks", "list", "--config", config, "--open", "--json")
        assert code == 0 and [r["auth_name"] for r in json.loads(out)] == ["a.json"]
        code, _, err = run(capsys, "tasks", "show", "missing", "--config", config)
        assert code == 1 and "no task with id 'missing'" in err
    finally:
        daemon_store.close()


def test_cancel_during_a_login_cancels_the_pending_sign_in_at_cpa(
    sim: SimThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without it, a device approval after the cancel would still make CPA save a file nothing verifies."""
    sim.call(lambda st: st.add_credential("codex", email="dan@example.com", name="codex-dan.json"))
    config = str(write_config(tmp_path, sim.base_url))
    code, out, err = run(capsys, "reauth", "--config", config, "--cpa", "main", "codex-dan.json", "--json")
    assert code == 0, err
    task_id = json.loads(out)["id"]
    minted = httpx.get(
        f"{sim.base_url}/v0/management/codex-auth-url", headers={"Authorization": f"Bearer {KEY}"}, timeout=5
    ).json()
    state = minted["state"]
    now = datetime.now(UTC)
    store = Store.open(tmp_path / "state" / "state.db", lock=False)
    try:
        store.apply_transition(task_id, TaskState.OPENED, "the person opened the link", now)
        store.apply_transition(task_id, TaskState.LOGIN_STARTED, "login started", now)
        store.save_login_session(
            LoginSession(task_id, "codex", state, "callback", now + timedelta(minutes=5)), now
        )
    finally:
        store.close()

    code, out, err = run(capsys, "tasks", "cancel", task_id, "--config", config)
    assert code == 0, err
    assert "pending sign-in at CPA was cancelled too" in out and state not in out + err
    deletes = sim.call(lambda st: [op for op in st.oplog if op["method"] == "DELETE"])
    assert [op["path"] for op in deletes] == ["/v0/management/oauth-session"]
    status = httpx.get(
        f"{sim.base_url}/v0/management/get-auth-status",
        params={"state": state},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=5,
    ).json()
    assert status["status"] == "error"  # CPA no longer waits for this sign-in


def test_show_prints_the_evidence_behind_a_detected_task(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(write_config(tmp_path))
    store = Store.open(tmp_path / "state" / "state.db", lock=False)
    from reauthd.config import load_config
    from reauthd.core.model import Credential, Evidence, EvidenceSource, Verdict, VerdictKind
    from reauthd.tasks.service import TaskService

    now = datetime.now(UTC)
    canary = "sk-ant-oat01-CANARYCANARYCANARY"
    verdict = Verdict(
        VerdictKind.NEEDS_REAUTH,
        "Claude says the token was revoked",
        (
            Evidence(EvidenceSource.LISTING, now - timedelta(minutes=2), 403, "OAuth token has been revoked"),
            Evidence(EvidenceSource.PROBE, now, 401, f"revoked token {canary} for eve@example.com"),
        ),
        confirmed=True,
    )
    credential = Credential(
        cpa="main", name="claude-x.json", auth_index="i1", provider="claude", status="error"
    )
    try:
        task = TaskService(store, load_config(config, environ={})).on_confirmed_revocation(
            credential, verdict, now
        )
        assert task is not None
    finally:
        store.close()
    code, out, _ = run(capsys, "tasks", "show", task.id, "--config", config, "--json")
    evidence = json.loads(out)["evidence"]
    assert [(e["source"], e["http_status"]) for e in evidence] == [("listing", 403), ("probe", 401)]
    code, out, _ = run(capsys, "tasks", "show", task.id, "--config", config)
    assert code == 0 and "evidence:" in out and "OAuth token has been revoked" in out
    assert "CANARY" not in out and "eve@example.com" not in out


@pytest.mark.parametrize("argv", [("tasks", "list"), ("tasks", "show", "abc"), ("tasks", "cancel", "abc")])
def test_task_commands_never_create_a_missing_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    config = write_config(tmp_path)
    state = tmp_path / "state" / "state.db"
    code, out, err = run(capsys, *argv, "--config", str(config))
    assert code == 2 and out == ""
    (line,) = err.strip().splitlines()
    assert line == (
        f"reauthd: there is no state file at {state} (setting [state] path): point --config at the "
        "daemon's configuration, or start the daemon once to create it"
    )
    assert not state.exists() and not state.parent.exists()


def test_scan_never_creates_a_missing_state(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # scan needs no state (it only borrows the daemon's key gate when one exists): it runs, creates nothing.
    config = write_config(tmp_path, "http://127.0.0.1:9")
    run(capsys, "scan", "--config", str(config))
    assert not (tmp_path / "state").exists()


def test_list_shortens_reasons_at_a_word_boundary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(write_config(tmp_path))
    reason = "CPA answered 401 with token_invalidated for the last three requests of this credential"
    store = Store.open(tmp_path / "state" / "state.db", lock=False)
    try:
        store.create_task(
            cpa="main",
            auth_name="a.json",
            auth_index="i",
            provider="codex",
            account_masked="a***@example.com",
            reason=reason,
            now=datetime(2026, 11, 27, tzinfo=UTC),
            deadline=datetime(2026, 12, 4, tzinfo=UTC),
        )
    finally:
        store.close()
    code, out, _ = run(capsys, "tasks", "list", "--config", config)
    shown = out.splitlines()[1].split("  ")[-1]
    assert code == 0
    assert shown == "CPA answered 401 with token_invalidated for the last three…"
    assert reason.startswith(shown[:-1])
