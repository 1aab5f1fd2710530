"""Refusing state files that someone else could swap or edit (issue 11): a symlink planted in a directory
others can write, or a database another user created, would let them feed reauthd tasks and links."""

from __future__ import annotations

import os
import stat
from pathlib import Path

#: The files reauthd keeps beside `state.path` (SQLite's WAL and shared memory, the lock, the cookie key).
SIDE_FILES = ("-wal", "-shm", ".lock", ".cookie-key")


def _owner_ok(info: os.stat_result) -> bool:
    return info.st_uid in (os.geteuid(), 0)


def writable_by_others(info: os.stat_result) -> bool:
    """Writable by anyone but this user and its own primary group? Group write for our own group is allowed:
    Kubernetes' fsGroup gives the state volume and its files to the pod's group (deploy/container)."""
    return bool(info.st_mode & 0o002 or (info.st_mode & 0o020 and info.st_gid != os.getegid()))


def state_paths_problem(state_path: Path) -> str | None:
    """One sentence unless the state directory and every existing state file are this user's alone.

    The directory may belong to root (e.g. a read-only parent is not at issue here: it must not be writable
    by others); each file must belong to this user, be a regular file (never a symlink), and be writable by
    its owner only.
    """
    directory = state_path.parent
    try:
        info = directory.stat()
    except OSError as exc:
        return f"cannot inspect the state directory {directory}: {exc.strerror or exc}"
    if not _owner_ok(info) or writable_by_others(info):
        return (
            f"the state directory {directory} is writable or owned by another user; make it this user's "
            "alone (chown, chmod 700) before starting reauthd"
        )
    for candidate in (state_path, *(state_path.with_name(state_path.name + s) for s in SIDE_FILES)):
        try:
            info = os.lstat(candidate)
        except FileNotFoundError:
            continue
        except OSError as exc:
            return f"cannot inspect the state file {candidate}: {exc.strerror or exc}"
        if stat.S_ISLNK(info.st_mode) or not stat.S_ISREG(info.st_mode):
            return f"the state file {candidate} is a symlink or not a regular file; remove it"
        if info.st_uid != os.geteuid() or writable_by_others(info):
            return f"the state file {candidate} is writable or owned by another user; reauthd will not use it"
    return None
