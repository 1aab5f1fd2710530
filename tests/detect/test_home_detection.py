"""The Home adapter (reauthd/cpa/home.py) and Home detection (reauthd/detect/home.py) against the Home simulator:
listing by UUID, Home's auto-disable read as a revocation, failed request events polled into the engine, and
detection → task → notification end to end (issue 15 point 3)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reauthd.core.model import VerdictKind
from reauthd.cpa.errors import MalformedResponse
from reauthd.cpa.home import HomeClient, cpa_shaped_entry
from reauthd.cpa.kind import FoundKind, KindMismatch
from reauthd.detect.engine import DetectionEngine
from reauthd.detect.home import HomeEventPoller
from reauthd.notify.notifier import Notifier
from reauthd.sim import SimServer
from reauthd.sim.home import HomeSimServer, listing_entry
from reauthd.store import Store
from reauthd.tasks.service import TaskService
from tests.cpa.conftest import FAST_RETRY
from tests.tasks.test_service import SENT, settings_for

KEY = "sim-key"


def entry(**over: Any) -> dict[str, Any]:
    uid = "3f0c8a52-1b7e-4f0a-9a51-2f4b1c9d7e10"
    base = {"id": uid, "auth_index": uid, "name": "codex-u@x.com.json", "file_name": "codex-u@x.com.json",
            "type": "codex", "provider": "codex", "status": "active", "status_message": "", "disabled": False,
            "unavailable": False, "source": "db", "modtime": "2026-08-05T13:06:00Z"}  # fmt: skip
    return base | over


def test_home_auto_disable_reads_as_cpas_unauthorized_and_an_operator_disable_stays() -> None:
    auto = cpa_shaped_entry(
        entry(status="disabled", status_message="unauthorized", disabled=True, unavailable=True)
    )
    assert (auto["status"], auto["status_message"], auto["disabled"]) == ("error", "unauthorized", False)
    assert "unavailable" not in auto  # persisted, possibly stale for an error row
    by_hand = cpa_shaped_entry(
        entry(status="disabled", status_message="disabled via management API", disabled=True)
    )
    assert (by_hand["status"], by_hand["disabled"]) == ("disabled", True)
    for shaped in (auto, by_hand):
        assert shaped["name"] == shaped["auth_index"] == entry()["id"]  # identity by UUID
        assert shaped["display_name"] == "codex-u@x.com.json"
        assert "modtime" not in shaped  # "row updated", not a new login


async def test_listing_by_uuid_and_client_side_filters() -> None:
    async with HomeSimServer(KEY) as home, HomeClient("main", home.base_url, KEY, retry=FAST_RETRY) as client:
        a = home.state.add_credential("codex", "u@x.com")
        b = home.state.add_credential("codex", "u@x.com")  # the same name after a re-login
        files = await client.list_auth_files()
        assert sorted(f.name for f in files) == sorted([a.id, b.id])
        assert [f.name for f in await client.list_auth_files(auth_index=b.id)] == [b.id]
        assert client.kind is FoundKind.HOME
        assert (await client.capabilities())["server_info"]["home_version"] == "v1.0.67-sim"


async def test_writes_go_by_id_and_a_lost_status_write_is_caught() -> None:
    async with HomeSimServer(KEY) as home, HomeClient("main", home.base_url, KEY, retry=FAST_RETRY) as client:
        old = home.state.add_credential("claude", "u@x.com")
        new = home.state.add_credential("claude", "u@x.com")
        await client.patch_fields(new.id, {"note": "copied"})
        assert new.metadata["note"] == "copied" and "note" not in old.metadata
        await client.set_disabled(old.id, True)
        assert old.disabled and not new.disabled
        home.state.lost_status_writes = 1
        with pytest.raises(MalformedResponse, match="did not keep the change"):
            await client.set_disabled(old.id, False)
        await client.delete_auth_file(old.id)
        assert [f.name for f in await client.list_auth_files()] == [new.id]
        assert b'"uuid"' in await client.download_auth_file(new.id)


async def test_the_home_adapter_refuses_a_plain_cpa() -> None:
    async with SimServer(KEY) as sim, HomeClient("main", sim.base_url, KEY, retry=FAST_RETRY) as client:
        with pytest.raises(KindMismatch, match="answers as a plain CPA"):
            await client.list_auth_files()


async def test_failed_events_are_paged_in_order() -> None:
    async with HomeSimServer(KEY) as home, HomeClient("main", home.base_url, KEY, retry=FAST_RETRY) as client:
        row = home.state.add_credential("codex", "u@x.com")
        start = home.state.now() - timedelta(seconds=1)
        for i in range(450):
            home.state.record_result(row, 401 if i % 2 else 500, f"failure {i}")
            home.state.clock.advance(0.001)
        home.state.record_result(row, 200)
        events = await client.failed_request_events(start)
    assert len(events) == 450 and [e.body for e in events[:2]] == ["failure 0", "failure 1"]
    assert all(e.credential_id == row.id for e in events)
    paths = [p for _, p, _ in home.state.requests if p.endswith("/request-events")]
    assert len(paths) == 3  # 200 + 200 + 50


async def test_detection_to_notification_against_home(tmp_path: Path) -> None:
    """A Home-disabled credential (dead refresh token) and a node's 401 both reach a person."""
    SENT.clear()
    settings = settings_for(tmp_path)
    store = Store.open(settings.state.path)
    service = TaskService(store, settings, Notifier(settings.notify))
    async with HomeSimServer(KEY) as home, HomeClient("main", home.base_url, KEY, retry=FAST_RETRY) as client:
        dead = home.state.add_credential("codex", "dead@example.com")
        failing = home.state.add_credential("claude", "failing@example.com")
        home.state.add_credential("codex", "fine@example.com")
        engine = DetectionEngine({"main": client}, on_confirmed=service.on_confirmed)
        poller = HomeEventPoller("main", client, engine)
        try:
            await engine.cycle(wait_for_probes=True)
            assert await poller.poll_once() == 0
            started = time.monotonic()
            home.state.refresh_failed_terminally(dead)  # Home disables it itself: disabled + "unauthorized"
            home.state.record_result(failing, 401, '{"type":"error","error":{"type":"authentication_error",'
                                     '"message":"OAuth token has been revoked"}}')  # fmt: skip
            failing.upstream_accepts = False
            assert await poller.poll_once() == 1  # the node's 401, as the CPA errors channel would carry it
            assert await poller.poll_once() == 0  # deduplicated
            # The event alone, before any listing poll, already moved the verdict (the real-time path).
            now_view = engine.verdict_for("main", failing.id)
            assert now_view is not None and now_view.verdict.kind is VerdictKind.NEEDS_REAUTH
            for _ in range(3):
                await engine.cycle(wait_for_probes=True)
            verdicts = {v.ref.auth_index: v.verdict for v in engine.latest()}
            assert verdicts[dead.id].kind is VerdictKind.NEEDS_REAUTH and verdicts[dead.id].confirmed
            assert verdicts[failing.id].kind is VerdictKind.NEEDS_REAUTH and verdicts[failing.id].confirmed
            await service.flush_notifications(datetime.now(UTC) + timedelta(seconds=60))
            elapsed = time.monotonic() - started
        finally:
            await engine.aclose()
            store.close()
    assert len(SENT) == 1 and "2 accounts" in SENT[0]["title"]
    body = SENT[0]["body"]
    assert "d***@example.com" in body and "f***@example.com" in body
    assert elapsed < 2.0, f"detection to message took {elapsed:.2f} s beyond the poll itself"


