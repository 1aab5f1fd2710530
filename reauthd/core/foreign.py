"""Logins of another account (pure): a file the login wrote for a different e-mail or account id.

A recipient link replaces its own credential only (issue 11). When a person signs in with another account,
CPA saves that account under its own name (contract §4.4) and the old file is never matched; rather than
waiting out the find timeout, verification names the file so a person can remove it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from reauthd.core.identity import OldCredential, codex_hash8, codex_name_hash8, written_since
from reauthd.core.model import Credential


def _other_account(old: OldCredential, entry: Credential) -> bool:
    """Does `entry` certainly belong to another account than `old`? Unknown identities never count."""
    if not old.email or not entry.email:
        return False
    if old.email.strip().casefold() != entry.email.strip().casefold():
        return True
    if old.provider == "codex":  # one e-mail, several ChatGPT workspaces: the account id decides
        old_hash = codex_hash8(old.account_id) if old.account_id else codex_name_hash8(old.name)
        new_hash = codex_hash8(entry.account_id) if entry.account_id else codex_name_hash8(entry.name)
        return bool(old_hash and new_hash and old_hash != new_hash)
    return False


def other_account_logins(
    old: OldCredential, listing: Sequence[Credential], since: datetime
) -> list[Credential]:
    """Files of the old credential's provider written since the login began for a *different* account.

    Kimi files carry no identity and are never reported. The caller decides how long to wait for the
    right file before treating these as the login's result (another account's token refresh also
    writes its file).
    """
    if old.provider == "kimi":
        return []
    return [
        entry
        for entry in listing
        if entry.provider == old.provider
        and entry.name != old.name
        and written_since(entry, since)
        and _other_account(old, entry)
    ]


def other_account_sentence(old: OldCredential, found: Sequence[Credential], masked: str) -> str:
    """Plain words for the page and the operator, naming the files so they can be removed."""
    names = ", ".join(sorted(entry.name for entry in found))
    return (
        f"The sign-in used a different account than this request ({masked}), so it does not replace "
        f"{old.name}. The proxy server saved it as {names}; an operator should remove that file if it "
        "is not wanted, and the request stays open for the right account."
    )
