"""Operator notices (issue 14): a Codex plan lapse sent once with a frozen clock, deferred by quiet hours,
never re-sent after a restart, routed by provider/CPA plus escalation; accounts held twice told once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from apprise.decorators import notify as apprise_plugin

from reauthd.config import Settings
from reauthd.core.accounts import review_plans
from reauthd.core.model import Credential
from reauthd.detect.review import review
from reauthd.notify import notices
from reauthd.notify.notifier import Notifier
from reauthd.notify.outbox import Outbox
from reauthd.store import DeliveryKind, DeliveryStatus, Store

SENT: list[tuple[str, str, str]] = []  # (channel schema, title, body)
UNTIL = datetime(2026, 12, 10, 12, 0, tzinfo=UTC)


@apprise_plugin(on="rdnoticeteam")
def _team(body: str, title: str, *args: Any, **kwargs: Any) -> bool:
    SENT.append(("team", title, body))
    return True


@apprise_plugin(on="rdnoticecodex")
def _codex(body: str, title: str, *args: Any, **kwargs: Any) -> bool:
    SENT.append(("codex", title, body))
    return True


@apprise_plugin(on="rdnoticeclaude")
def _claude(body: str, title: str, *args: Any, **kwargs: Any) -> bool:
    SENT.append(("claude", title, body))
    return True


@apprise_plugin(on="rdnoticeops")
def _ops(body: str, title: str, *args: Any, **kwargs: Any) -> bool:
    SENT.append(("ops", title, body))
    return True


def settings_for(tmp_path: Path, **notify: Any) -> Settings:
    base: dict[str, Any] = {
        "urls": ["rdnoticeteam://all"],
        "routes": [
            {"name": "codex", "providers": ["codex"], "urls": ["rdnoticecodex://c"]},
            {"name": "claude", "providers": ["claude"], "urls": ["rdnoticeclaude://c"]},
        ],
        "escalation": {"urls": ["rdnoticeops://o"]},
    }
    return Settings(
        state={"path": tmp_path / "state.db"},
        cpa=[{"name": "main", "base_url": "http://127.0.0.1:9", "management_key": "k" * 16}],
        notify={**base, **notify},
        web={"public_url": "https://reauthd.example.org"},
    )


def codex(
    name: str = "codex-1a2b3c4d-alice@example.com-plus.json", cpa: str = "main", **kw: Any
) -> Credential:
    fields: dict[str, Any] = {
        "cpa": cpa,
        "name": name,
        "auth_index": f"idx-{cpa}-{name}"[:40],
        "provider": "codex",
        "status": "active",
        "email": "alice@example.com",
        "account_id": "acct-1",
        "plan_type": "plus",
        "subscription_until": UNTIL,
        **kw,
    }
    return Credential(**fields)


async def _tick(store: Store, settings: Settings, now: datetime, listing: list[Credential]) -> None:
    """What the daemon does after a listing: review, post, flush (a fresh outbox each time, as after a
    restart)."""
    known = store.get_kv("accounts.plans", {})
    result = review(
        listing, [], now, warning_days=settings.detect.subscription_warning_days, known_plans=known
    )
    with store.transaction():
        store.put_kv("accounts.plans", result.plans, now)
    notices.post(store, settings.notify, result.notices, now)
    await Outbox(store, settings, Notifier(settings.notify)).flush(now)


async def test_lapse_notice_sent_once_across_restarts(tmp_path: Path) -> None:
    SENT.clear()
    settings = settings_for(tmp_path)
    assert settings.detect.subscription_warning_days == 3
    listing = [codex()]
    store = Store.open(settings.state.path)
    try:
        await _tick(store, settings, UNTIL - timedelta(days=4), listing)  # too early
        assert SENT == []
        await _tick(store, settings, UNTIL - timedelta(days=3), listing)
        await _tick(store, settings, UNTIL - timedelta(days=2), listing)  # same notice: not again
    finally:
        store.close()
    # each URL once: the team route, the codex route and the operator's escalation route
    assert sorted(channel for channel, _, _ in SENT) == ["codex", "ops", "team"]
    title, body = SENT[0][1], SENT[0][2]
    assert title.startswith("Plan ends soon: a***@example.com")
    assert "2026-12-10 12:00 UTC" in body and "alice@" not in body
    SENT.clear()
    store = Store.open(settings.state.path)  # a restart: the state file is all that is left
    try:
        await _tick(store, settings, UNTIL - timedelta(days=1), listing)
    finally:
        store.close()
    assert SENT == []


async def test_lapse_notice_waits_out_quiet_hours(tmp_path: Path) -> None:
    SENT.clear()
    settings = settings_for(tmp_path, quiet_hours={"start": "22:00", "end": "07:00"})
    night = datetime(2026, 12, 7, 23, 0, tzinfo=UTC)  # inside the window and inside quiet hours
    store = Store.open(settings.state.path)
    try:
        await _tick(store, settings, night, [codex()])
        assert SENT == []
        rows = store.list_deliveries(kinds=[DeliveryKind.NOTICE])
        assert len(rows) == 3 and all(r.status is DeliveryStatus.PENDING for r in rows)
        await _tick(store, settings, night + timedelta(hours=8, minutes=1), [codex()])
        assert len(SENT) == 3
        assert all(
            r.status is DeliveryStatus.SENT for r in store.list_deliveries(kinds=[DeliveryKind.NOTICE])
        )
    finally:
        store.close()


async def test_plan_change_told_once(tmp_path: Path) -> None:
    SENT.clear()
    settings = settings_for(tmp_path)
    now = UNTIL - timedelta(days=20)  # far from the lapse
    store = Store.open(settings.state.path)
    try:
        await _tick(store, settings, now, [codex()])
        assert SENT == []  # first sight: recorded only
        pro = codex("codex-1a2b3c4d-alice@example.com-pro.json", plan_type="pro", modtime=now)
        await _tick(store, settings, now + timedelta(hours=1), [codex(modtime=now - timedelta(days=1)), pro])
        await _tick(store, settings, now + timedelta(hours=2), [pro])
    finally:
        store.close()
    changes = [body for _, title, body in SENT if title.startswith("Plan changed")]
    assert len(changes) == 3 and all("from plus to pro" in body for body in changes)
    # while the old file is still listed the account has two holders: that is told too, once
    assert len([t for _, t, _ in SENT if t.startswith("One account, 2 holders")]) == 3
    assert len(SENT) == 6


async def test_account_held_twice_told_once_with_both_files_and_cpas(tmp_path: Path) -> None:
    SENT.clear()
    settings = settings_for(tmp_path)
    claude_a = Credential(
        "main", "claude-bob@example.com.json", "i1", "claude", "active", email="bob@example.com"
    )
    claude_b = Credential(
        "backup", "claude-bob@example.com.json", "i2", "claude", "active", email="bob@example.com"
    )
    store = Store.open(settings.state.path)
    try:
        for minutes in (0, 1):
            await _tick(store, settings, UNTIL + timedelta(minutes=minutes), [claude_a, claude_b])
    finally:
        store.close()
    assert sorted(channel for channel, _, _ in SENT) == ["claude", "ops", "team"]
    body = SENT[0][2]
    assert "claude-b***@example.com.json on CPA main" in body
    assert "claude-b***@example.com.json on CPA backup" in body
    assert "bob@" not in body


def test_lapse_window_follows_the_setting(tmp_path: Path) -> None:
    settings = Settings(
        state={"path": tmp_path / "s.db"},
        cpa=[{"name": "main", "base_url": "http://127.0.0.1:9", "management_key": "k" * 16}],
        detect={"subscription_warning_days": 7},
    )
    days = settings.detect.subscription_warning_days
    assert review_plans([codex()], UNTIL - timedelta(days=6), days, {}).notices
    assert not review_plans([codex()], UNTIL - timedelta(days=6), 3, {}).notices


async def test_many_notices_of_one_kind_are_one_digest_each_told_once(tmp_path: Path) -> None:
    """A billing cycle that ends 60 Codex plans on one day is one message per channel, not 60."""
    SENT.clear()
    settings = settings_for(tmp_path, routes=[], escalation=None)
    listing = [
        codex(f"codex-{i:02d}.json", email=f"user{i:02d}@example.com", account_id=f"acct-{i}")
        for i in range(60)
    ]
    store = Store.open(settings.state.path)
    try:
        await _tick(store, settings, UNTIL - timedelta(days=1), listing)
        await _tick(store, settings, UNTIL - timedelta(hours=20), listing)
        assert len(notices.recent(store.kv_prefix)) == 60  # each recorded on its own
    finally:
        store.close()
    assert len(SENT) == 1
    title, body = SENT[0][1], SENT[0][2]
    assert title == "60 notices: Codex plans ending soon"
    assert sum(line.startswith("- ") for line in body.splitlines()) == notices.DIGEST_ITEMS + 1
    assert "and 10 more" in body
    assert "user00@" not in body and "u***@example.com" in body