def test_the_sim_listing_entry_round_trips_through_the_adapter() -> None:
    from reauthd.sim.clock import SimClock
    from reauthd.sim.home import HomeSimState

    state = HomeSimState(KEY, SimClock())
    row = state.add_credential("xai", "u@x.com")
    state.revoke(row)
    shaped = cpa_shaped_entry(listing_entry(row))
    assert (shaped["status"], shaped["status_message"], shaped["disabled"]) == (
        "error",
        "unauthorized",
        False,
    )


async def test_a_login_through_home_writes_a_new_row_that_is_found_by_id() -> None:
    from urllib.parse import parse_qs, urlsplit

    from reauthd.cpa.errors import FeatureMissing
    from reauthd.sim.home import code_for

    async with HomeSimServer(KEY) as home, HomeClient("main", home.base_url, KEY, retry=FAST_RETRY) as client:
        old = home.state.add_credential("claude", "u@x.com")
        home.state.add_credential("claude", "other@x.com")
        before = {f.auth_index for f in await client.list_auth_files()}
        started = datetime.now(UTC)
        start = await client.auth_url("claude", is_webui=True)  # is_webui means nothing to Home
        assert start.state.startswith("cla-") and start.flow == "callback"
        redirect = parse_qs(urlsplit(start.url).query)["redirect_uri"][0]
        # The person pastes the localhost address nothing listens on; the callback carries the key.
        await client.post_oauth_callback(f"{redirect}?code={code_for('u@x.com')}&state={start.state}")
        status = await client.get_auth_status(start.state)
        for _ in range(50):
            if status.status != "wait":
                break
            await asyncio.sleep(0.05)
            status = await client.get_auth_status(start.state)
        assert status.status == "ok"
        new_id = await client.find_login_credential("claude", "u@x.com", before, started)
        assert new_id is not None and new_id not in (old.id,) and home.state.rows[new_id].name == old.name
        # A second, unrelated login of the same account makes the answer ambiguous: no guess.
        second = home.state.add_credential("claude", "u@x.com")
        assert second.id != new_id
        assert await client.find_login_credential("claude", "u@x.com", before, started) is None
        kimi = await client.auth_url("kimi")
        assert kimi.flow == "device" and kimi.user_code is None
        xai = await client.auth_url("grok")
        assert parse_qs(urlsplit(xai.url).query)["redirect_uri"] == ["http://127.0.0.1:56121/callback"]
        with pytest.raises(FeatureMissing):
            await client.cancel_oauth_session(start.state)
    assert all(status != 401 for _, _, status in home.state.requests)  # the key went with every call


