"""The page's cookie-signing key: a 0600 file beside the state database, never a row in it (issue 11).

Anyone who can read the database (a backup, a support bundle) could otherwise forge operator and recipient
sessions. Replacing or deleting the file ends every session: cookies are HMACs under the key.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

KEY_BYTES = 32


class KeyFileProblem(Exception):
    """The key file cannot be used safely; `str()` is one sentence naming the path."""


def key_path_for(state_path: Path) -> Path:
    return state_path.with_name(state_path.name + ".cookie-key")


def load_or_create_key(path: Path) -> bytes:
    """Read the key (hex) or create it with mode 0600; never follows a symlink, never accepts a key that
    other users can read or that another user owns."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return _create(path)
    except OSError as exc:
        raise KeyFileProblem(f"cannot read the cookie key file {path}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        # Group access for our own group only (Kubernetes' fsGroup adds it to the state volume's files).
        if (
            info.st_uid != os.geteuid()
            or info.st_mode & 0o007
            or (info.st_mode & 0o070 and info.st_gid != os.getegid())
        ):
            raise KeyFileProblem(
                f"the cookie key file {path} must belong to this user and be readable by it only (chmod 600)"
            )
        raw = os.read(fd, 1024).decode("ascii", errors="replace").strip()
    finally:
        os.close(fd)
    try:
        key = bytes.fromhex(raw)
    except ValueError:
        key = b""
    if len(key) < KEY_BYTES:
        raise KeyFileProblem(f"the cookie key file {path} does not hold a key; delete it to make a new one")
    return key


def _create(path: Path) -> bytes:
    key = secrets.token_bytes(KEY_BYTES)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:  # another process made it meanwhile
        return load_or_create_key(path)
    except OSError as exc:
        raise KeyFileProblem(f"cannot create the cookie key file {path}: {exc.strerror or exc}") from None
    try:
        os.write(fd, key.hex().encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    return key
