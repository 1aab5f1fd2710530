"""The health model the daemon keeps up to date, and the /livez, /readyz, /healthz and /metrics routes.

Liveness and readiness answer different questions (and a supervisor acts differently on each):
- live: the main loop still turns — its heartbeat (a cheap scheduler job) is recent, and the work it is
  doing (a task step, a delivery, a CPA cycle) keeps making progress. Failing it gets the process
  restarted, so it must not depend on CPA or the notifier being fast: a restart fixes neither. A slow
  step only has to finish within `step_timeout_s`, which is longer than any bounded CPA call sequence
  or delivery; a blocked event loop, a dead scheduler or a step that never returns still fails it.
- ready: reauthd can do its job — the state store is writable and every CPA answers with the key
  accepted. Failing it is reported (503 with the reason in plain words) and, in Kubernetes, only
  takes the pod out of Service endpoints.
A notifier outage shows in /healthz and on /metrics but does not make reauthd unready: deliveries are
retried from the store and nothing is lost (design.md, "Notify").

Reasons shown here are sentences the daemon passes in (CPA client errors are secret-free by
contract, reauthd/cpa/errors.py); an exception raised by the store check is reduced to its class name.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from enum import StrEnum

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from reauthd.cpa.client import CPAHealth, HealthState
from reauthd.cpa.errors import CPAError, KeyProblem, ManagementUnavailable, TransientCPAError
from reauthd.ops.metrics import Metrics

__all__ = ["CPAReachability", "Health", "HealthReport", "StoreCheck", "health_routes"]

#: A callback proving the store accepts writes; it raises (or returns False) when it does not.
StoreCheck = Callable[[], Awaitable[bool | None] | bool | None]

_REASON_MAX = 300


def _plain(text: str) -> str:
    """One line, bounded: a reason is read by a person or a probe log, never parsed."""
    line = " ".join(text.split())
    return line if len(line) <= _REASON_MAX else line[: _REASON_MAX - 1] + "…"


class CPAReachability(StrEnum):
    UNKNOWN = "unknown"  # not asked yet (startup)
    OK = "ok"  # answered with the key accepted
    UNREACHABLE = "unreachable"  # connect errors, timeouts, 5xx, management API off
    KEY_REFUSED = "key_refused"  # 401/403 on the management key, IP ban, remote management disabled


@dataclass(frozen=True, slots=True)
class _CPAState:
    state: CPAReachability
    reason: str
    kind: str = "unknown"  # reauthd/cpa/kind.py FoundKind: what answers at base_url
    kind_text: str = ""


@dataclass(frozen=True, slots=True)
class HealthReport:
    """One evaluation of readiness: `ok` and the plain-words reasons when it is not."""

    ok: bool
    reasons: tuple[str, ...]
    failing: str = "not ready"  # how a failure starts: "not ready" or "not live"
    # Details that do not decide readiness (an optional source such as CPAMP in trouble), one line each.
    notes: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        head = "ok" if self.ok else f"{self.failing}: " + "; ".join(self.reasons)
        return "\n".join((head, *(f"note: {n}" for n in self.notes)))


class Health:
    """What the daemon knows about its own health. All updates are cheap and never raise.

    `clock` is a monotonic clock in seconds (injected so tests need no sleeping). For /livez to pass, the
    heartbeat of the main loop must be younger than `liveness_timeout_s`, and while work is in progress
    (`working()`) its last progress must be younger than `step_timeout_s`. Until the first beat the
    time of construction counts, so a slow start is not a dead loop.
    """

    def __init__(
        self,
        *,
        cpas: Iterable[str],
        liveness_timeout_s: float = 120.0,
        step_timeout_s: float = 300.0,
        store_check: StoreCheck | None = None,
        store_check_timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self.liveness_timeout_s = liveness_timeout_s
        self.step_timeout_s = step_timeout_s
        self._last_beat = clock()
        self._working = 0
        self._last_progress = self._last_beat
        self._store_check = store_check
        self._store_check_timeout_s = store_check_timeout_s
        self._cpas: dict[str, _CPAState] = {
            name: _CPAState(CPAReachability.UNKNOWN, f"CPA {name!r} has not been checked yet")
            for name in cpas
        }
        self._version_notes: dict[str, str] = {}
        self._notifier_ok = True
        self._notifier_reason = ""
        self._notifier_gave_up = 0
        self._stopping = False
        self._cpamp: dict[str, tuple[str, str]] = {}  # CPAMP name → (state, sentence)
        self._notes: dict[str, str] = {}

    # ------------------------------------------------------------------------------- main loop

    def beat(self) -> None:
        """The main loop turned: the daemon's heartbeat job calls it every second, so it proves the event
        loop and the scheduler run, whatever slow I/O the ticks are waiting for."""
        self._last_beat = self._clock()

    def heartbeat_age_s(self) -> float:
        return self._clock() - self._last_beat

    @contextmanager
    def working(self) -> Iterator[None]:
        """A unit of main-loop work (a tick, the startup): while it runs, each `progress()` must come within
        `step_timeout_s` of the previous one, or the loop counts as stuck. Nests."""
        self._working += 1
        self.progress()
        try:
            yield
        finally:
            self._working -= 1
            self.progress()

    def progress(self) -> None:
        """One step of the current work finished (a task advanced, a message delivered or tried)."""
        self._last_progress = self._clock()

    def stalled_s(self) -> float:
        """How long the work in progress has made no progress (0 when nothing is in progress)."""
        return self._clock() - self._last_progress if self._working else 0.0

    def live(self) -> HealthReport:
        reasons: list[str] = []
        age = self.heartbeat_age_s()
        if age > self.liveness_timeout_s:
            reasons.append(
                f"the main loop has not completed a turn for {age:.0f} s (limit {self.liveness_timeout_s:.0f} s)"
            )
        stalled = self.stalled_s()
        if stalled > self.step_timeout_s:
            reasons.append(
                f"a main-loop step has made no progress for {stalled:.0f} s (limit {self.step_timeout_s:.0f} s)"
            )
        return HealthReport(not reasons, tuple(reasons), "not live")

    def begin_shutdown(self) -> None:
        """SIGTERM received: report unready so no new work (or traffic) arrives while steps finish."""
        self._stopping = True

    # ------------------------------------------------------------------------------------ store

    def set_store_check(self, check: StoreCheck | None) -> None:
        self._store_check = check

    async def _store_problem(self) -> str | None:
        if self._store_check is None:
            return "the state store is not open"
        try:
            result = self._store_check()
            if inspect.isawaitable(result):
                async with asyncio.timeout(self._store_check_timeout_s):  # not wait_for: gh-86296
                    result = await result
        except TimeoutError:
            return f"the state store did not accept a write within {self._store_check_timeout_s:g} s"
        except Exception as exc:  # the check's message may quote paths or SQL; the class name is enough
            return f"the state store is not writable ({type(exc).__name__})"
        if result is False:
            return "the state store is not writable"
        return None

    # -------------------------------------------------------------------------------------- CPA

    def cpa_ok(self, name: str) -> None:
        """CPA `name` answered a management call with the key accepted."""
        self._set_cpa(name, CPAReachability.OK, "")

    def cpa_unreachable(self, name: str, reason: str) -> None:
        self._set_cpa(name, CPAReachability.UNREACHABLE, _plain(reason))

    def cpa_key_refused(self, name: str, reason: str) -> None:
        self._set_cpa(name, CPAReachability.KEY_REFUSED, _plain(reason))

    def _set_cpa(self, name: str, state: CPAReachability, reason: str) -> None:
        """A new reachability; what answers at base_url (kind) stays as last seen."""
        old = self._cpas.get(name)
        self._cpas[name] = replace(old, state=state, reason=reason) if old else _CPAState(state, reason)

    def cpa_error(self, name: str, error: CPAError) -> None:
        """Fold one CPA client error into the CPA's state (an error that proves CPA answered leaves it)."""
        if isinstance(error, KeyProblem):
            self.cpa_key_refused(name, str(error))
        elif isinstance(error, TransientCPAError | ManagementUnavailable):
            self.cpa_unreachable(name, str(error))
        # FeatureMissing, MalformedResponse, CPARequestError: CPA answered with the key accepted; the
        # problem belongs to one call, not to readiness.

    def cpa_snapshot(self, snapshot: CPAHealth) -> None:
        """Take the CPA client's own view (`CPAClient.health()`), e.g. once per tick for every CPA."""
        note = snapshot.version.unchecked_note(snapshot.cpa) if snapshot.version is not None else None
        if note is None:
            self._version_notes.pop(snapshot.cpa, None)
        else:
            self._version_notes[snapshot.cpa] = note
        self._cpa_snapshot(snapshot)
        st = self._cpas[snapshot.cpa]
        self._cpas[snapshot.cpa] = replace(st, kind=snapshot.kind.value, kind_text=snapshot.kind_text)

    def _cpa_snapshot(self, snapshot: CPAHealth) -> None:
        reason = snapshot.last_error or ""
        if snapshot.state is HealthState.OK:
            self.cpa_ok(snapshot.cpa)
        elif snapshot.state in (HealthState.KEY_REJECTED, HealthState.BANNED):
            self.cpa_key_refused(snapshot.cpa, reason or f"CPA {snapshot.cpa!r} refuses the management key")
        elif snapshot.state is HealthState.UNREACHABLE:
            self.cpa_unreachable(snapshot.cpa, reason or f"CPA {snapshot.cpa!r} did not answer")
        else:  # UNVERIFIED: nothing has proved the key yet
            self._set_cpa(
                snapshot.cpa,
                CPAReachability.UNKNOWN,
                f"CPA {snapshot.cpa!r} has not accepted the management key yet",
            )

    def forget_cpa(self, name: str) -> None:
        """A reload removed this CPA from the configuration."""
        self._cpas.pop(name, None)
        self._version_notes.pop(name, None)

    def watch_cpa(self, name: str) -> None:
        """A reload added this CPA: it is unknown until its first answer."""
        self._cpas.setdefault(
            name, _CPAState(CPAReachability.UNKNOWN, f"CPA {name!r} has not been checked yet")
        )

    def cpa_states(self) -> dict[str, CPAReachability]:
        return {name: st.state for name, st in self._cpas.items()}

    # ------------------------------------------------------------------------------------ CPAMP

    def set_cpamp(self, states: Mapping[str, tuple[str, str | None]]) -> None:
        """Every configured CPAMP source's state (detect/cpamp.py SourceState) and its sentence: shown in
        /readyz details, /healthz and /metrics, never a readiness matter (CPA itself is still watched)."""
        self._cpamp = {name: (state, _plain(reason or "")) for name, (state, reason) in states.items()}

    def cpamp_states(self) -> dict[str, str]:
        return {name: state for name, (state, _) in self._cpamp.items()}

    # --------------------------------------------------------------------------------- notifier

    def notifier_ok(self) -> None:
        self._notifier_ok, self._notifier_reason = True, ""

    def notifier_failing(self, reason: str) -> None:
        self._notifier_ok, self._notifier_reason = False, _plain(reason)

    def notifier_gave_up(self, count: int) -> None:
        """How many messages the outbox has given up since start (shown in /healthz; not a readiness matter)."""
        self._notifier_gave_up = count

    # ------------------------------------------------------------------------------------ notes

    def set_note(self, topic: str, text: str | None) -> None:
        """A fact an operator should know that does not make reauthd unready (e.g. the idle sweep is
        stretched): shown under /readyz's first line and in /healthz `notes`. None removes it."""
        if text is None:
            self._notes.pop(topic, None)
        else:
            self._notes[topic] = _plain(text)

    def notes(self) -> list[str]:
        return [self._notes[topic] for topic in sorted(self._notes)]

    # ------------------------------------------------------------------------------- evaluation

    async def ready(self) -> HealthReport:
        reasons: list[str] = []
        if self._stopping:
            reasons.append("reauthd is shutting down")
        store = await self._store_problem()
        if store is not None:
            reasons.append(store)
        for name, st in sorted(self._cpas.items()):
            if st.state is not CPAReachability.OK:
                reasons.append(st.reason or f"CPA {name!r} is {st.state.value.replace('_', ' ')}")
        if not self._cpas:
            reasons.append("no CPA is configured")
        notes = (
            tuple(note for _, note in sorted(self._version_notes.items()))
            + tuple(
                reason or f"CPAMP {name!r} is {state.replace('_', ' ')}"
                for name, (state, reason) in sorted(self._cpamp.items())
                if state != "ok"
            )
            + tuple(
                # What answers is a detail worth a line only when it is not a plain CPA (issue 15).
                f"CPA {name!r} is a {st.kind_text}"
                for name, st in sorted(self._cpas.items())
                if st.kind in ("home", "node")
            )
            + tuple(self.notes())
        )
        return HealthReport(not reasons, tuple(reasons), notes=notes)

    async def summary(self) -> dict[str, object]:
        live = self.live()
        ready = await self.ready()
        return {
            "live": live.ok,
            "ready": ready.ok,
            "reasons": list(live.reasons + ready.reasons),
            "notes": list(ready.notes),
            "heartbeat_age_s": round(self.heartbeat_age_s(), 3),
            "stopping": self._stopping,
            "cpas": {
                name: {
                    "state": st.state.value,
                    "reason": st.reason,
                    "kind": st.kind,
                    "kind_text": st.kind_text,
                }
                for name, st in sorted(self._cpas.items())
            },
            "cpamp": {
                name: {"state": state, "reason": reason}
                for name, (state, reason) in sorted(self._cpamp.items())
            },
            "notifier": {
                "ok": self._notifier_ok,
                "reason": self._notifier_reason,
                "gave_up": self._notifier_gave_up,
            },
        }


