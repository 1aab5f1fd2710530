"""Matching an old credential to the file a login just saved (pure): same name in place, or a new name.

CPA decides where a login lands (contract §4.4): most providers overwrite the same file name in place
(same `auth_index`), Codex writes `codex-<hash8>-<email>-<plan>.json` so a legacy name or a plan change
gives a new file, Kimi writes `kimi-<unixms>.json` on every login, and a Vertex import names its file in
the import response. Two candidates are never resolved by guessing: the answer says so and a person
decides.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from reauthd.core.model import Credential

# A same-name file must have looked the same to us (status active, empty message, modtime after the
# login started) for this long before it is probed: the listing cannot tell the watcher's reload apart from
# the raw record CPA registered a moment before it, and a write the watcher has not reloaded yet still
# lists the old in-memory state (contract §13: writes are not debounced, pending updates merge by id).
SAME_NAME_SETTLE = timedelta(seconds=3)


@dataclass(frozen=True, slots=True)
class OldCredential:
    """What a task knows about the credential being replaced."""

    name: str
    auth_index: str
    provider: str
    email: str | None = None
    account_id: str | None = None  # Codex: id_token.chatgpt_account_id


class MatchKind(StrEnum):
    FOUND = "found"  # exactly one candidate, and CPA has registered it (§12): safe to probe
    REGISTERING = "registering"  # exactly one candidate, but CPA's watcher has not reloaded it yet
    WAITING = "waiting"  # nothing this login wrote is visible yet
    AMBIGUOUS = "ambiguous"  # two or more candidates: never guess


@dataclass(frozen=True, slots=True)
class Replacement:
    kind: MatchKind
    reason: str  # plain language, safe to show a person
    credential: Credential | None = None  # FOUND / REGISTERING
    same_name: bool = False  # the login overwrote the old file in place: nothing to retire
    candidates: tuple[str, ...] = ()  # names, for AMBIGUOUS


def codex_hash8(account_id: str) -> str:
    """The 8 hex chars CPA puts in Codex file names: sha256(chatgpt_account_id)[:8] (codex/filename.go)."""
    return hashlib.sha256(account_id.strip().encode()).hexdigest()[:8]


_CODEX_HASHED = re.compile(r"^codex-(?P<hash8>[0-9a-f]{8})-(?P<rest>.+@.+)\.json$")
_KIMI_NAME = re.compile(r"^kimi-(?P<ms>\d{10,16})\.json$")


def codex_name_hash8(name: str) -> str | None:
    """`codex-1a2b3c4d-u@x.com-plus.json` → `1a2b3c4d`; legacy `codex-u@x.com-plus.json` → None."""
    match = _CODEX_HASHED.match(name)
    return match.group("hash8") if match else None


def kimi_name_time(name: str) -> datetime | None:
    """`kimi-<unixms>.json` → that moment (CPA names every Kimi login after its own clock, §4.4)."""
    match = _KIMI_NAME.match(name)
    if not match:
        return None
    try:
        return datetime.fromtimestamp(int(match.group("ms")) / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _same_email(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and a.strip().casefold() == b.strip().casefold()  # type: ignore[union-attr]


def _newer(value: datetime | None, since: datetime) -> bool:
    return value is not None and value >= since


def written_since(entry: Credential, since: datetime) -> bool:
    """Did something write this file after `since`? `modtime` is the file's mtime, `last_refresh` the
    token time CPA loaded (auth_files.go buildAuthFileEntryLocked).

    A Kimi login always writes a new `kimi-<unixms>.json` (§4.4), so for such a name only the time in the
    name counts: CPA's auto-refresh rewrites another Kimi account's file (fresh mtime and last_refresh)
    at any moment, and that file must not become a second candidate.
    """
    if entry.provider == "kimi":
        named_at = kimi_name_time(entry.name)
        if named_at is not None:
            return named_at >= since
    # Only the file's mtime: `last_refresh` is CPA's runtime LastRefreshedAt, which an in-place re-login
    # does not move (copied on reload, service_auth.go prepareCoreAuthForModelRegistration) and a routine
    # background refresh does (contract §13). It cannot tell a login from a refresh.
    return _newer(entry.modtime, since)


def name_carries_email(name: str, email: str | None) -> bool:
    """Does a CPA file name embed this e-mail as one of its dash-separated parts (§4.4 naming)?

    `codex-[<hash8>-]<email>[-<plan>].json`, `claude-<email>.json`, `antigravity-<email>.json`,
    `xai-<email>.json`: the e-mail sits after a dash and before a dash or `.json`.
    """
    if not email:
        return False
    lowered, mail = name.casefold(), email.strip().casefold()
    return f"-{mail}-" in lowered or lowered.endswith(f"-{mail}.json")


def same_account(old: OldCredential, entry: Credential) -> bool:
    """Is `entry` (a different file name) a login of the same account as `old`? Provider rules of §4.4."""
    if entry.provider != old.provider:
        return False
    if not old.email and name_carries_email(old.name, entry.email):
        # The old file is no longer listed (deleted meanwhile): its name still says whose it was.
        old = OldCredential(old.name, old.auth_index, old.provider, entry.email, old.account_id)
    provider = old.provider
    if provider == "kimi":
        # Kimi files carry no account identity at all; "named after the login started" is all we have
        # (written_since reads the time in the name, never a refresh's mtime).
        return True
    if provider == "codex":
        if not _same_email(old.email, entry.email):
            return False
        # One e-mail can own several ChatGPT workspaces: the account id (or its hash in the name) decides.
        old_hash = codex_hash8(old.account_id) if old.account_id else codex_name_hash8(old.name)
        new_hash = codex_hash8(entry.account_id) if entry.account_id else codex_name_hash8(entry.name)
        if old_hash and new_hash:
            return old_hash == new_hash
        return True
    if provider == "xai" and not old.email and not entry.email:
        # Without an e-mail CPA names the file after the token's `sub` (xai-<sub>.json): same name only.
        return False
    return _same_email(old.email, entry.email)


def _registered(entry: Credential, same_name: bool, unchanged_for: timedelta) -> bool:
    """Has CPA's watcher loaded the new file into memory? Only then may it be probed or patched (§12, §13).

    What a reload shows (§13): the runtime auth is rebuilt from the file, so `status` is `active` with an
    empty `status_message` (the old failure state is not copied). The raw OAuth record CPA registers at
    once on saving (runtimeAuthSyncHook, sdk/cliproxy/builder.go) has no status yet: not loaded. Never
    `last_refresh`: a re-login in place leaves it as it was.
    """
    if entry.status != "active" or entry.disabled or entry.status_message:
        return False
    if not same_name:
        # A new name is listed only once registered, and `active` only once the watcher loaded the file.
        return True
    # Same name: `modtime` (os.Stat) moves as soon as the file is written (auth_files.go
    # buildAuthFileEntryLocked); the entry must also have looked like this for a few seconds.
    return unchanged_for >= SAME_NAME_SETTLE


def find_replacement(
    old: OldCredential,
    listing: Sequence[Credential],
    since: datetime,
    *,
    expected_name: str | None = None,
    unchanged_for: timedelta = timedelta(0),
) -> Replacement:
    """Find the credential a login saved for `old` in the current `listing` of the same CPA.

    `since` is when the login started (files written before it are not candidates). `expected_name` is the
    name CPA gave the file when it said so itself (Vertex import response). `unchanged_for` is how long
    the single candidate has looked exactly like this to the caller (for the same-name settle rule).
    """
    if expected_name:
        named = [e for e in listing if e.name == expected_name]
        if not named or (named[0].name == old.name and not written_since(named[0], since)):
            return Replacement(MatchKind.WAITING, f"CPA has not registered {expected_name} yet")
        return _one(old, named[0], unchanged_for)

    candidates: list[Credential] = []
    in_place: Credential | None = None
    for entry in listing:
        if entry.name == old.name:
            # Same file name: overwritten in place (auth_index is stable per path, §2.1). A different
            # auth_index under the old name means somebody replaced the file: not our login's doing.
            if entry.auth_index == old.auth_index and written_since(entry, since):
                in_place = entry
            continue
        if written_since(entry, since) and same_account(old, entry):
            candidates.append(entry)
    if in_place is not None and (not candidates or (in_place.status == "active" and not in_place.disabled)):
        # One login writes one file. When it landed under a new name, the old file still shows the
        # failure CPA recorded (a reload would have reset it to active, §2.3 C): it is not a candidate,
        # even if its mtime falls inside the clock allowance.
        candidates.append(in_place)

    if not candidates:
        return Replacement(MatchKind.WAITING, "no file written by this login is visible in CPA yet")
    if len(candidates) > 1:
        names = tuple(sorted(c.name for c in candidates))
        return Replacement(
            MatchKind.AMBIGUOUS,
            f"{len(names)} files could be the new credential ({', '.join(names)}); "
            "reauthd does not guess which one replaces the old file",
            candidates=names,
        )
    return _one(old, candidates[0], unchanged_for)


def _one(old: OldCredential, entry: Credential, unchanged_for: timedelta) -> Replacement:
    same_name = entry.name == old.name and entry.auth_index == old.auth_index
    if _registered(entry, same_name, unchanged_for):
        how = "overwritten in place" if same_name else "saved as a new file"
        return Replacement(MatchKind.FOUND, f"{entry.name} ({how})", entry, same_name)
    if entry.disabled or entry.status == "disabled":
        why = "is disabled in CPA"
    elif not entry.status:
        why = "was just saved; waiting for CPA's watcher to load it"
    elif entry.status != "active" or entry.status_message:
        why = f"still shows status {entry.status} (CPA's watcher has not reloaded it)"
    else:
        why = "was just written; waiting for CPA's watcher to load it"
    return Replacement(MatchKind.REGISTERING, f"{entry.name} {why}", entry, same_name)
