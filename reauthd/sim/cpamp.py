"""A CPA Manager Plus ("CPAMP") Manager Server simulator: the read side reauthd uses, copied from CPAMP
v1.12.x (github seakee/CPA-Manager-Plus, `apps/manager-server/internal/...`; paths below are relative to it).

    async with CPAMPSimServer("admin-key", cpa=sim.state) as cpamp:   # loopback, free port
        cpamp.sim.add_candidate(auth.name, "token_revoked", auth_index=auth.auth_index)
        cpamp.sim.add_run([cpamp.sim.inspection_result(auth.name, "deactivated_workspace", ...)])

It is never kinder than CPAMP: the list limit is capped as CPAMP caps it, only pending candidates count in
`pendingCount`, candidates never resolve themselves, inspection reasons are CPAMP's Chinese sentences, and
a refused key gets CPAMP's exact 401 body. Given the CPA simulator's state, a re-login candidate with
auto-disable on disables the file in CPA, as CPAMP's worker does.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from reauthd.sim.state import SimState

CANDIDATES_PATH = "/v0/management/account-action-candidates"
RUNS_PATH = "/v0/management/codex-inspection/runs"
POLICY_PATH = "/usage-service/account-processing-policy"

# service/credentialpolicy/policy.go EvaluateFailure: reason code → (action, reason, autoDisableEligible).
REASONS: dict[str, tuple[str, str, bool]] = {
    "workspace_deactivated": (
        "delete",
        "Workspace is deactivated; review and delete the stale auth file if appropriate",
        True,
    ),
    "account_deactivated": (
        "delete",
        "Account is deactivated; review and delete the stale auth file if appropriate",
        True,
    ),
    "token_revoked": ("reauth", "OAuth token was revoked or invalidated; reauthorize the account", True),
    "invalid_credentials": ("reauth", "Credentials are invalid or expired; reauthorize the account", True),
    "credential_permission_denied": (
        "review",
        "xAI rejected this credential for the chat endpoint; review credential permissions",
        True,
    ),
    "authentication_review": ("review", "Authentication failure requires manual review", False),
}

# service/codexinspection/service.go resolveProbeAction / resolveUnauthorizedProbeAction /
# resolveDeactivatedWorkspaceProbeAction: outcome → (action, statusCode, actionReason, body).
INSPECTION_OUTCOMES: dict[str, tuple[str, int, str, str]] = {
    "deactivated_workspace": (
        "delete",
        402,
        "接口返回 402，工作区已停用，建议删除账号",
        '{"detail":{"code":"deactivated_workspace"}}',
    ),
    "token_revoked": (
        "reauth",
        401,
        "接口返回 401，认证令牌已失效，建议重新登录账号",
        '{"error":{"message":"Your authentication token has been invalidated. Please try signing in again.",'
        '"type":"invalid_request_error","code":"token_invalidated"},"status":401}',
    ),
    "invalid_credentials": (
        "reauth",
        401,
        "接口返回 401，登录已过期，建议重新登录账号",
        '{"error":{"message":"Provided authentication token is expired. Please try signing in again.",'
        '"code":"token_expired"},"status":401}',
    ),
    "unauthorized": ("reauth", 401, "接口返回 401，认证失败，建议重新登录账号", '{"error":"unauthorized"}'),
    "healthy": ("keep", 200, "周限额仍可用，无需处理", ""),
    "quota": ("disable", 200, "周限额达到阈值，建议禁用账号", ""),
}


@dataclass
class Policy:
    """service/automation/service.go Status: env/DB switches, both off by default (config/config.go)."""

    queue_enabled: bool = False  # USAGE_ACCOUNT_ACTIONS_ENABLED
    auto_disable: bool = False  # USAGE_ACCOUNT_ACTIONS_AUTO_DISABLE (effective only with the queue)


@dataclass
class Faults:
    """One-shot answers for the next GET of a path: (status, body bytes, content type)."""

    next: dict[str, list[tuple[int, bytes, str]]] = field(default_factory=dict)


def _ms(clock: Callable[[], float]) -> int:
    return int(clock() * 1000)


class CPAMPSim:
    """The Manager Server's state and its HTTP handlers (ASGI)."""

    def __init__(
        self,
        admin_key: str = "cpamp-admin-key",
        *,
        cpa: SimState | None = None,
        clock: Callable[[], float] | None = None,
        policy: Policy | None = None,
        service_id: str = "cpa-manager-plus",
    ) -> None:
        self.admin_key = admin_key
        self.cpa = cpa
        if clock is None:
            clock = (lambda: cpa.now().timestamp()) if cpa is not None else time.time
        self.clock = clock
        self.policy = policy or Policy()
        self.service_id = service_id
        self.candidates: list[dict[str, Any]] = []
        self.runs: list[dict[str, Any]] = []
        self.results: dict[int, list[dict[str, Any]]] = {}
        self.faults = Faults()
        self.requests: list[str] = []  # "METHOD path?query" (never headers)
        self.authorized: list[bool] = []  # per request: did it carry the Admin Key
        self._next_id = 0

    def now_ms(self) -> int:
        return _ms(self.clock)

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id

    # ------------------------------------------------------------------ account-action candidates

    def add_candidate(
        self,
        auth_file_name: str,
        reason_code: str,
        *,
        auth_index: str = "",
        provider: str = "codex",
        seen_at_ms: int | None = None,
        stored_at_ms: int | None = None,
        reason: str | None = None,
        account: str = "",
    ) -> dict[str, Any]:
        """repository/accountaction/repository.go Upsert: one pending row per (file, action, reason code,
        auth index); a repeat bumps `hitCount`, `lastSeenAtMs` (the event's time) and `updatedAtMs` (now).
        Then worker/account_action_candidate.go maybeAutoDisable when the policy says so.
        `stored_at_ms` is when CPAMP stored it (default now): an old candidate was stored long ago."""
        action, default_reason, eligible = REASONS[reason_code]
        now = stored_at_ms if stored_at_ms is not None else self.now_ms()
        seen = seen_at_ms if seen_at_ms is not None and seen_at_ms > 0 else now
        for existing in self.candidates:
            if (
                existing["status"] == "pending"
                and existing["authFileName"] == auth_file_name
                and existing["actionType"] == action
                and existing.get("reasonCode", "") == reason_code
                and existing.get("authIndex", "") == auth_index
            ):
                existing["lastSeenAtMs"] = seen
                existing["hitCount"] += 1
                existing["updatedAtMs"] = now
                existing["autoDisableEligible"] = existing["autoDisableEligible"] or eligible
                self._maybe_auto_disable(existing)
                return existing
        item: dict[str, Any] = {
            "id": self._id(),
            "actionType": action,
            "status": "pending",
            "provider": provider,
            "authFileName": auth_file_name,
            "reasonCode": reason_code,
            "reason": reason if reason is not None else default_reason,
            "autoDisableEligible": eligible,
            "firstSeenAtMs": seen,
            "lastSeenAtMs": seen,
            "hitCount": 1,
            "createdAtMs": now,
            "updatedAtMs": now,
        }
        # model/account_action_candidate.go: authIndex, accountSnapshot, autoDisabledAtMs are omitempty.
        if auth_index:
            item["authIndex"] = auth_index
        if account:
            item["accountSnapshot"] = account
        self.candidates.append(item)
        self._maybe_auto_disable(item)
        return item

    def _maybe_auto_disable(self, item: dict[str, Any]) -> None:
        """worker/account_action_candidate.go maybeAutoDisable: only eligible candidates, only when the
        policy's auto-disable is effective, skipped when CPA already lists the file disabled; then
        `PATCH /auth-files/status disabled=true` and repository.go MarkAutoDisabled (sets
        `autoDisabledAtMs` and `updatedAtMs` to now)."""
        if not (self.policy.queue_enabled and self.policy.auto_disable) or not item["autoDisableEligible"]:
            return
        if self.cpa is None:
            item["lastError"] = "CPA runtime config is unavailable for auto-disable"
            return
        auth = self.cpa.auth_by_name(item["authFileName"])
        if auth is None or (item.get("authIndex") and auth.auth_index != item["authIndex"]):
            item["lastError"] = "current CPA auth file identity verification failed: auth file not found"
            item["updatedAtMs"] = self.now_ms()
            return
        if auth.disabled:
            return  # reason=already_disabled: no marker
        # The same change CPA's PATCH /auth-files/status makes (the CPA simulator's patch_status).
        auth.disabled = True
        auth.clear_failures()
        auth.status, auth.status_message = "disabled", "disabled via management API"
        auth.updated_at = self.cpa.now()
        auth.touch()
        self.cpa.persist_runtime(auth)
        now = self.now_ms()
        item["autoDisabledAtMs"] = now
        item["updatedAtMs"] = now
        item.pop("lastError", None)

    def set_status(self, candidate_id: int, status: str) -> None:
        """handler.go ignore/resolve (a person's click): repository.go updateStatus sets updatedAtMs."""
        for item in self.candidates:
            if item["id"] == candidate_id:
                item["status"] = status
                item["updatedAtMs"] = self.now_ms()
                item.pop("lastError", None)

    def list_candidates(self, status: str, limit: int) -> dict[str, Any]:
        """service/accountaction/service.go List + repository.go List/Count: `limit` ≤ 0 or > 500 becomes
        100; pending first, then `lastSeenAtMs` desc, id desc; `pendingCount` counts every pending row."""
        if limit <= 0 or limit > 500:
            limit = 100
        rows = [c for c in self.candidates if not status or c["status"] == status]
        rows.sort(key=lambda c: (0 if c["status"] == "pending" else 1, -c["lastSeenAtMs"], -c["id"]))
        pending = sum(1 for c in self.candidates if c["status"] == "pending")
        return {"items": rows[:limit], "pendingCount": pending}

    # ------------------------------------------------------------------ codex inspection

    def inspection_result(
        self,
        file_name: str,
        outcome: str,
        *,
        auth_index: str = "",
        provider: str = "codex",
        disabled: bool = False,
        created_at_ms: int | None = None,
        action_status: str | None = None,
        executed_action: str = "",
    ) -> dict[str, Any]:
        """One model.CodexInspectionResult as service.go inspectSingleAccount writes it: `statusCode`, and
        for a non-2xx answer `errorKind` "http_status" with the upstream body as `errorDetail`.
        `actionStatus` follows model.NormalizeCodexInspectionActionStatus (pending for executable
        actions, none otherwise)."""
        action, status_code, reason, body = INSPECTION_OUTCOMES[outcome]
        if action_status is None:
            action_status = "pending" if action in ("delete", "disable", "enable") else "none"
        result: dict[str, Any] = {
            "id": self._id(),
            "runId": 0,
            "accountKey": auth_index or file_name,
            "fileName": file_name,
            "displayAccount": file_name,
            "provider": provider,
            "disabled": disabled,
            "action": action,
            "actionReason": reason,
            "actionStatus": action_status,
            "statusCode": status_code,
            "isQuota": outcome == "quota",
            "autoRecoverEligible": False,
            "quotaInventoryObserved": outcome in ("healthy", "quota"),
            "createdAtMs": created_at_ms if created_at_ms is not None else self.now_ms(),
        }
        if auth_index:
            result["authIndex"] = auth_index
        if executed_action:
            result["executedAction"] = executed_action
        if outcome in ("healthy", "quota"):
            result["usedPercent"] = 100.0 if outcome == "quota" else 12.0
        if not 200 <= status_code < 300:
            result["errorKind"] = "http_status"
            result["errorDetail"] = body or f"HTTP {status_code}"
        return result

    def add_run(self, results: list[dict[str, Any]], *, status: str = "completed") -> int:
        """A finished inspection run (model.CodexInspectionRun) with its results."""
        run_id = self._id()
        now = self.now_ms()
        for result in results:
            result["runId"] = run_id
        counts = {
            a: sum(1 for r in results if r["action"] == a) for a in ("delete", "disable", "enable", "reauth")
        }
        self.runs.append(
            {
                "id": run_id,
                "triggerType": "scheduled",
                "status": status,
                "startedAtMs": now,
                "finishedAtMs": now if status != "running" else 0,
                "totalFiles": len(results),
                "probeSetCount": len(results),
                "sampledCount": len(results),
                "disabledCount": sum(1 for r in results if r.get("disabled")),
                "enabledCount": sum(1 for r in results if not r.get("disabled")),
                "deleteCount": counts["delete"],
                "disableCount": counts["disable"],
                "enableCount": counts["enable"],
                "reauthCount": counts["reauth"],
                "keepCount": sum(1 for r in results if r["action"] == "keep"),
                "settings": {"autoActionMode": "none", "usedPercentThreshold": 100},
                "createdAtMs": now,
                "updatedAtMs": now,
                "active": status == "running",
                "cancellable": status == "running",
            }
        )
        self.results[run_id] = results
        return run_id

    def list_runs(self, limit: int) -> dict[str, Any]:
        """controller/codexinspection/handler.go (default 20) + repository/codexinspection/repository.go
        ListRuns: `limit` ≤ 0 or > 200 becomes 50; `started_at_ms desc, id desc`; wrapped in `items`."""
        if limit <= 0 or limit > 200:
            limit = 50
        runs = sorted(self.runs, key=lambda r: (-r["startedAtMs"], -r["id"]))
        return {"items": runs[:limit]}

    # ------------------------------------------------------------------ policy

    def policy_status(self) -> dict[str, Any]:
        """service/automation/service.go statusFromSettings (startup source, nothing locked)."""

        def capability(enabled: bool, configured: bool, env: str, key: str, **extra: str) -> dict[str, Any]:
            return {
                "enabled": enabled,
                "configured": configured,
                "source": "startup",
                "locked": False,
                "envKey": env,
                "configFileKey": key,
                **extra,
            }

        queue, auto = self.policy.queue_enabled, self.policy.auto_disable
        return {
            "source": "startup",
            "codexQuotaCooldown": capability(
                False, False, "USAGE_QUOTA_COOLDOWN_ENABLED", "quotaCooldownEnabled"
            ),
            "authIssueQueue": capability(
                queue, queue, "USAGE_ACCOUNT_ACTIONS_ENABLED", "accountActionsEnabled"
            ),
            "authIssueAutoDisable": capability(
                queue and auto,
                auto,
                "USAGE_ACCOUNT_ACTIONS_AUTO_DISABLE",
                "accountActionsAutoDisable",
                dependsOn="authIssueQueue",
            ),
        }

    # ------------------------------------------------------------------ faults

    def fail_next(
        self, path: str, status: int, body: bytes = b"", content_type: str = "application/json"
    ) -> None:
        """The next GET of `path` answers this instead (a 5xx, bad JSON, an oversized body)."""
        self.faults.next.setdefault(path, []).append((status, body, content_type))

    # ------------------------------------------------------------------ HTTP

    def _authorized(self, request: Request) -> bool:
        """middleware/auth.go AuthorizePanel: the Admin Key as `Authorization: Bearer`."""
        header = request.headers.get("authorization", "")
        return header == f"Bearer {self.admin_key}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        path = request.url.path.rstrip("/") or "/"
        self.requests.append(f"{request.method} {path}?{request.url.query}")
        self.authorized.append(self._authorized(request))
        response = self._route(request, path)
        await response(scope, receive, send)

    def _route(self, request: Request, path: str) -> Response:
        fault = self.faults.next.get(path)
        if fault and request.method == "GET":
            status, body, content_type = fault.pop(0)
            return Response(body, status, media_type=content_type)
        if path == "/health":
            # controller/health/handler.go: unauthenticated, GET only.
            if request.method != "GET":
                return _error(405, "method not allowed")
            return _json(200, {"ok": True, "service": self.service_id})
        if path == POLICY_PATH:
            # controller/automation/handler.go authorizeRead (CPA connection configured: the key counts).
            if request.method != "GET":
                return _error(405, "method not allowed")
            if not self._authorized(request):
                return _error(401, "invalid admin key")
            return _json(200, self.policy_status())
        if path.startswith(CANDIDATES_PATH) or path.startswith("/v0/management/codex-inspection"):
            # Both handlers call middleware.AuthorizePanel first, for every method and sub-path.
            if not self._authorized(request):
                return _error(401, "invalid admin key")
            if path == CANDIDATES_PATH:
                if request.method != "GET":
                    return _error(405, "method not allowed")
                return _json(
                    200,
                    self.list_candidates(
                        request.query_params.get("status", "").strip(), _limit(request, 100)
                    ),
                )
            if path == RUNS_PATH:
                if request.method != "GET":
                    return _error(405, "method not allowed")
                return _json(200, self.list_runs(_limit(request, 20)))
            if path.startswith(RUNS_PATH + "/") and request.method == "GET":
                raw = path[len(RUNS_PATH) + 1 :]
                if not raw.isdigit() or int(raw) <= 0:
                    return _error(400, "run id is required")
                run = next((r for r in self.runs if r["id"] == int(raw)), None)
                if run is None:
                    return _error(404, "codex inspection run not found")
                return _json(200, {"run": run, "results": self._sorted_results(run["id"]), "logs": []})
            return _error(405, "method not allowed")
        if path.startswith("/v0/management/"):
            # router.go: anything else under /v0/management is proxied to CPA (not simulated: 502).
            return _error(502, "CPA upstream is not simulated")
        return PlainTextResponse("404 page not found\n", 404)  # http.NotFound

    def _sorted_results(self, run_id: int) -> list[dict[str, Any]]:
        # repository.go ListResults: `order by file_name asc, display_account asc, id asc`.
        return sorted(self.results[run_id], key=lambda r: (r["fileName"], r["displayAccount"], r["id"]))


