"""Accounts held twice and Codex plan notices (issue 14 items 2 and 3): pure functions, frozen clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from reauthd.core.accounts import account_key, duplicate_holders, review_plans
from reauthd.core.model import Credential

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def cred(
    name: str,
    *,
    cpa: str = "main",
    provider: str = "codex",
    email: str | None = "alice@example.com",
    account_id: str | None = "acct-1",
    plan: str | None = "plus",
    until: datetime | None = None,
    disabled: bool = False,
    modtime: datetime | None = None,
) -> Credential:
    return Credential(
        cpa=cpa,
        name=name,
        auth_index=f"idx-{cpa}-{name}",
        provider=provider,
        status="active",
        email=email,
        account_id=account_id if provider == "codex" else None,
        plan_type=plan if provider == "codex" else None,
        subscription_until=until,
        disabled=disabled,
        modtime=modtime,
    )


def test_one_account_in_one_cpa_and_across_cpas() -> None:
    within = [cred("codex-a.json"), cred("codex-a-copy.json")]
    groups = duplicate_holders(within)
    assert len(groups) == 1 and not groups[0].cross_cpa
    assert [h.name for h in groups[0].holders] == ["codex-a-copy.json", "codex-a.json"]
    across = duplicate_holders([cred("codex-a.json", cpa="main"), cred("codex-a.json", cpa="backup")])
    assert len(across) == 1 and across[0].cross_cpa
    assert across[0].account == "a***@example.com"
    assert across[0].others("main", "codex-a.json") == ["codex-a.json on CPA backup"]


def test_codex_account_is_workspace_plus_email() -> None:
    # one e-mail in two workspaces, and two people in one workspace: different accounts
    assert duplicate_holders([cred("a.json", account_id="ws-1"), cred("b.json", account_id="ws-2")]) == []
    assert duplicate_holders([cred("a.json"), cred("b.json", email="bob@example.com")]) == []
    # e-mail case does not make a new account
    assert len(duplicate_holders([cred("a.json"), cred("b.json", email="Alice@Example.com")])) == 1


def test_other_providers_by_email_and_provider() -> None:
    claude = [cred("claude-a.json", provider="claude"), cred("claude-a.json", provider="claude", cpa="b")]
    assert len(duplicate_holders(claude)) == 1
    mixed = [cred("claude-a.json", provider="claude"), cred("xai-a.json", provider="xai")]
    assert duplicate_holders(mixed) == []
    kimi = [
        cred("kimi-1.json", provider="kimi", email=None),
        cred("kimi-2.json", provider="kimi", email=None),
    ]
    assert duplicate_holders(kimi) == [] and account_key(kimi[0]) is None


def test_disabled_and_excluded_files_do_not_count() -> None:
    assert duplicate_holders([cred("a.json"), cred("b.json", disabled=True)]) == []
    assert duplicate_holders([cred("a.json"), cred("b.json")], exclude={("main", "b.json")}) == []


def test_group_key_is_stable_and_changes_with_a_new_holder() -> None:
    two = duplicate_holders([cred("a.json"), cred("b.json")])[0]
    again = duplicate_holders([cred("b.json"), cred("a.json")])[0]
    three = duplicate_holders([cred("a.json"), cred("b.json"), cred("c.json", cpa="x")])[0]
    assert two.key == again.key != three.key


def test_lapse_notice_inside_the_warning_window_only() -> None:
    until = NOW + timedelta(days=10)
    creds = [cred("a.json", until=until)]
    assert review_plans(creds, until - timedelta(days=3, seconds=1), 3, {}).notices == []
    inside = review_plans(creds, until - timedelta(days=3), 3, {}).notices
    assert [n.kind for n in inside] == ["plan_lapse"]
    assert "2026-12-14 12:00 UTC" in inside[0].text and "alice@" not in inside[0].text + inside[0].title
    later = review_plans(creds, until - timedelta(hours=1), 3, {}).notices
    assert [n.key for n in later] == [inside[0].key]  # the same notice: the caller sends it once
    assert review_plans(creds, until, 3, {}).notices == []  # ended: the failure itself is the news now
    assert review_plans(creds, until - timedelta(days=1), 0, {}).notices == []  # 0 turns it off
    renewed = review_plans(
        [cred("a.json", until=until + timedelta(days=30))], until + timedelta(days=28), 3, {}
    )
    assert renewed.notices[0].key != inside[0].key  # a renewed plan lapsing later is news again


def test_plan_change_is_one_notice_and_first_sight_is_none() -> None:
    first = review_plans([cred("a.json", plan="plus")], NOW, 3, {})
    assert first.notices == [] and list(first.plans.values()) == ["plus"]
    same = review_plans([cred("a.json", plan="plus")], NOW, 3, first.plans)
    assert same.notices == []
    # CPA writes a new file name for the new plan; the old file may still be listed: the newer one speaks
    changed = review_plans(
        [
            cred("codex-x-alice@example.com-plus.json", plan="plus", modtime=NOW - timedelta(days=9)),
            cred("codex-x-alice@example.com-pro.json", plan="pro", modtime=NOW),
        ],
        NOW,
        3,
        first.plans,
    )
    assert [n.kind for n in changed.notices] == ["plan_change"]
    assert "from plus to pro" in changed.notices[0].text
    assert list(changed.plans.values()) == ["pro"]
    assert review_plans([cred("a.json", plan="pro")], NOW, 3, changed.plans).notices == []


def test_only_codex_has_plans() -> None:
    review = review_plans(
        [cred("claude-a.json", provider="claude", until=NOW + timedelta(days=1))], NOW, 3, {}
    )
    assert review.notices == [] and review.plans == {}