# ---------------------------------------------------------------------------------------- routes

_NO_STORE = {"Cache-Control": "no-store"}


def health_routes(health: Health, metrics: Metrics | None = None) -> list[Route]:
    """Starlette routes: /livez, /readyz, /healthz (JSON summary) and, given `metrics`, /metrics."""

    async def livez(request: Request) -> Response:
        report = health.live()
        return PlainTextResponse(report.text + "\n", status_code=200 if report.ok else 503, headers=_NO_STORE)

    async def readyz(request: Request) -> Response:
        report = await health.ready()
        return PlainTextResponse(report.text + "\n", status_code=200 if report.ok else 503, headers=_NO_STORE)

    async def healthz(request: Request) -> Response:
        body = await health.summary()
        ok = bool(body["live"]) and bool(body["ready"])
        return JSONResponse(body, status_code=200 if ok else 503, headers=_NO_STORE)

    routes = [
        Route("/livez", livez, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
    ]
    if metrics is not None:
        scraped = metrics

        async def metrics_endpoint(request: Request) -> Response:
            # Gauges that mirror the health model are refreshed at scrape time, so they cannot drift.
            scraped.set_ready((await health.ready()).ok)
            for name, state in health.cpa_states().items():
                scraped.set_cpa_reachable(name, state is CPAReachability.OK)
            for name, cpamp_state in health.cpamp_states().items():
                scraped.set_cpamp_state(name, cpamp_state)
            body, content_type = scraped.render()
            return Response(body, media_type=content_type, headers=_NO_STORE)

        routes.append(Route("/metrics", metrics_endpoint, methods=["GET"]))
    return routes
