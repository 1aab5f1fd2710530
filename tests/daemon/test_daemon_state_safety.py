"""Issue 11: the cookie-signing key lives in a 0600 file beside the database, not in it; a key an older
reauthd kept in the database is dropped; a key file others can read (or a symlink) stops the start."""

from __future__ import annotations

import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reauthd.config import load_config
from reauthd.daemon import COOKIE_KEY, Daemon
from reauthd.sim.server import SimThread
from reauthd.store.keyfile import KeyFileProblem, key_path_for, load_or_create_key
from reauthd.store.sqlite import Store
from tests.daemon.inprocess import running, write_config


async def test_the_cookie_key_is_a_private_file_not_a_database_row(tmp_path: Path, sim: SimThread) -> None:
    state = tmp_path / "state.db"
    with Store.open(state) as old:  # what an older reauthd left behind
        old.put_kv(COOKIE_KEY, "ab" * 32, datetime.now(UTC))
    daemon = Daemon(load_config(write_config(tmp_path, sim.base_url)))
    async with running(daemon):
        pass
    keyfile = key_path_for(state)
    assert keyfile.stat().st_mode & 0o777 == 0o600
    key = load_or_create_key(keyfile)
    assert key != bytes.fromhex("ab" * 32)  # a key that sat in the database is never used again
    raw = sqlite3.connect(state).execute("SELECT key FROM kv").fetchall()
    assert (COOKIE_KEY,) not in raw
    async with running(Daemon(load_config(write_config(tmp_path, sim.base_url)))):
        pass
    assert load_or_create_key(keyfile) == key  # kept across restarts: logins in progress survive


def test_a_key_file_others_can_read_or_a_symlink_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db.cookie-key"
    load_or_create_key(path)
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileProblem, match="chmod 600"):
        load_or_create_key(path)
    os.chmod(path, 0o600)
    link = tmp_path / "other.cookie-key"
    link.symlink_to(path)
    with pytest.raises(KeyFileProblem, match="cannot read"):
        load_or_create_key(link)


async def test_an_unsafe_state_directory_stops_the_start_with_exit_2(
    tmp_path: Path, sim: SimThread, capsys: pytest.CaptureFixture[str]
) -> None:
    os.chmod(tmp_path, 0o777)  # noqa: S103 - the unsafe directory under test
    try:
        code = await Daemon(load_config(write_config(tmp_path, sim.base_url))).run()
    finally:
        os.chmod(tmp_path, 0o700)
    assert code == 2
    err = capsys.readouterr().err
    assert "writable or owned by another user" in err and len(err.strip().splitlines()) == 1
