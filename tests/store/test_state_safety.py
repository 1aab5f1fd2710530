"""Issue 11 item 9: state files someone else could swap or edit are refused before anything is opened."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reauthd.store.sqlite import StateUnsafe, Store


def _state(tmp_path: Path) -> Path:
    directory = tmp_path / "state"
    directory.mkdir(mode=0o700)
    return directory / "state.db"


def test_a_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    path = _state(tmp_path)
    os.chmod(path.parent, 0o777)  # noqa: S103 - the unsafe directory under test
    with pytest.raises(StateUnsafe, match="writable or owned by another user"):
        Store.open(path)
    assert not path.exists()  # nothing was created there


@pytest.mark.parametrize("name", ["state.db", "state.db.lock", "state.db-wal"])
def test_symlinked_state_files_are_refused(tmp_path: Path, name: str) -> None:
    path = _state(tmp_path)
    target = tmp_path / "elsewhere"
    target.write_bytes(b"")
    (path.parent / name).symlink_to(target)
    with pytest.raises(StateUnsafe, match="is a symlink"):
        Store.open(path)
    assert target.read_bytes() == b""


def test_a_state_file_others_can_write_is_refused(tmp_path: Path) -> None:
    path = _state(tmp_path)
    with Store.open(path):
        pass
    os.chmod(path, 0o666)  # noqa: S103 - the unsafe file under test
    with pytest.raises(StateUnsafe, match="writable or owned by another user"):
        Store.open(path)
    os.chmod(path, 0o600)
    with Store.open(path):  # put right, it opens again
        pass


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_database_another_user_created_is_refused(tmp_path: Path) -> None:
    path = _state(tmp_path)
    with Store.open(path):
        pass
    os.chown(path, 65534, 65534)
    with pytest.raises(StateUnsafe, match="owned by another user"):
        Store.open(path, lock=False)


def test_group_write_for_our_own_group_is_kubernetes_fsgroup_and_allowed(tmp_path: Path) -> None:
    """deploy/container/kubernetes.yaml: fsGroup makes the volume and its files group-writable for the pod's
    own group; that must not stop the daemon after a pod restart."""
    path = _state(tmp_path)
    with Store.open(path):
        pass
    os.chmod(path.parent, 0o2770)  # noqa: S103 - what fsGroup does
    os.chmod(path, 0o660)
    with Store.open(path):
        pass
    if os.geteuid() == 0:  # another group with write access is refused
        os.chown(path, os.geteuid(), 65534)
        os.chmod(path, 0o660)
        with pytest.raises(StateUnsafe, match="writable or owned by another user"):
            Store.open(path)