def _limit(request: Request, default: int) -> int:
    """The handlers' `strconv.Atoi`: a positive integer, else the handler default."""
    raw = request.query_params.get("limit", "").strip()
    try:
        parsed = int(raw)
    except ValueError:
        return default
    return parsed if parsed > 0 else default


def _json(status: int, value: Any) -> Response:
    # http/response/response.go JSON: json.Encoder adds a newline.
    return Response(json.dumps(value, ensure_ascii=False) + "\n", status, media_type="application/json")


def _error(status: int, message: str) -> Response:
    """http/response/error.go Error: `{"error": msg, "code": UsageServiceErrorCode(msg)}`."""
    codes = {"invalid admin key": "invalid_admin_key", "method not allowed": "method_not_allowed"}
    return _json(status, {"error": message, "code": codes.get(message, "request_failed")})


class CPAMPSimServer:
    """Serves a `CPAMPSim` on a loopback port (0 = a free one). `async with` starts and stops it."""

    def __init__(
        self, admin_key: str = "cpamp-admin-key", *, host: str = "127.0.0.1", port: int = 0, **kwargs: Any
    ) -> None:
        self.sim = CPAMPSim(admin_key, **kwargs)
        self.host, self.port = host, port
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self._sock = sock
        config = uvicorn.Config(
            self.sim, log_level="warning", lifespan="off", access_log=False, log_config=None
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        for _ in range(500):
            if self._server.started:
                return
            if self._task.done():
                break
            await asyncio.sleep(0.01)
        await self.stop()
        raise RuntimeError("the CPAMP simulator did not start")

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            await asyncio.wait_for(self._task, 10)
            self._task = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def __aenter__(self) -> CPAMPSimServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


@asynccontextmanager
async def serve_cpamp(admin_key: str = "cpamp-admin-key", **kwargs: Any) -> AsyncIterator[CPAMPSimServer]:
    async with CPAMPSimServer(admin_key, **kwargs) as server:
        yield server
