"""CPAMP as an evidence source: pending account-action candidates and Codex/xAI inspection results.

CPAMP's Manager Server (cpamp-signals.md §4.3, §5.3) lists candidates at
`GET /v0/management/account-action-candidates?status=pending` and inspection runs at
`GET /v0/management/codex-inspection/runs[/<id>]`, authenticated with its Admin Key. reauthd only
reads: it never resolves, ignores or deletes candidates, and never runs an inspection.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import structlog

from reauthd.config import CPAMPConfig
from reauthd.core.model import Evidence, EvidenceSource
from reauthd.core.sanitize import sanitize_text

log = structlog.get_logger(__name__)

CANDIDATES_PATH = "/v0/management/account-action-candidates"
RUNS_PATH = "/v0/management/codex-inspection/runs"
MAX_BODY_BYTES = 8 * 1024 * 1024
# Inspection results whose action already happened or was dismissed (cpamp-signals.md §3.3).
_SETTLED = frozenset({"success", "skipped", "executed", "resolved"})
_GONE_REASONS = ("workspace_deactivated", "account_deactivated")


@dataclass(frozen=True, slots=True)
class CPAMPFinding:
    auth_index: str | None
    file_name: str | None
    evidence: Evidence


def _items(body: Any, *keys: str) -> list[dict[str, Any]]:
    """The list of objects in CPAMP's answer, whether bare or wrapped in `items`/`data`/…"""
    if isinstance(body, list):
        return [x for x in body if isinstance(x, dict)]
    if isinstance(body, dict):
        for key in (*keys, "items", "data", "list"):
            value = body.get(key)
            if isinstance(value, list):
                return [x for x in value if isinstance(x, dict)]
            if isinstance(value, dict):
                nested = _items(value, *keys)
                if nested:
                    return nested
    return []


def _str(item: dict[str, Any], *names: str) -> str | None:
    for name in names:
        value = item.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def candidate_finding(item: dict[str, Any], now: datetime) -> CPAMPFinding | None:
    """A pending candidate whose action is reauth (or a delete for a deactivated account)."""
    action = (_str(item, "actionType", "action_type", "action") or "").lower()
    status = (_str(item, "status") or "pending").lower()
    reason_code = (_str(item, "reasonCode", "reason_code") or "").lower()
    if status != "pending":
        return None
    if action == "reauth":
        code = reason_code if reason_code in ("token_revoked", "invalid_credentials") else "reauth"
    elif action == "delete" and reason_code in _GONE_REASONS:
        code = reason_code
    else:
        return None
    return CPAMPFinding(
        auth_index=_str(item, "authIndex", "auth_index"),
        file_name=_str(item, "authFileName", "auth_file_name", "fileName"),
        evidence=Evidence(
            source=EvidenceSource.CPAMP,
            observed_at=now,
            text=sanitize_text(_str(item, "reason") or ""),
            code=code,
        ),
    )


def inspection_finding(item: dict[str, Any], now: datetime) -> CPAMPFinding | None:
    """An inspection result recommending reauth (or delete for a deactivated workspace)."""
    action = (_str(item, "action") or "").lower()
    action_status = (_str(item, "actionStatus", "action_status") or "").lower()
    if action_status in _SETTLED:
        return None
    reason = _str(item, "actionReason", "action_reason") or ""
    if action == "reauth":
        code = "reauth"
    elif action == "delete" and "deactivated" in reason.lower():
        code = "workspace_deactivated"
    else:
        return None
    status_code = item.get("statusCode", item.get("status_code"))
    return CPAMPFinding(
        auth_index=_str(item, "authIndex", "auth_index"),
        file_name=_str(item, "fileName", "file_name"),
        evidence=Evidence(
            source=EvidenceSource.CPAMP,
            observed_at=now,
            http_status=status_code if isinstance(status_code, int) else None,
            text=sanitize_text(reason),
            code=code,
        ),
    )


class CPAMPSource:
    """Reads one CPAMP Manager Server. A refused Admin Key stops this source until restart."""

    def __init__(self, config: CPAMPConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.name = config.name
        self.cpa = config.cpa
        self.poll_interval_s = config.poll_interval_s
        assert config.admin_key is not None  # resolved by the config model
        self._http = httpx.AsyncClient(
            base_url=config.base_url,
            headers={"Authorization": f"Bearer {config.admin_key.get_secret_value()}"},
            timeout=httpx.Timeout(15.0, connect=5.0),
            transport=transport,
            trust_env=False,
            follow_redirects=False,
        )
        self.stopped: str | None = None

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        async with self._http.stream("GET", path, params=params) as response:
            if response.status_code in (401, 403):
                self.stopped = (
                    f"CPAMP {self.name!r} refused the admin key ({response.status_code}); not asking again"
                )
                log.warning("detect.cpamp.key_refused", cpamp=self.name, status=response.status_code)
                return None
            if response.status_code == 404:
                return None
            if response.status_code >= 400:
                log.warning("detect.cpamp.error", cpamp=self.name, path=path, status=response.status_code)
                return None
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    log.warning("detect.cpamp.too_large", cpamp=self.name, path=path)
                    return None
                chunks.append(chunk)
        try:
            return json.loads(b"".join(chunks))
        except ValueError:
            log.warning("detect.cpamp.not_json", cpamp=self.name, path=path)
            return None

    async def fetch(self, now: datetime) -> list[CPAMPFinding] | None:
        """All current findings, or None when CPAMP could not be read (keep the previous evidence)."""
        if self.stopped:
            return None
        try:
            body = await self._get(CANDIDATES_PATH, {"status": "pending", "limit": "1000"})
            if body is None:
                return None
            findings = [f for item in _items(body, "candidates") if (f := candidate_finding(item, now))]
            findings.extend(await self._inspection_findings(now))
        except httpx.HTTPError as exc:
            log.warning("detect.cpamp.unreachable", cpamp=self.name, error=type(exc).__name__)
            return None
        return findings

    async def _inspection_findings(self, now: datetime) -> list[CPAMPFinding]:
        runs = _items(await self._get(RUNS_PATH, {"limit": "5"}), "runs")
        finished = [r for r in runs if str(r.get("status", "")).lower() == "completed" and "id" in r]
        if not finished:
            return []
        latest = max(finished, key=lambda r: (r.get("finishedAtMs") or 0, r.get("id") or 0))
        detail = await self._get(f"{RUNS_PATH}/{int(latest['id'])}")
        return [f for item in _items(detail, "results") if (f := inspection_finding(item, now))]
