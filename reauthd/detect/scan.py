"""`reauthd scan`: one detection cycle over every configured CPA, rendered as a table or JSON.

Exit codes: 0 every credential healthy, 1 something needs attention (and everything was checked),
2 a CPA, or some of its credentials, could not be checked — whatever else the scan found: "all
healthy" or "one needs attention" would be a verdict on part of the data (issues 2 and 3).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from reauthd.config import Settings
from reauthd.core.accounts import DuplicateGroup, duplicate_holders
from reauthd.core.causes import OPERATOR_CAUSES, Cause, explain
from reauthd.core.model import VerdictKind
from reauthd.core.sanitize import mask_email, short_text
from reauthd.cpa.client import CPAClient
from reauthd.cpa.factory import client_from_config, load_gate, save_gate, shared_state
from reauthd.detect.engine import CredentialVerdict, DetectionEngine, needs_attention

EXIT_HEALTHY = 0
EXIT_ATTENTION = 1
EXIT_UNCHECKED = 2

COLUMNS = (
    "cpa",
    "provider",
    "name",
    "auth_index",
    "account",
    "status",
    "status_message",
    "disabled",
    "unavailable",
    "verdict",
    "reason",
    "cause",
)


@dataclass(frozen=True, slots=True)
class ScanRow:
    cpa: str
    provider: str
    name: str
    auth_index: str
    account: str  # masked
    status: str
    status_message: str  # short, sanitised
    disabled: bool
    unavailable: bool
    verdict: str
    reason: str
    confirmed: bool = False
    runtime_only: bool = False
    attention: bool = False
    # Why, and what to do (issue 14): a bounded cause (README "Causes") and its next step.
    cause: str = "none"
    advice: str = ""


@dataclass(frozen=True, slots=True)
class ScanProblem:
    cpa: str
    message: str  # one sentence, secret-free


@dataclass(frozen=True, slots=True)
class ScanDuplicate:
    """One account held by more than one enabled credential (within a CPA or across CPAs)."""

    provider: str
    account: str  # masked
    holders: list[dict[str, str]]  # {cpa, name, auth_index}


@dataclass(frozen=True, slots=True)
class ScanReport:
    rows: list[ScanRow] = field(default_factory=list)
    problems: list[ScanProblem] = field(default_factory=list)
    probed: bool = False
    duplicates: list[ScanDuplicate] = field(default_factory=list)
    # CPA name → what answers at its base_url (reauthd/cpa/kind.py): "plain CPA v7.2.140", a Home, a node.
    kinds: dict[str, str] = field(default_factory=dict)


def _row(view: CredentialVerdict, include_disabled: bool, groups: Sequence[DuplicateGroup] = ()) -> ScanRow:
    c = view.credential
    assert c is not None
    others = next(
        (
            g.others(c.cpa, c.name)
            for g in groups
            if any(h.name == c.name and h.cpa == c.cpa for h in g.holders)
        ),
        [],
    )
    advice = explain(view.verdict, c.provider, others)
    return ScanRow(
        cpa=c.cpa,
        provider=c.provider,
        name=c.name,
        auth_index=c.auth_index,
        account=mask_email(c.email),
        status=c.status,
        status_message=short_text(c.status_message, 120),
        disabled=c.disabled,
        unavailable=c.unavailable,
        verdict=view.verdict.kind.value,
        reason=view.verdict.reason,
        confirmed=view.verdict.confirmed,
        runtime_only=c.runtime_only,
        attention=needs_attention(view, include_disabled),
        cause=advice.cause.value,
        advice=advice.next_step if advice.cause is not Cause.NONE else "",
    )


async def scan(settings: Settings, *, probe: bool, probe_all: bool = False) -> ScanReport:
    """List every CPA once; with `probe`, confirm failures and suspects with a probe now; with
    `probe_all`, probe every credential that has a probe (the only way to see a silent revocation on
    an idle account), within `[detect] probe_concurrency` and `probe_rate_per_s`."""
    probe = probe or probe_all
    async with contextlib.AsyncExitStack() as stack:
        # Start from the key gate the daemon saved (a refused key stays refused here too), save ours back.
        state = stack.enter_context(shared_state(settings))
        clients: dict[str, CPAClient] = {}
        for cpa in settings.cpa:
            gate = load_gate(state, cpa.name) if state is not None else None
            clients[cpa.name] = await stack.enter_async_context(client_from_config(cpa, gate_snapshot=gate))
        engine = DetectionEngine(clients, settings.detect, probes_enabled=probe)
        try:
            views = await engine.cycle(wait_for_probes=probe)
            if probe_all:
                await asyncio.gather(
                    *(
                        engine.probe_now(v.ref.cpa, v.ref.auth_index)
                        for v in views
                        if v.credential is not None and engine.table.has_probe(v.credential.provider)
                    )
                )
        finally:
            await engine.aclose()
            if state is not None:
                for client in clients.values():
                    save_gate(state, client, datetime.now(UTC))
        # A probe may have replaced a verdict after the cycle returned: read the latest.
        latest = {(v.ref.cpa, v.ref.auth_index): v for v in engine.latest()}
        views = [latest.get((v.ref.cpa, v.ref.auth_index), v) for v in views]
        groups = duplicate_holders(v.credential for v in views if v.credential is not None)
        rows = [_row(v, settings.detect.include_disabled, groups) for v in views if v.credential is not None]
        rows.sort(key=lambda r: (r.cpa, r.provider, r.name.lower()))
        found = {**engine.unchecked, **engine.cpa_problems}
        problems = [ScanProblem(cpa, message) for cpa, message in sorted(found.items())]
        kinds = {name: client.kind_text for name, client in sorted(clients.items())}
        return ScanReport(
            rows, problems, probed=probe, duplicates=[_duplicate(g) for g in groups], kinds=kinds
        )


def _duplicate(group: DuplicateGroup) -> ScanDuplicate:
    return ScanDuplicate(
        provider=group.provider,
        account=group.account,
        holders=[{"cpa": h.cpa, "name": h.name, "auth_index": h.auth_index} for h in group.holders],
    )


def exit_code(report: ScanReport) -> int:
    if report.problems:
        return EXIT_UNCHECKED
    if any(row.attention for row in report.rows):
        return EXIT_ATTENTION
    return EXIT_HEALTHY


def render_json(report: ScanReport) -> str:
    payload = {
        "credentials": [asdict(row) for row in report.rows],
        "problems": [asdict(p) for p in report.problems],
        "probed": report.probed,
        "duplicates": [asdict(d) for d in report.duplicates],
        "cpas": {name: {"kind": text} for name, text in report.kinds.items()},
        "exit_code": exit_code(report),
    }
    return json.dumps(payload, indent=2, ensure_ascii=False)


def _cell(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def render_table(report: ScanReport) -> str:
    """A plain-text table, then one line per CPA that could not be checked, then a summary line."""
    lines: list[str] = []
    if report.rows:
        table = [list(COLUMNS)]
        for row in report.rows:
            verdict = row.verdict + (" (confirmed)" if row.confirmed else "")
            values = asdict(row) | {"verdict": verdict}
            table.append([_cell(values[c]) for c in COLUMNS])
        widths = [min(60, max(len(r[i]) for r in table)) for i in range(len(COLUMNS))]
        for r in table:
            cells = [
                (v if len(v) <= w else v[: w - 1] + "…").ljust(w) for v, w in zip(r, widths, strict=True)
            ]
            lines.append("  ".join(cells).rstrip())
    for name, text in report.kinds.items():
        lines.append(f"CPA {name}: {text}")
    if report.duplicates:
        lines.append("")
        lines.append("Accounts held more than once (each refresh can revoke the other holder's login):")
        for dup in report.duplicates:
            where = "; ".join(f"{h['name']} on CPA {h['cpa']}" for h in dup.holders)
            lines.append(f"  {dup.account} ({dup.provider}): {where}")
    operator = {c.value for c in OPERATOR_CAUSES}
    advised = [r for r in report.rows if r.advice and (r.attention or r.cause in operator)]
    if advised:
        lines.append("")
        lines.append("Next steps:")
        for row in advised:
            lines.append(f"  {row.name} on CPA {row.cpa} [{row.cause}]: {row.advice}")
    for problem in report.problems:
        lines.append(f"CPA {problem.cpa}: could not check: {problem.message}")
    counts: dict[str, int] = {}
    for row in report.rows:
        counts[row.verdict] = counts.get(row.verdict, 0) + 1
    summary = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "no credentials"
    attention = sum(row.attention for row in report.rows)
    lines.append(f"{len(report.rows)} credentials: {summary}; {attention} need attention")
    if not report.probed and any(r.verdict == VerdictKind.SUSPECT.value for r in report.rows):
        lines.append("Suspects are not confirmed yet: run with --probe to test them now.")
    return "\n".join(lines)


def run_scan(settings: Settings, *, probe: bool, as_json: bool) -> tuple[str, int]:
    """Synchronous helper for the CLI: (text to print, exit code)."""
    report = asyncio.run(scan(settings, probe=probe))
    return (render_json(report) if as_json else render_table(report)), exit_code(report)
