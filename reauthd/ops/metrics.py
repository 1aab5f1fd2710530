"""Prometheus metrics of one reauthd process: a private registry, every series created at zero up front.

Series exist from the first scrape (an alert on `increase(...)` or an absent series cannot tell
"nothing happened" from "not exported yet"), so every label set reauthd knows at start — configured
CPAs, verdicts, task states, notification routes, probe outcomes, management error classes — is
created at zero in `__init__`. Labels never carry a secret or an email: route labels are configured
route *names* (an Apprise URL holds its own token), and every label value passes `label_value`.
"""

from __future__ import annotations

import platform
import re
from collections.abc import Iterable, Mapping
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from reauthd import __version__
from reauthd.core.causes import Cause
from reauthd.core.model import ReauthTask, TaskState, VerdictKind
from reauthd.cpa import errors as cpa_errors
from reauthd.detect.cpamp import SourceState

__all__ = [
    "DEFAULT_ROUTE",
    "KNOWN_PROVIDERS",
    "PROBE_OUTCOMES",
    "Metrics",
    "label_value",
    "management_error_classes",
    "route_names",
]

#: Route label of the top-level `[notify] urls` (a route with no name is `route-<n>`, 1-based).
DEFAULT_ROUTE = "default"
ESCALATION_ROUTE = "escalation"

#: Providers reauthd knows how to probe (contract §5, §8); others get their series when first seen.
KNOWN_PROVIDERS: tuple[str, ...] = ("antigravity", "claude", "codex", "gemini", "kimi", "vertex", "xai")

#: What one probe can end as: the verdict it supports, or `error` when no answer came back at all.
PROBE_OUTCOMES: tuple[str, ...] = (*(kind.value for kind in VerdictKind), "error")

#: The cause each verdict usually has: these (cpa, verdict, cause) series exist from the start; any other
#: pair is created when first seen and set back to 0 when it goes away (both label sets are bounded enums).
USUAL_CAUSE: dict[VerdictKind, Cause] = {
    VerdictKind.HEALTHY: Cause.NONE,
    VerdictKind.NEEDS_REAUTH: Cause.REVOKED,
    VerdictKind.ACCOUNT_GONE: Cause.ACCOUNT_DEACTIVATED,
    VerdictKind.QUOTA: Cause.QUOTA,
    VerdictKind.TRANSIENT: Cause.TRANSIENT,
    VerdictKind.SUSPECT: Cause.CHECKING,
    VerdictKind.UNKNOWN: Cause.UNKNOWN,
}

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_SAFE_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
REDACTED = "redacted"


def label_value(value: str) -> str:
    """`value` if it is a short plain identifier, else `redacted`.

    Everything that reaches a label is a configured name or a provider/class name; anything else
    (an email, a URL, a token-like blob with `/`, `+`, `=`, `:` or `@`) must never be exported.
    """
    return value if _SAFE_LABEL.fullmatch(value) else REDACTED


def management_error_classes() -> tuple[str, ...]:
    """Names of every typed CPA client error (reauthd/cpa/errors.py), found by walking the hierarchy."""
    names: list[str] = []
    pending: list[type[cpa_errors.CPAError]] = [cpa_errors.CPAError]
    while pending:
        cls = pending.pop()
        if cls is not cpa_errors.CPAError:
            names.append(cls.__name__)
        pending.extend(cls.__subclasses__())
    return tuple(sorted(set(names)))


def route_names(notify: object) -> list[str]:
    """Route labels for a `NotifyConfig`: `default`, each route's name (or `route-<n>`), `escalation`."""
    names = [DEFAULT_ROUTE]
    for index, route in enumerate(getattr(notify, "routes", ()), start=1):
        name = str(getattr(route, "name", "") or "")
        names.append(label_value(name) if name else f"route-{index}")
    if getattr(notify, "escalation", None) is not None:
        names.append(ESCALATION_ROUTE)
    return names


def route_label(route_key: str, notify: object) -> str:
    """The metric label (see `route_names`) of a notify route key (`default`, `escalation`, `route:<name|i>`)."""
    if route_key in (DEFAULT_ROUTE, ESCALATION_ROUTE):
        return route_key
    for index, route in enumerate(getattr(notify, "routes", ())):
        name = str(getattr(route, "name", "") or "")
        if route_key == f"route:{name or index}":
            return label_value(name) if name else f"route-{index + 1}"
    return DEFAULT_ROUTE


