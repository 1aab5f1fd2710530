"""Metrics: every series exists at zero from the start, updates land on the right series, no secret in labels."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from reauthd.config import NotifyConfig, NotifyRouteConfig
from reauthd.core.causes import Cause
from reauthd.core.model import ReauthTask, TaskState, VerdictKind
from reauthd.cpa.errors import (
    CPAError,
    ManagementBanned,
    ManagementKeyRejected,
    TransientCPAError,
)
from reauthd.ops.metrics import (
    KNOWN_PROVIDERS,
    PROBE_OUTCOMES,
    USUAL_CAUSE,
    Metrics,
    label_value,
    management_error_classes,
    route_names,
)

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    result: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            result[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return result


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return samples(metrics)[(name, frozenset(labels.items()))]


def _all_subclasses(cls: type) -> set[str]:
    found: set[str] = set()
    for sub in cls.__subclasses__():
        found.add(sub.__name__)
        found |= _all_subclasses(sub)
    return found


def test_every_series_exists_at_zero_from_the_start() -> None:
    metrics = Metrics(cpas=["main", "backup"], routes=["default", "ops"], version="1.2.3")
    got = samples(metrics)
    expected_zero: list[tuple[str, dict[str, str]]] = []
    for cpa in ("main", "backup"):
        expected_zero += [
            ("reauthd_credentials", {"cpa": cpa, "verdict": k.value, "cause": USUAL_CAUSE[k].value})
            for k in VerdictKind
        ]
        expected_zero += [("reauthd_tasks", {"cpa": cpa, "state": s.value}) for s in TaskState]
        expected_zero.append(("reauthd_last_successful_poll_timestamp_seconds", {"cpa": cpa}))
        expected_zero.append(("reauthd_cpa_reachable", {"cpa": cpa}))
        expected_zero += [
            ("reauthd_management_errors_total", {"cpa": cpa, "error": name})
            for name in _all_subclasses(CPAError)
        ]
        for provider in KNOWN_PROVIDERS:
            expected_zero += [
                ("reauthd_probes_total", {"cpa": cpa, "provider": provider, "outcome": o})
                for o in PROBE_OUTCOMES
            ]
            expected_zero.append(("reauthd_probe_duration_seconds_count", {"cpa": cpa, "provider": provider}))
    for route in ("default", "ops"):
        expected_zero.append(("reauthd_notifications_sent_total", {"route": route}))
        expected_zero.append(("reauthd_notifications_failed_total", {"route": route}))
        expected_zero.append(("reauthd_notifications_gave_up_total", {"route": route}))
    expected_zero.append(("reauthd_ready", {}))
    expected_zero.append(("reauthd_accounts_held_twice", {}))
    missing = [(n, lab) for n, lab in expected_zero if (n, frozenset(lab.items())) not in got]
    assert missing == []
    assert all(got[(n, frozenset(lab.items()))] == 0 for n, lab in expected_zero)
    assert got[("reauthd_up", frozenset())] == 1
    build = [k for k in got if k[0] == "reauthd_build_info"]
    assert len(build) == 1
    assert ("version", "1.2.3") in build[0][1]


def test_error_classes_follow_the_cpa_client_hierarchy() -> None:
    names = management_error_classes()
    assert set(names) == _all_subclasses(CPAError)
    assert {"ManagementKeyRejected", "ManagementBanned", "FeatureMissing", "TransientCPAError"} <= set(names)


def test_updates_land_on_their_series() -> None:
    metrics = Metrics(cpas=["main"], routes=["default", "ops"])

    metrics.set_credentials("main", {VerdictKind.HEALTHY: 40, VerdictKind.NEEDS_REAUTH: 2})
    metrics.set_credentials("main", {VerdictKind.HEALTHY: 41})  # replaces: needs_reauth back to 0
    assert value(metrics, "reauthd_credentials", cpa="main", verdict="healthy", cause="none") == 41
    assert value(metrics, "reauthd_credentials", cpa="main", verdict="needs_reauth", cause="revoked") == 0

    def task(state: TaskState, n: int) -> ReauthTask:
        return ReauthTask(
            id=f"t{n}", cpa="main", auth_name="codex-a.json", auth_index="i", provider="codex",
            account_masked="a***@example.com", state=state, reason="revoked",
            created_at=NOW, updated_at=NOW, deadline=NOW,
        )  # fmt: skip

    metrics.set_tasks([task(TaskState.NOTIFIED, 1), task(TaskState.NOTIFIED, 2), task(TaskState.DONE, 3)])
    assert value(metrics, "reauthd_tasks", cpa="main", state="notified") == 2
    assert value(metrics, "reauthd_tasks", cpa="main", state="done") == 1
    metrics.set_tasks([task(TaskState.DONE, 3)])
    assert value(metrics, "reauthd_tasks", cpa="main", state="notified") == 0

    metrics.notification_sent("ops")
    metrics.notification_sent("ops")
    metrics.notification_failed("default")
    assert value(metrics, "reauthd_notifications_sent_total", route="ops") == 2
    assert value(metrics, "reauthd_notifications_sent_total", route="default") == 0
    assert value(metrics, "reauthd_notifications_failed_total", route="default") == 1
    metrics.notification_gave_up("ops")
    assert value(metrics, "reauthd_notifications_gave_up_total", route="ops") == 1
    assert value(metrics, "reauthd_notifications_gave_up_total", route="default") == 0

    metrics.poll_succeeded("main", NOW)
    assert value(metrics, "reauthd_last_successful_poll_timestamp_seconds", cpa="main") == NOW.timestamp()

    metrics.probe_observed("main", "codex", VerdictKind.NEEDS_REAUTH, 0.3)
    metrics.probe_observed("main", "codex", "healthy", 0.07)
    metrics.probe_observed("main", "codex", "error", None)
    metrics.probe_observed("main", "codex", "something-new", None)  # unknown outcomes count as errors
    assert value(metrics, "reauthd_probes_total", cpa="main", provider="codex", outcome="needs_reauth") == 1
    assert value(metrics, "reauthd_probes_total", cpa="main", provider="codex", outcome="error") == 2
    assert value(metrics, "reauthd_probe_duration_seconds_count", cpa="main", provider="codex") == 2
    assert (
        value(metrics, "reauthd_probe_duration_seconds_bucket", cpa="main", provider="codex", le="0.1") == 1
    )

    # A provider seen for the first time gets all its outcome series at once.
    metrics.probe_observed("main", "plugin-x", VerdictKind.HEALTHY, 1.0)
    assert value(metrics, "reauthd_probes_total", cpa="main", provider="plugin-x", outcome="quota") == 0

    metrics.management_error("main", ManagementKeyRejected("main", "/v0/management/auth-files", "invalid"))
    metrics.management_error("main", TransientCPAError("main", "/v0/management/auth-files", "timeout"))
    assert value(metrics, "reauthd_management_errors_total", cpa="main", error="ManagementKeyRejected") == 1
    assert value(metrics, "reauthd_management_errors_total", cpa="main", error="TransientCPAError") == 1
    assert value(metrics, "reauthd_management_errors_total", cpa="main", error="ManagementBanned") == 0

    metrics.set_cpa_reachable("main", True)
    metrics.set_ready(True)
    assert value(metrics, "reauthd_cpa_reachable", cpa="main") == 1
    assert value(metrics, "reauthd_ready") == 1


def test_a_cpa_added_later_gets_zero_series() -> None:
    metrics = Metrics(cpas=["main"])
    metrics.poll_succeeded("new", NOW)
    assert value(metrics, "reauthd_credentials", cpa="new", verdict="needs_reauth", cause="revoked") == 0
    assert value(metrics, "reauthd_management_errors_total", cpa="new", error="ManagementBanned") == 0


def test_registries_are_private() -> None:
    first, second = Metrics(cpas=["main"]), Metrics(cpas=["main"])
    first.notification_sent("default")
    assert value(second, "reauthd_notifications_sent_total", route="default") == 0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("main", "main"),
        ("cpa-eu.1_b", "cpa-eu.1_b"),
        ("ManagementKeyRejected", "ManagementKeyRejected"),
        ("alice@example.com", "redacted"),
        ("https://hooks.slack.com/services/T/B/X", "redacted"),
        ("tgram://123:ABC/456", "redacted"),
        ("sk-abc+def/ghi=", "redacted"),
        ("", "redacted"),
        ("-leading-dash", "redacted"),
        ("x" * 64, "x" * 64),
        ("x" * 65, "redacted"),
        ("has space", "redacted"),
    ],
)
def test_label_values_are_plain_identifiers(raw: str, expected: str) -> None:
    assert label_value(raw) == expected


def test_route_names_come_from_names_never_urls() -> None:
    notify = NotifyConfig(
        urls=[SecretStr("json://127.0.0.1:9/hook?token=TOPSECRET1")],
        routes=[
            NotifyRouteConfig(name="oncall", urls=[SecretStr("tgram://TOPSECRET2/123")]),
            NotifyRouteConfig(urls=[SecretStr("mailto://user:TOPSECRET3@example.com")]),
            NotifyRouteConfig(name="bob@example.com", urls=[SecretStr("json://h/TOPSECRET4")]),
        ],
    )
    assert route_names(notify) == ["default", "oncall", "route-2", "redacted"]


def test_no_secret_and_no_email_ever_reaches_a_label() -> None:
    key = "MGMT-KEY-CANARY-7f3a9"
    email = "carol.canary@example.com"
    metrics = Metrics(cpas=["main"], routes=["default", email, f"json://x/{key}"])
    metrics.notification_sent(email)
    metrics.notification_failed(f"json://host/{key}")
    metrics.probe_observed("main", email, VerdictKind.NEEDS_REAUTH, 0.1)
    metrics.probe_observed(email, "codex", VerdictKind.NEEDS_REAUTH, 0.1)
    metrics.management_error("main", ManagementKeyRejected("main", "/v0/management/auth-files", "invalid"))
    metrics.management_error("main", ManagementBanned("main", "/v0/management/auth-files", 1799.0))

    class LeakyError(Exception):
        def __str__(self) -> str:
            return f"key={key} for {email}"

    metrics.management_error("main", LeakyError())
    text = metrics.render()[0].decode()
    assert key not in text
    assert email not in text
    assert "@" not in text
    assert "redacted" in text  # the unsafe values were replaced, not dropped silently


def test_the_documented_metrics_list_matches_what_is_exported() -> None:
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    documented = set(re.findall(r"^\| `(reauthd_[a-z_]+)` \|", readme, flags=re.MULTILINE))
    exported: set[str] = set()
    for family in text_string_to_metric_families(Metrics(cpas=["main"]).render()[0].decode()):
        if family.name.endswith("_created"):  # prometheus-client's creation timestamps of counters
            continue
        exported.add(family.name + "_total" if family.type == "counter" else family.name)
    assert documented == exported


def test_routes_added_later_get_their_series_at_zero() -> None:
    metrics = Metrics(cpas=["main"], routes=["default"])
    assert ("reauthd_notifications_sent_total", frozenset({("route", "ops")})) not in samples(metrics)
    metrics.notification_sent("default")
    metrics.watch_routes(["default", "ops", "escalation"])  # idempotent for the routes it already has
    for name in ("sent", "failed", "gave_up"):
        assert value(metrics, f"reauthd_notifications_{name}_total", route="ops") == 0
        assert value(metrics, f"reauthd_notifications_{name}_total", route="escalation") == 0
    assert value(metrics, "reauthd_notifications_sent_total", route="default") == 1


def test_credentials_carry_a_bounded_cause_label() -> None:
    """Issue 14: (verdict, cause) pairs; an unusual pair appears when seen and goes back to 0 after."""
    metrics = Metrics(cpas=["main"])
    metrics.set_credentials(
        "main",
        {
            (VerdictKind.NEEDS_REAUTH, Cause.REFRESH_TOKEN_REUSED): 2,
            (VerdictKind.NEEDS_REAUTH, Cause.REVOKED): 1,
            (VerdictKind.SUSPECT, Cause.REGION_BLOCKED): 3,
        },
    )
    assert (
        value(
            metrics, "reauthd_credentials", cpa="main", verdict="needs_reauth", cause="refresh_token_reused"
        )
        == 2
    )
    assert value(metrics, "reauthd_credentials", cpa="main", verdict="needs_reauth", cause="revoked") == 1
    assert value(metrics, "reauthd_credentials", cpa="main", verdict="suspect", cause="region_blocked") == 3
    metrics.set_credentials("main", {(VerdictKind.HEALTHY, Cause.NONE): 6})
    assert value(metrics, "reauthd_credentials", cpa="main", verdict="suspect", cause="region_blocked") == 0
    assert value(metrics, "reauthd_credentials", cpa="main", verdict="healthy", cause="none") == 6
    causes = {dict(labels).get("cause") for name, labels in samples(metrics) if name == "reauthd_credentials"}
    assert causes <= {c.value for c in Cause}
    metrics.set_accounts_held_twice(4)
    assert value(metrics, "reauthd_accounts_held_twice") == 4
