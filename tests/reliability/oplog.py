"""Reading the simulated CPA's operation log: which real requests reauthd sent, in which order, and which
credential each upstream probe tested (make before break, issue 6)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from reauthd.sim.state import SimState
from reauthd.sim.upstream import UpstreamAnswer

MGMT = "/v0/management"


def record_probes(state: SimState) -> None:
    """Put every upstream probe (what `/api-call` forwards) into the oplog with the probed auth_index,
    so the log shows the order of probes and management requests. Run on the simulator's loop."""
    original = state.upstream.probe

    def probe(provider: str, url: str, token: str, now: datetime) -> UpstreamAnswer:
        answer = original(provider, url, token, now)
        owners = [a.auth_index for a in state.auths.values() if a.access_token == token]
        state.oplog.append({"marker": "upstream-probe", "auth_indexes": owners, "status": answer.status})
        return answer

    state.upstream.probe = probe  # type: ignore[method-assign]


def step_of(entry: dict[str, Any], old_name: str) -> str | None:
    """Name the entry if it is one of the steps the order check cares about."""
    if entry.get("marker") == "upstream-probe":
        return "probe"
    path = str(entry.get("path", "")).removeprefix(MGMT)
    raw = entry.get("body")
    body: dict[str, Any] = raw if isinstance(raw, dict) else {}
    method = entry.get("method")
    if method == "PATCH" and path == "/auth-files/status" and body.get("name") == old_name:
        return "disable-old" if body.get("disabled") is True else "enable-old"
    if method == "DELETE" and path == "/auth-files":
        return "delete"
    if method == "POST" and path == "/oauth-callback":
        return "oauth-callback"
    if method == "GET" and path.endswith("-auth-url"):
        return "auth-url"
    return None


def retire_before_verify(oplog: list[dict[str, Any]], old_name: str, new_index: str) -> list[str]:
    """Every disable/delete of the old file that CPA may have carried out (200, or 0 = connection
    dropped) before a 2xx probe of the new credential: the list must be empty."""
    verified = False
    violations = []
    for entry in oplog:
        step = step_of(entry, old_name)
        if step == "probe" and 200 <= entry["status"] < 300 and new_index in entry["auth_indexes"]:
            verified = True
        elif step in ("disable-old", "delete") and entry["status"] in (0, 200) and not verified:
            violations.append(f"{step} (seq {entry['seq']}) before a successful probe of {new_index}")
    return violations
