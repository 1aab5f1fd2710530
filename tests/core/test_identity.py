"""Identity matching: which file a login saved for an old credential (contract §4.4, §12), as tables."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from reauthd.core.identity import (
    SAME_NAME_SETTLE,
    MatchKind,
    OldCredential,
    codex_hash8,
    codex_name_hash8,
    find_replacement,
    kimi_name_time,
    same_account,
)
from reauthd.core.model import Credential

SINCE = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
BEFORE = SINCE - timedelta(days=3)
AFTER = SINCE + timedelta(seconds=20)
ACCOUNT = "acct-1111"
OTHER_ACCOUNT = "acct-2222"
H = codex_hash8(ACCOUNT)


def cred(name: str, provider: str = "codex", **kw: object) -> Credential:
    base: dict[str, object] = {
        "cpa": "main",
        "name": name,
        "auth_index": f"idx-{name}",
        "provider": provider,
        "status": "active",
        "modtime": BEFORE,
    }
    base.update(kw)
    return Credential(**base)  # type: ignore[arg-type]


LEGACY = cred(
    "codex-u@x.com-plus.json", status="error", email="u@x.com", account_id=ACCOUNT, plan_type="plus"
)
OLD_LEGACY = OldCredential(LEGACY.name, LEGACY.auth_index, "codex", "u@x.com", ACCOUNT)
HASHED_NEW = cred(f"codex-{H}-u@x.com-plus.json", email="U@X.com", account_id=ACCOUNT, modtime=AFTER)


def test_codex_hash8_matches_cpa_filename_rule() -> None:
    # sha256("acct-1111")[:8], as internal/auth/codex/filename.go builds it.
    assert len(H) == 8
    assert codex_name_hash8(f"codex-{H}-u@x.com-plus.json") == H
    assert codex_name_hash8("codex-u@x.com-plus.json") is None


def test_kimi_name_time() -> None:
    assert kimi_name_time("kimi-1795780800000.json") == datetime.fromtimestamp(1795780800, tz=UTC)
    assert kimi_name_time("kimi-abc.json") is None
    assert kimi_name_time("codex-1795780800000.json") is None


@pytest.mark.parametrize(
    ("old", "entry", "expected"),
    [
        # Codex: same e-mail and account → same account, whatever the name looks like.
        (OLD_LEGACY, HASHED_NEW, True),
        # Same e-mail, another workspace (account id) → another account.
        (OLD_LEGACY, replace(HASHED_NEW, account_id=OTHER_ACCOUNT), False),
        # Listing without claims: the hash in the name decides.
        (
            OldCredential("codex-u@x.com-plus.json", "i", "codex", "u@x.com", ACCOUNT),
            replace(HASHED_NEW, account_id=None),
            True,
        ),
        (
            OldCredential("codex-u@x.com-plus.json", "i", "codex", "u@x.com", OTHER_ACCOUNT),
            replace(HASHED_NEW, account_id=None),
            False,
        ),
        # Plan change: hashed old name, hashed new name with another plan.
        (
            OldCredential(f"codex-{H}-u@x.com-plus.json", "i", "codex", "u@x.com", None),
            cred(f"codex-{H}-u@x.com-pro.json", email="u@x.com", account_id=None),
            True,
        ),
        # Nothing but e-mails known: e-mail decides.
        (
            OldCredential("codex-u@x.com.json", "i", "codex", "u@x.com", None),
            cred("codex-u@x.com-team.json", email="u@x.com"),
            True,
        ),
        (OLD_LEGACY, replace(HASHED_NEW, email="v@x.com"), False),
        (OLD_LEGACY, replace(HASHED_NEW, provider="claude"), False),
        # xAI: e-mail, or without e-mails nothing (the name carries `sub`: same name only).
        (
            OldCredential("xai-a@b.c.json", "i", "xai", "a@b.c"),
            cred("xai-a_b.c.json", "xai", email="a@b.c"),
            True,
        ),
        (OldCredential("xai-sub1.json", "i", "xai"), cred("xai-sub2.json", "xai"), False),
        # Kimi: no identity in the file; any Kimi file qualifies (time decides elsewhere).
        (OldCredential("kimi-1.json", "i", "kimi"), cred("kimi-2.json", "kimi"), True),
        # Claude / antigravity / vertex: e-mail.
        (
            OldCredential("claude-a@b.c.json", "i", "claude", "a@b.c"),
            cred("claude-x.json", "claude", email="a@b.c"),
            True,
        ),
        (
            OldCredential("antigravity.json", "i", "antigravity"),
            cred("antigravity-2.json", "antigravity"),
            False,
        ),
        # The old file is gone from the listing (no e-mail known): its name still says whose it was.
        (OldCredential("codex-u@x.com-plus.json", "i", "codex"), replace(HASHED_NEW, account_id=None), True),
        (OldCredential(f"codex-{H}-u@x.com-plus.json", "i", "codex"), HASHED_NEW, True),
        (
            OldCredential("claude-a@b.c.json", "i", "claude"),
            cred("claude-z.json", "claude", email="a@b.c"),
            True,
        ),
        # ... as a whole part of the name, not a substring of a longer address.
        (OldCredential("codex-u@x.com-plus.json", "i", "codex"), replace(HASHED_NEW, email="u@x.co"), False),
        (OldCredential("codex-au@x.com-plus.json", "i", "codex"), HASHED_NEW, False),
        # The name-derived e-mail still needs the workspace to agree.
        (
            OldCredential(f"codex-{H}-u@x.com-plus.json", "i", "codex"),
            replace(HASHED_NEW, account_id=OTHER_ACCOUNT),
            False,
        ),
    ],
)
def test_same_account(old: OldCredential, entry: Credential, expected: bool) -> None:
    assert same_account(old, entry) is expected


def test_same_name_overwritten_in_place_is_found_once_settled() -> None:
    old = OldCredential("claude-a@b.c.json", "idx-claude-a@b.c.json", "claude", "a@b.c")
    entry = cred("claude-a@b.c.json", "claude", email="a@b.c", modtime=AFTER, last_refresh=BEFORE)
    result = find_replacement(old, [entry], SINCE, unchanged_for=SAME_NAME_SETTLE)
    assert result.kind is MatchKind.FOUND
    assert result.same_name
    assert result.credential == entry


@pytest.mark.parametrize(
    ("entry_kw", "unchanged_for", "expected"),
    [
        # Written on disk (stat mtime) but the loaded auth still has the old status: wait (§12).
        ({"modtime": AFTER, "status": "error", "last_refresh": BEFORE}, timedelta(0), MatchKind.REGISTERING),
        (
            {"modtime": AFTER, "status": "error", "last_refresh": BEFORE},
            timedelta(minutes=5),
            MatchKind.REGISTERING,
        ),
        # The raw record runtimeAuthSyncHook registers before the reload has no status (§13): wait.
        ({"modtime": AFTER, "status": ""}, timedelta(minutes=5), MatchKind.REGISTERING),
        # A reload clears the message; an active entry still carrying one is not the reloaded file.
        ({"modtime": AFTER, "status_message": "unauthorized"}, timedelta(minutes=5), MatchKind.REGISTERING),
        # Active, empty message, fresh mtime: settle first, then found.
        ({"modtime": AFTER, "last_refresh": None}, timedelta(0), MatchKind.REGISTERING),
        ({"modtime": AFTER, "last_refresh": None}, SAME_NAME_SETTLE, MatchKind.FOUND),
        # §13: the reload copies the old LastRefreshedAt, so a stale one (CPA refreshed the old token long
        # before the login) says nothing: found once settled (it used to wait until find_timeout).
        ({"modtime": AFTER, "last_refresh": BEFORE}, SAME_NAME_SETTLE, MatchKind.FOUND),
        # Nor does a fresh one (a background refresh) skip the settle.
        ({"modtime": AFTER, "last_refresh": AFTER}, timedelta(0), MatchKind.REGISTERING),
        # Nothing written since the login started: not a candidate at all, even with a fresh refresh time
        # (last_refresh is runtime state, not a write of the file).
        ({"modtime": BEFORE, "last_refresh": BEFORE}, timedelta(minutes=5), MatchKind.WAITING),
        ({"modtime": BEFORE, "last_refresh": AFTER}, timedelta(minutes=5), MatchKind.WAITING),
        # Disabled after re-login? CPA forces disabled=false (§4.4); a disabled one is not ready.
        (
            {"modtime": AFTER, "last_refresh": AFTER, "status": "disabled", "disabled": True},
            timedelta(minutes=5),
            MatchKind.REGISTERING,
        ),
    ],
)
def test_same_name_registration(
    entry_kw: dict[str, object], unchanged_for: timedelta, expected: MatchKind
) -> None:
    old = OldCredential("antigravity-a@b.c.json", "idx-antigravity-a@b.c.json", "antigravity", "a@b.c")
    entry = cred("antigravity-a@b.c.json", "antigravity", email="a@b.c", **entry_kw)
    assert find_replacement(old, [entry], SINCE, unchanged_for=unchanged_for).kind is expected


def test_same_name_with_a_different_auth_index_is_not_ours() -> None:
    old = OldCredential("claude-a@b.c.json", "idx-old", "claude", "a@b.c")
    entry = cred(
        "claude-a@b.c.json",
        "claude",
        email="a@b.c",
        auth_index="idx-other",
        modtime=AFTER,
        last_refresh=AFTER,
    )
    assert find_replacement(old, [entry], SINCE).kind is MatchKind.WAITING


def test_codex_legacy_name_to_new_hashed_file() -> None:
    result = find_replacement(OLD_LEGACY, [LEGACY, HASHED_NEW], SINCE)
    assert result.kind is MatchKind.FOUND
    assert not result.same_name
    assert result.credential == HASHED_NEW


def test_new_name_not_yet_written_waits() -> None:
    assert find_replacement(OLD_LEGACY, [LEGACY], SINCE).kind is MatchKind.WAITING
    # Another file of the same account that nobody wrote since the login started is not a candidate.
    stale = replace(HASHED_NEW, modtime=BEFORE)
    assert find_replacement(OLD_LEGACY, [LEGACY, stale], SINCE).kind is MatchKind.WAITING


def test_two_candidates_are_never_guessed() -> None:
    second = replace(HASHED_NEW, name=f"codex-{H}-u@x.com-pro.json", auth_index="idx-pro")
    result = find_replacement(OLD_LEGACY, [LEGACY, HASHED_NEW, second], SINCE)
    assert result.kind is MatchKind.AMBIGUOUS
    assert result.credential is None
    assert result.candidates == tuple(sorted([HASHED_NEW.name, second.name]))
    assert "does not guess" in result.reason


def test_kimi_new_file_found_by_time_in_its_name() -> None:
    old = OldCredential("kimi-1700000000000.json", "idx-kimi-1700000000000.json", "kimi")
    new_ms = int(AFTER.timestamp() * 1000)
    older_ms = int(BEFORE.timestamp() * 1000)
    listing = [
        cred("kimi-1700000000000.json", "kimi", status="error"),
        cred(f"kimi-{older_ms}.json", "kimi", modtime=BEFORE),  # another Kimi account's older file
        cred(f"kimi-{new_ms}.json", "kimi", modtime=None),
    ]
    result = find_replacement(old, listing, SINCE)
    assert result.kind is MatchKind.FOUND
    assert result.credential is not None and result.credential.name == f"kimi-{new_ms}.json"


def test_another_kimi_file_refreshed_during_the_login_is_no_candidate() -> None:
    # CPA's auto-refresh rewrites another Kimi account's file inside the login window (fresh mtime and
    # last_refresh); its name still carries the time of its own, older login, and only that counts.
    old = OldCredential("kimi-1700000000000.json", "idx-kimi-1700000000000.json", "kimi")
    new_ms = int(AFTER.timestamp() * 1000)
    older_ms = int(BEFORE.timestamp() * 1000)
    refreshed = cred(f"kimi-{older_ms}.json", "kimi", modtime=AFTER, last_refresh=AFTER)
    listing = [
        cred("kimi-1700000000000.json", "kimi", status="error"),
        refreshed,
        cred(f"kimi-{new_ms}.json", "kimi", modtime=AFTER),
    ]
    result = find_replacement(old, listing, SINCE)
    assert result.kind is MatchKind.FOUND
    assert result.credential is not None and result.credential.name == f"kimi-{new_ms}.json"
    # Before the login's own file shows up, the refreshed one is no candidate either.
    assert find_replacement(old, listing[:2], SINCE).kind is MatchKind.WAITING


def test_two_kimi_logins_at_once_are_ambiguous() -> None:
    old = OldCredential("kimi-1.json", "i", "kimi")
    ms = int(AFTER.timestamp() * 1000)
    listing = [cred(f"kimi-{ms}.json", "kimi"), cred(f"kimi-{ms + 5}.json", "kimi")]
    assert find_replacement(old, listing, SINCE).kind is MatchKind.AMBIGUOUS


def test_vertex_expected_name_from_import_response() -> None:
    old = OldCredential("vertex-proj-a.json", "idx-vertex-proj-a.json", "vertex", "sa@proj-a.iam")
    new = cred("vertex-proj-b.json", "vertex", email="sa@proj-b.iam", modtime=AFTER)
    assert find_replacement(old, [], SINCE, expected_name=new.name).kind is MatchKind.WAITING
    found = find_replacement(old, [new], SINCE, expected_name=new.name)
    assert found.kind is MatchKind.FOUND and found.credential == new and not found.same_name
    # Re-import of the same project: same name; only a fresh write counts.
    same = cred("vertex-proj-a.json", "vertex", modtime=BEFORE)
    assert find_replacement(old, [same], SINCE, expected_name=same.name).kind is MatchKind.WAITING
    fresh = replace(same, modtime=AFTER)
    assert (
        find_replacement(old, [fresh], SINCE, expected_name=same.name, unchanged_for=SAME_NAME_SETTLE).kind
        is MatchKind.FOUND
    )


def test_a_new_name_shows_up_only_once_registered_so_it_is_found_at_once() -> None:
    assert find_replacement(OLD_LEGACY, [HASHED_NEW], SINCE).kind is MatchKind.FOUND
    failing = replace(HASHED_NEW, status="error")
    result = find_replacement(OLD_LEGACY, [failing], SINCE)
    assert result.kind is MatchKind.REGISTERING
    assert "status error" in result.reason


def test_the_failing_old_file_is_no_candidate_when_the_login_landed_under_a_new_name() -> None:
    # The old file was written inside the clock allowance (mtime >= since) but still shows CPA's failure:
    # a reload by this login would have reset it to active.
    recent_old = replace(LEGACY, modtime=AFTER)
    result = find_replacement(OLD_LEGACY, [recent_old, HASHED_NEW], SINCE)
    assert result.kind is MatchKind.FOUND and result.credential == HASHED_NEW
    # Both active and fresh: one of them was not written by this login, but which? Never guess.
    both = find_replacement(OLD_LEGACY, [replace(recent_old, status="active"), HASHED_NEW], SINCE)
    assert both.kind is MatchKind.AMBIGUOUS