class Metrics:
    """All of reauthd's metrics in a private `CollectorRegistry` (tests build as many as they like)."""

    def __init__(
        self,
        *,
        cpas: Iterable[str],
        routes: Iterable[str] = (DEFAULT_ROUTE,),
        providers: Iterable[str] = KNOWN_PROVIDERS,
        version: str = __version__,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self._cpas = [label_value(c) for c in cpas]
        self._providers: set[tuple[str, str]] = set()
        self._error_classes = management_error_classes()

        self.up = Gauge("reauthd_up", "1 while this reauthd process runs.", registry=reg)
        self.build_info = Gauge(
            "reauthd_build_info", "reauthd build information (always 1).", ["version", "python"], registry=reg
        )
        self.credentials = Gauge(
            "reauthd_credentials",
            "Credentials by the verdict of their latest classification and its cause.",
            ["cpa", "verdict", "cause"],
            registry=reg,
        )
        self._cause_pairs: dict[str, set[tuple[VerdictKind, Cause]]] = {}
        self.accounts_held_twice = Gauge(
            "reauthd_accounts_held_twice",
            "Accounts with more than one enabled credential, within one CPA or across the configured CPAs.",
            registry=reg,
        )
        self.tasks = Gauge(
            "reauthd_tasks", "Re-authorization tasks by state.", ["cpa", "state"], registry=reg
        )
        self.notifications_sent = Counter(
            "reauthd_notifications_sent",
            "Notifications delivered, by configured route name.",
            ["route"],
            registry=reg,
        )
        self.notifications_failed = Counter(
            "reauthd_notifications_failed",
            "Notification delivery attempts that failed, by configured route name.",
            ["route"],
            registry=reg,
        )
        self.notifications_gave_up = Counter(
            "reauthd_notifications_gave_up",
            "Notifications given up after retry_max_attempts failed attempts (final notices about closed "
            "tasks only: messages a task still waits for are retried until delivered), by route name.",
            ["route"],
            registry=reg,
        )
        self.last_poll = Gauge(
            "reauthd_last_successful_poll_timestamp_seconds",
            "Unix time of the last successful auth-files poll of each CPA (0 = never).",
            ["cpa"],
            registry=reg,
        )
        self.probes = Counter(
            "reauthd_probes",
            "Active probes sent through /api-call, by outcome.",
            ["cpa", "provider", "outcome"],
            registry=reg,
        )
        self.probe_latency = Histogram(
            "reauthd_probe_duration_seconds",
            "Time from sending a probe to CPA's answer.",
            ["cpa", "provider"],
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.management_errors = Counter(
            "reauthd_management_errors",
            "Errors from CPA's management API, by error class.",
            ["cpa", "error"],
            registry=reg,
        )
        self.cpa_reachable = Gauge(
            "reauthd_cpa_reachable",
            "1 when the CPA answered its last management call with the key accepted.",
            ["cpa"],
            registry=reg,
        )
        self.ready = Gauge("reauthd_ready", "1 when /readyz would answer 200.", registry=reg)
        self.cpamp_state = Gauge(
            "reauthd_cpamp_state",
            "1 for the current state of each CPAMP source (ok, key_refused, not_cpamp, unreachable, failing, "
            "queue_disabled, starting), 0 for the others.",
            ["cpamp", "state"],
            registry=reg,
        )
        self.poll_cycles = Counter(
            "reauthd_poll_cycles",
            "Detection poll cycles (one auth-files listing per CPA each).",
            registry=reg,
        )
        self.sweep_period = Gauge(
            "reauthd_sweep_period_seconds",
            "The idle probe sweep's effective period: probe_interval_s, or longer when probe_rate_per_s "
            "cannot probe every credential once per interval.",
            registry=reg,
        )

        self.up.set(1)
        self.build_info.labels(version=label_value(version), python=platform.python_version()).set(1)
        for cpa in self._cpas:
            self._create_cpa(cpa)
        for route in routes:
            self._create_route(label_value(route))
        for cpa in self._cpas:
            for provider in providers:
                self._create_probe_series(cpa, label_value(provider))

    # ------------------------------------------------------------------------------ zero series

    def _create_cpa(self, cpa: str) -> None:
        pairs = self._cause_pairs.setdefault(cpa, set())
        for kind in VerdictKind:
            pairs.add((kind, USUAL_CAUSE[kind]))
            self.credentials.labels(cpa=cpa, verdict=kind.value, cause=USUAL_CAUSE[kind].value)
        for state in TaskState:
            self.tasks.labels(cpa=cpa, state=state.value)
        self.last_poll.labels(cpa=cpa)
        self.cpa_reachable.labels(cpa=cpa)
        for name in self._error_classes:
            self.management_errors.labels(cpa=cpa, error=name)

    def _create_route(self, route: str) -> None:
        self.notifications_sent.labels(route=route)
        self.notifications_failed.labels(route=route)
        self.notifications_gave_up.labels(route=route)

    def watch_routes(self, routes: Iterable[str]) -> None:
        """Routes of a configuration loaded by a reload: their series exist at zero from now on, like those
        of the first configuration (a route the reload removed keeps its series: counters never go back)."""
        for route in routes:
            self._create_route(label_value(route))

    def _create_probe_series(self, cpa: str, provider: str) -> None:
        if (cpa, provider) in self._providers:
            return
        self._providers.add((cpa, provider))
        for outcome in PROBE_OUTCOMES:
            self.probes.labels(cpa=cpa, provider=provider, outcome=outcome)
        self.probe_latency.labels(cpa=cpa, provider=provider)

    def _cpa(self, cpa: str) -> str:
        label = label_value(cpa)
        if label not in self._cpas:
            # A CPA added by a reload: give it the same zero series as the others.
            self._cpas.append(label)
            self._create_cpa(label)
        return label

    # ---------------------------------------------------------------------------------- updates

    def set_credentials(
        self, cpa: str, counts: Mapping[VerdictKind, int] | Mapping[tuple[VerdictKind, Cause], int]
    ) -> None:
        """Replace the counts of one CPA, keyed by (verdict, cause) or by verdict alone (its usual cause);
        a pair missing from `counts` goes back to 0."""
        label = self._cpa(cpa)
        by_pair: dict[tuple[VerdictKind, Cause], int] = {}
        for key, n in counts.items():
            pair = key if isinstance(key, tuple) else (key, USUAL_CAUSE[key])
            by_pair[pair] = by_pair.get(pair, 0) + n
        pairs = self._cause_pairs.setdefault(label, set())
        pairs.update(by_pair)
        for kind, cause in pairs:
            self.credentials.labels(cpa=label, verdict=kind.value, cause=cause.value).set(
                by_pair.get((kind, cause), 0)
            )

    def set_accounts_held_twice(self, count: int) -> None:
        self.accounts_held_twice.set(count)

    def set_tasks(self, tasks: Iterable[ReauthTask]) -> None:
        """Replace the task gauges with a count of `tasks` (all tasks the store knows, or all open ones)."""
        counts: dict[tuple[str, TaskState], int] = {}
        for task in tasks:
            key = (self._cpa(task.cpa), task.state)
            counts[key] = counts.get(key, 0) + 1
        for cpa in self._cpas:
            for state in TaskState:
                self.tasks.labels(cpa=cpa, state=state.value).set(counts.get((cpa, state), 0))

    def notification_sent(self, route: str) -> None:
        self.notifications_sent.labels(route=label_value(route)).inc()
        self.notifications_failed.labels(route=label_value(route))

    def notification_failed(self, route: str) -> None:
        self.notifications_failed.labels(route=label_value(route)).inc()
        self.notifications_sent.labels(route=label_value(route))

    def notification_gave_up(self, route: str) -> None:
        self.notifications_gave_up.labels(route=label_value(route)).inc()

    def poll_succeeded(self, cpa: str, at: datetime) -> None:
        self.last_poll.labels(cpa=self._cpa(cpa)).set(at.timestamp())

    def probe_observed(
        self, cpa: str, provider: str, outcome: VerdictKind | str, seconds: float | None
    ) -> None:
        """One probe finished. `outcome` is the verdict it supports or `error`; `seconds` None if unsent."""
        label = self._cpa(cpa)
        prov = label_value(provider)
        self._create_probe_series(label, prov)
        value = outcome.value if isinstance(outcome, VerdictKind) else outcome
        self.probes.labels(
            cpa=label, provider=prov, outcome=value if value in PROBE_OUTCOMES else "error"
        ).inc()
        if seconds is not None:
            self.probe_latency.labels(cpa=label, provider=prov).observe(seconds)

    def management_error(self, cpa: str, error: BaseException) -> None:
        """Count one error of the CPA client by its class name (never its message: it names endpoints)."""
        self.management_errors.labels(cpa=self._cpa(cpa), error=label_value(type(error).__name__)).inc()

    def set_cpa_reachable(self, cpa: str, reachable: bool) -> None:
        self.cpa_reachable.labels(cpa=self._cpa(cpa)).set(1 if reachable else 0)

    def set_cpamp_state(self, cpamp: str, state: str) -> None:
        name = label_value(cpamp)
        for each in SourceState.ALL:
            self.cpamp_state.labels(cpamp=name, state=each).set(1 if each == state else 0)

    def set_ready(self, ready: bool) -> None:
        self.ready.set(1 if ready else 0)

    def poll_cycles_done(self, count: int) -> None:
        """Detection ran `count` more poll cycles."""
        if count > 0:
            self.poll_cycles.inc(count)

    def set_sweep_period(self, seconds: float) -> None:
        self.sweep_period.set(seconds)

    # ---------------------------------------------------------------------------------- output

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type, for the `/metrics` route."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
