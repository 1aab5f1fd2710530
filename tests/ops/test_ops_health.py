"""Health model (pure, fake clock) and the /livez, /readyz, /healthz, /metrics routes over real HTTP."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.applications import Starlette

from reauthd.cpa.client import CPAHealth, HealthState
from reauthd.cpa.errors import (
    FeatureMissing,
    MalformedResponse,
    ManagementBanned,
    ManagementKeyRejected,
    ManagementNotEnabled,
    RemoteManagementDisabled,
    TransientCPAError,
)
from reauthd.ops.health import CPAReachability, Health, health_routes
from reauthd.ops.metrics import Metrics

EP = "/v0/management/auth-files"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def healthy(clock: FakeClock | None = None, cpas: tuple[str, ...] = ("main",)) -> Health:
    health = Health(cpas=cpas, liveness_timeout_s=60, store_check=lambda: True, clock=clock or FakeClock())
    for name in cpas:
        health.cpa_ok(name)
    return health


@pytest.mark.parametrize(
    ("since_beat", "alive"),
    [(0, True), (59.9, True), (60, True), (60.1, False), (3600, False)],
)
def test_liveness_follows_the_heartbeat(since_beat: float, alive: bool) -> None:
    clock = FakeClock()
    health = healthy(clock)
    health.beat()
    clock.now += since_beat
    report = health.live()
    assert report.ok is alive
    if alive:
        assert report.text == "ok"
    else:
        assert report.text.startswith("not live: the main loop has not completed a turn")


def test_liveness_counts_from_construction_until_the_first_beat() -> None:
    clock = FakeClock()
    health = Health(cpas=["main"], liveness_timeout_s=60, clock=clock)
    clock.now += 30
    assert health.live().ok
    clock.now += 31
    assert not health.live().ok
    health.beat()
    assert health.live().ok


@pytest.mark.parametrize(
    ("steps", "alive", "reason"),
    [
        # (seconds between progress marks while working — the heartbeat beats every second meanwhile)
        ([50, 50, 50, 50], True, ""),  # a long tick of steps that each finish in time: alive
        ([299, 299], True, ""),
        ([301], False, "a main-loop step has made no progress for 301 s (limit 300 s)"),  # stuck step
        ([10, 400], False, "a main-loop step has made no progress for 400 s"),
    ],
)
def test_liveness_while_working_follows_progress_not_the_length_of_the_work(
    steps: list[float], alive: bool, reason: str
) -> None:
    clock = FakeClock()
    health = Health(cpas=["main"], liveness_timeout_s=60, step_timeout_s=300, clock=clock)
    with health.working():
        for index, seconds in enumerate(steps):
            for _ in range(int(seconds)):
                clock.now += 1
                health.beat()
            if index < len(steps) - 1:
                health.progress()
        report = health.live()
        assert report.ok is alive
        assert reason in report.text
    assert health.live().ok  # the work ended (finished after all): nothing is in progress any more


def test_no_progress_is_needed_while_idle_but_the_heartbeat_is() -> None:
    clock = FakeClock()
    health = Health(cpas=["main"], liveness_timeout_s=60, step_timeout_s=300, clock=clock)
    for _ in range(1000):
        clock.now += 1
        health.beat()
    assert health.live().ok and health.stalled_s() == 0
    with health.working():
        clock.now += 61  # a blocked event loop: neither heartbeat nor progress
        report = health.live()
    assert not report.ok and report.reasons == (
        "the main loop has not completed a turn for 61 s (limit 60 s)",
    )


async def test_ready_when_store_writable_and_every_cpa_answers() -> None:
    report = await healthy(cpas=("main", "eu")).ready()
    assert report.ok
    assert report.text == "ok"


@pytest.mark.parametrize(
    ("error", "state", "words"),
    [
        (
            TransientCPAError("main", EP, "connection refused", attempts=3),
            CPAReachability.UNREACHABLE,
            "did not answer",
        ),
        (ManagementNotEnabled("main", EP), CPAReachability.UNREACHABLE, "management API turned off"),
        (
            ManagementKeyRejected("main", EP, "invalid management key"),
            CPAReachability.KEY_REFUSED,
            "rejected",
        ),
        (ManagementBanned("main", EP, 1799.0), CPAReachability.KEY_REFUSED, "banned"),
        (RemoteManagementDisabled("main", EP), CPAReachability.KEY_REFUSED, "remote management"),
    ],
)
async def test_cpa_errors_make_reauthd_unready_with_the_reason(error, state, words) -> None:
    health = healthy()
    health.cpa_error("main", error)
    assert health.cpa_states() == {"main": state}
    report = await health.ready()
    assert not report.ok
    assert words in report.text
    health.cpa_ok("main")
    assert (await health.ready()).ok


@pytest.mark.parametrize(
    "error",
    [
        FeatureMissing("main", "/v0/management/kimi-auth-url", "Kimi logins", "6.0.0"),
        MalformedResponse("main", EP, "not JSON"),
    ],
)
async def test_errors_that_prove_cpa_answered_leave_readiness_alone(error) -> None:
    health = healthy()
    health.cpa_error("main", error)
    assert (await health.ready()).ok


@pytest.mark.parametrize(
    ("state", "last_error", "expected", "reason"),
    [
        (HealthState.OK, None, CPAReachability.OK, None),
        (
            HealthState.UNVERIFIED,
            None,
            CPAReachability.UNKNOWN,
            "CPA 'main' has not accepted the management key yet",
        ),
        (
            HealthState.KEY_REJECTED,
            "CPA 'main' rejected the key",
            CPAReachability.KEY_REFUSED,
            "rejected the key",
        ),
        (HealthState.BANNED, None, CPAReachability.KEY_REFUSED, "CPA 'main' refuses the management key"),
        (
            HealthState.UNREACHABLE,
            "CPA 'main' did not answer: timeout",
            CPAReachability.UNREACHABLE,
            "timeout",
        ),
    ],
)
async def test_cpa_client_snapshots_fold_in(state, last_error, expected, reason) -> None:
    health = healthy()
    health.cpa_snapshot(CPAHealth("main", state, None, None, last_error, None))
    assert health.cpa_states() == {"main": expected}
    report = await health.ready()
    if reason is None:
        assert report.ok
    else:
        assert not report.ok
        assert reason in report.text


async def test_unknown_cpa_is_not_ready_until_it_answered() -> None:
    health = Health(cpas=["main"], store_check=lambda: True, clock=FakeClock())
    report = await health.ready()
    assert report.reasons == ("CPA 'main' has not been checked yet",)
    health.watch_cpa("eu")
    health.cpa_ok("main")
    assert not (await health.ready()).ok
    health.forget_cpa("eu")
    assert (await health.ready()).ok


async def _async_ok() -> bool:
    return True


async def _async_slow() -> None:
    await asyncio.sleep(5)


def _raises_with_secret() -> bool:
    raise PermissionError("attempt to write a readonly database at /var/lib/reauthd/SECRET-CANARY-91")


@pytest.mark.parametrize(
    ("check", "reason"),
    [
        (None, "the state store is not open"),
        (lambda: False, "the state store is not writable"),
        (_raises_with_secret, "the state store is not writable (PermissionError)"),
        (_async_slow, "the state store did not accept a write within 0.05 s"),
    ],
)
async def test_store_problems_are_named_without_their_details(check, reason) -> None:
    health = Health(cpas=["main"], store_check=check, store_check_timeout_s=0.05, clock=FakeClock())
    health.cpa_ok("main")
    report = await health.ready()
    assert report.reasons == (reason,)
    assert "CANARY" not in report.text


async def test_async_store_check_and_shutdown() -> None:
    health = Health(cpas=["main"], store_check=_async_ok, clock=FakeClock())
    health.cpa_ok("main")
    assert (await health.ready()).ok
    health.begin_shutdown()
    assert (await health.ready()).reasons == ("reauthd is shutting down",)
    assert health.live().ok  # stopping is not dead: the supervisor must not kill a draining process


async def test_reasons_are_one_bounded_line() -> None:
    health = healthy()
    health.cpa_unreachable("main", "line one\nline two\t" + "x" * 1000)
    (reason,) = (await health.ready()).reasons
    assert "\n" not in reason
    assert reason.startswith("line one line two")
    assert len(reason) <= 300


async def test_notifier_outage_shows_in_summary_but_keeps_ready() -> None:
    health = healthy()
    health.notifier_failing("json://127.0.0.1:9 refused the connection")
    assert (await health.ready()).ok
    summary = await health.summary()
    assert summary["notifier"] == {
        "ok": False,
        "reason": "json://127.0.0.1:9 refused the connection",
        "gave_up": 0,
    }
    health.notifier_ok()
    health.notifier_gave_up(2)  # a lost message is shown, but is no readiness matter either
    assert (await health.summary())["notifier"] == {"ok": True, "reason": "", "gave_up": 2}
    assert (await health.ready()).ok


async def test_routes_over_http(serve_app) -> None:
    clock = FakeClock()
    health = Health(cpas=["main"], liveness_timeout_s=60, store_check=lambda: True, clock=clock)
    metrics = Metrics(cpas=["main"])
    app = Starlette(routes=health_routes(health, metrics))
    async with serve_app(app) as base, httpx.AsyncClient(base_url=base, timeout=5) as client:
        live = await client.get("/livez")
        assert (live.status_code, live.text) == (200, "ok\n")
        assert live.headers["cache-control"] == "no-store"

        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.text == "not ready: CPA 'main' has not been checked yet\n"
        assert ready.headers["content-type"].startswith("text/plain")

        scrape = await client.get("/metrics")
        assert scrape.status_code == 200
        assert scrape.headers["content-type"].startswith("text/plain; version=")
        assert "reauthd_ready 0.0" in scrape.text
        assert 'reauthd_cpa_reachable{cpa="main"} 0.0' in scrape.text

        health.cpa_ok("main")
        assert (await client.get("/readyz")).status_code == 200
        head = await client.head("/readyz")
        assert (head.status_code, head.content) == (200, b"")
        scrape = await client.get("/metrics")
        assert "reauthd_ready 1.0" in scrape.text
        assert 'reauthd_cpa_reachable{cpa="main"} 1.0' in scrape.text

        summary = await client.get("/healthz")
        assert summary.status_code == 200
        assert summary.json()["cpas"] == {
            "main": {"state": "ok", "reason": "", "kind": "unknown", "kind_text": ""}
        }

        health.cpa_error("main", ManagementBanned("main", EP, 1799.0))
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert "banned reauthd's IP address for another 29m59s" in ready.text
        assert (await client.get("/healthz")).status_code == 503

        clock.now += 61
        live = await client.get("/livez")
        assert live.status_code == 503
        assert "main loop has not completed a turn for 61 s" in live.text
        assert (await client.post("/livez")).status_code == 405


async def test_routes_without_metrics_have_no_metrics_endpoint(serve_app) -> None:
    app = Starlette(routes=health_routes(healthy()))
    async with serve_app(app) as base, httpx.AsyncClient(base_url=base, timeout=5) as client:
        assert (await client.get("/metrics")).status_code == 404
        assert (await client.get("/readyz")).status_code == 200


async def test_no_secret_in_any_health_answer(serve_app) -> None:
    key = "MGMT-KEY-CANARY-42b7"
    health = healthy()
    health.set_store_check(lambda: (_ for _ in ()).throw(OSError(f"disk full while writing {key}")))
    health.cpa_error("main", ManagementKeyRejected("main", EP, "invalid management key"))
    app = Starlette(routes=health_routes(health, Metrics(cpas=["main"])))
    async with serve_app(app) as base, httpx.AsyncClient(base_url=base, timeout=5) as client:
        bodies = [(await client.get(p)).text for p in ("/livez", "/readyz", "/healthz", "/metrics")]
    assert "OSError" in bodies[1]  # the failure is reported ...
    assert all(key not in body for body in bodies)  # ... without its secret-bearing message


async def test_a_note_shows_under_readyz_without_making_it_unready(serve_app) -> None:
    """A stretched idle sweep (issue 12) is something to know, not a reason to take reauthd out of
    service: /readyz stays 200 and says it on a second line; /healthz lists it under `notes`."""
    health = Health(cpas=["main"], store_check=lambda: True, clock=FakeClock())
    health.cpa_ok("main")
    app = Starlette(routes=health_routes(health, Metrics(cpas=["main"])))
    sentence = "the idle sweep probes each of 50,000 credentials every 8.7 h instead of every 6.0 h"
    async with serve_app(app) as base, httpx.AsyncClient(base_url=base, timeout=5) as client:
        assert (await client.get("/readyz")).text == "ok\n"
        health.set_note("sweep", sentence)
        ready = await client.get("/readyz")
        assert (ready.status_code, ready.text) == (200, f"ok\nnote: {sentence}\n")
        assert (await client.get("/healthz")).json()["notes"] == [sentence]
        health.set_note("sweep", None)
        assert (await client.get("/readyz")).text == "ok\n"
        assert (await client.get("/healthz")).json()["notes"] == []