def test_the_event_position_is_restored_at_most_max_replay_back() -> None:
    from reauthd.detect.home import MAX_REPLAY

    now = datetime(2026, 12, 4, 15, 0, tzinfo=UTC)
    client = HomeClient("main", "http://127.0.0.1:9", KEY)
    engine = DetectionEngine({"main": client})
    poller = HomeEventPoller("main", client, engine, clock=lambda: now)
    recent = {"cursor": (now - timedelta(minutes=5)).isoformat(), "ids": ["evt_1", 7]}
    assert poller.restore_position(recent)
    assert poller.export_position() == {"cursor": (now - timedelta(minutes=5)).isoformat(), "ids": ["evt_1"]}
    assert poller.restore_position({"cursor": (now - timedelta(days=3)).isoformat(), "ids": ["evt_2"]})
    assert poller.export_position() == {"cursor": (now - MAX_REPLAY).isoformat(), "ids": []}
    for bad in (None, "x", {"cursor": "soon"}, {"cursor": "2026-12-04T14:00:00"},
                {"cursor": (now + timedelta(minutes=1)).isoformat()}):  # fmt: skip
        assert not poller.restore_position(bad)
    assert poller.cursor == now - MAX_REPLAY  # a refused value changes nothing


async def test_a_home_client_never_opens_the_errors_channel_even_before_its_first_answer() -> None:
    from reauthd.cpa.errors import FeatureMissing
    from reauthd.cpa.errorstream import ErrorStream
    from tests.support.servers import free_port

    async with HomeClient("main", f"http://127.0.0.1:{free_port()}", KEY, retry=FAST_RETRY) as client:
        assert client.kind is FoundKind.UNKNOWN  # nothing answered yet
        with pytest.raises(FeatureMissing, match="a Home has none"):
            async for _ in ErrorStream(client).events():
                pass
