"""CPAMP as an evidence source: pending account-action candidates and Codex/xAI inspection results.

CPAMP's Manager Server (cpamp-signals.md §4.3, §5.3) lists candidates at
`GET /v0/management/account-action-candidates?status=pending` and inspection runs at
`GET /v0/management/codex-inspection/runs[/<id>]`, authenticated with its Admin Key. reauthd only
reads: it never resolves, ignores or deletes candidates, and never runs an inspection.

What CPAMP's fields mean (CPAMP v1.12.x, `apps/manager-server/internal/...`; the simulator in
reauthd/sim/cpamp.py copies them):
- decisions are read from `actionType`/`action`, `reasonCode`, `statusCode` and `errorDetail`, never from
  the free-text reason: CPAMP's inspection writes Chinese sentences (service/codexinspection/service.go);
- candidates are listed at most 500 at a time (repository/accountaction/repository.go caps a larger
  `limit` to 100), so `pendingCount` says whether the list was complete;
- a finding is stamped with CPAMP's own time (a candidate's newest of `updatedAtMs`/`lastSeenAtMs`/
  `createdAtMs`, a result's `createdAtMs`), the time CPAMP's Accounts page orders it by
  (web AccountsPage.tsx, accountCredentialEvidence.ts): candidates never resolve themselves;
- `autoDisabledAtMs` marks a file CPAMP disabled itself (worker/account_action_candidate.go).
"""

from __future__ import annotations

import codecs
import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog

from reauthd.config import CPAMPConfig
from reauthd.core.model import Credential, Evidence, EvidenceSource
from reauthd.core.sanitize import sanitize_text

log = structlog.get_logger(__name__)

HEALTH_PATH = "/health"
POLICY_PATH = "/usage-service/account-processing-policy"
CANDIDATES_PATH = "/v0/management/account-action-candidates"
RUNS_PATH = "/v0/management/codex-inspection/runs"
# repository/accountaction/repository.go List: a limit above 500 is served as 100.
CANDIDATE_LIMIT = 500
# Small answers (health, policy, candidate list ≤ 500 rows, run list) are read whole up to this size; a
# run's detail is streamed result by result (50,000 accounts are ~100 MB of results and logs).
MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_ITEM_CHARS = 4 * 1024 * 1024  # one result (or one log line) of a run's detail
# Inspection results whose action already happened or was dismissed (cpamp-signals.md §3.3).
_SETTLED = frozenset({"success", "skipped", "executed", "resolved"})
_GONE_REASONS = ("workspace_deactivated", "account_deactivated")
_REAUTH_REASONS = ("token_revoked", "invalid_credentials")


class SourceState:
    """What an operator sees about one CPAMP source (/readyz details, /healthz, a metric)."""

    OK = "ok"
    STARTING = "starting"
    KEY_REFUSED = "key_refused"  # 401/403: stopped until restart (never fight the key)
    NOT_CPAMP = "not_cpamp"  # 404 on CPAMP's own paths: base_url points elsewhere (e.g. CPA's :8317)
    UNREACHABLE = "unreachable"
    FAILING = "failing"  # 5xx, bad JSON, too large: previous evidence kept
    QUEUE_DISABLED = "queue_disabled"  # CPAMP's account-action queue is switched off
    ALL = (OK, STARTING, KEY_REFUSED, NOT_CPAMP, UNREACHABLE, FAILING, QUEUE_DISABLED)


@dataclass(frozen=True, slots=True)
class CPAMPFinding:
    auth_index: str | None
    file_name: str | None
    evidence: Evidence
    auto_disabled: bool = False  # CPAMP itself disabled the file for this candidate
    positive: bool = False  # an inspection that proves the login works (a cutoff, not a failure)


@dataclass(slots=True)
class CPAMPRead:
    """One poll. `candidates`/`inspection` are None when that part could not be read: the caller keeps the
    previous evidence of that part. `candidates_complete` is False when CPAMP has more pending candidates
    than it returned: only the returned ones may replace evidence."""

    candidates: list[CPAMPFinding] | None = None
    candidates_complete: bool = False
    inspection: list[CPAMPFinding] | None = None
    inspected: set[str] = field(default_factory=set)  # auth_index / file name of every result read
    candidate_refs: set[str | None] = field(default_factory=set)  # auth_index / file name of candidates


def _str(item: dict[str, Any], *names: str) -> str | None:
    for name in names:
        value = item.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _ms(item: dict[str, Any], *names: str) -> int:
    best = 0
    for name in names:
        value = item.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > best:
            best = value
    return best


def _at(ms: int, fallback: datetime) -> datetime:
    if ms <= 0:
        return fallback  # no timestamp: current (cpamp-signals.md §3.3 "no timestamp is always current")
    try:
        return datetime.fromtimestamp(ms / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return fallback


def candidate_finding(item: dict[str, Any], now: datetime) -> CPAMPFinding | None:
    """A pending candidate whose action is reauth, or delete (a deactivated account or workspace)."""
    action = (_str(item, "actionType", "action_type") or "").lower()
    status = (_str(item, "status") or "").lower()
    reason_code = (_str(item, "reasonCode", "reason_code") or "").lower()
    if status != "pending":
        return None
    if action == "reauth":
        code = reason_code if reason_code in _REAUTH_REASONS else "reauth"
    elif action == "delete":
        # CPAMP's only delete candidates are deactivations (service/credentialpolicy/policy.go).
        code = reason_code if reason_code in _GONE_REASONS else "account_deactivated"
    else:
        return None
    auto_disabled = _ms(item, "autoDisabledAtMs") > 0
    return CPAMPFinding(
        auth_index=_str(item, "authIndex", "auth_index"),
        file_name=_str(item, "authFileName", "auth_file_name"),
        evidence=Evidence(
            source=EvidenceSource.CPAMP,
            observed_at=_at(_ms(item, "updatedAtMs", "lastSeenAtMs", "createdAtMs"), now),
            text=sanitize_text(_str(item, "reason") or ""),
            code=code,
        ),
        auto_disabled=auto_disabled,
    )


def _status_code(item: dict[str, Any]) -> int | None:
    value = item.get("statusCode", item.get("status_code"))
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def inspection_finding(item: dict[str, Any], now: datetime) -> CPAMPFinding | None:
    """An inspection result recommending reauth or delete (a deactivated workspace: status 402 or
    `deactivated_workspace` in the stored upstream body), or one proving the login works."""
    action = (_str(item, "action") or "").lower()
    action_status = (_str(item, "actionStatus", "action_status") or "").lower()
    status = _status_code(item)
    detail = _str(item, "errorDetail", "error_detail") or ""
    at = _at(_ms(item, "createdAtMs"), now)
    auth_index, file_name = _str(item, "authIndex", "auth_index"), _str(item, "fileName", "file_name")
    if action == "reauth" and (_str(item, "executedAction") or "").lower() == "delete":
        return None  # a person turned it into a delete and it ran (accountCredentialEvidence.ts)
    if action in ("reauth", "delete") and action_status in _SETTLED:
        return None
    if action == "reauth":
        code = "reauth"
    elif action == "delete" and (status == 402 or "deactivated_workspace" in detail.lower()):
        code = "workspace_deactivated"
    elif status is not None and (
        200 <= status < 400 or (status in (402, 429) and item.get("isQuota") is True)
    ):
        # accountCredentialEvidence.ts inspectionProvesAuthentication: hides older failures.
        return CPAMPFinding(
            auth_index,
            file_name,
            evidence=Evidence(EvidenceSource.CPAMP, at, http_status=status, code="healthy"),
            positive=True,
        )
    else:
        return None
    return CPAMPFinding(
        auth_index,
        file_name,
        evidence=Evidence(
            source=EvidenceSource.CPAMP,
            observed_at=at,
            http_status=status,
            text=sanitize_text(detail[:512]),
            code=code,
        ),
    )


def _whole_ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def current_evidence(
    findings: list[CPAMPFinding], credential: Credential | None, floor: datetime | None
) -> tuple[tuple[Evidence, ...], bool]:
    """The findings that still count for this credential, and whether CPAMP auto-disabled it, as CPAMP's
    Accounts page decides (AccountsPage.tsx `actionCandidatesByRowKey`, accountCredentialEvidence.ts
    `getAccountCredentialEvidenceCutoffs`): a failure at or before the credential's last refresh, or
    before an inspection proving the login works, is hidden. A failure that still counts is stamped no
    earlier than `floor` (when reauthd first saw the file listed active): CPAMP never reads CPA's
    "active" as proof (after a CPA restart every file is active), so it must not outrank CPAMP's
    evidence either; a probe or inspection that succeeds later still does. Sorted, so an unchanged set
    compares equal from one poll to the next."""
    stamps = [f.evidence.observed_at for f in findings if f.positive]
    if credential is not None and credential.last_refresh is not None:
        stamps.append(credential.last_refresh)
    # CPAMP compares in whole milliseconds (readTimestampMs): a failure in the refresh's millisecond is old.
    cutoff = max((_whole_ms(t) for t in stamps), default=None)
    kept: set[Evidence] = set()
    auto_disabled = False
    for finding in findings:
        evidence = finding.evidence
        if finding.positive or (cutoff is not None and _whole_ms(evidence.observed_at) <= cutoff):
            continue
        if floor is not None and evidence.observed_at < floor:
            evidence = replace(evidence, observed_at=floor)
        kept.add(evidence)
        auto_disabled = auto_disabled or finding.auto_disabled
    ordered = tuple(sorted(kept, key=lambda e: (e.observed_at, e.code or "", e.text)))
    return ordered, auto_disabled


class _RunDetailReader:
    """Streams `{"run":{…},"results":[…],"logs":[…]}` (service.go RunDetail), one value at a time: only
    the unfinished tail is buffered, results are handed out as they complete, everything else is
    skipped. Raises ValueError for a broken body."""

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._decoder = json.JSONDecoder()
        self._text = ""
        self._pos = 0
        self._state = "open"
        self._key = ""
        self._final = False
        self.found = False
        self.ready: list[dict[str, Any]] = []

    @property
    def finished(self) -> bool:
        return self._state == "done"

    def feed(self, chunk: bytes, *, final: bool = False) -> None:
        try:
            self._text = self._text[self._pos :] + self._utf8.decode(chunk, final)
        except UnicodeDecodeError:
            raise ValueError("not UTF-8") from None
        self._pos = 0
        self._final = final
        while self._step():
            pass
        if self._state == "done":
            return
        if len(self._text) - self._pos > MAX_ITEM_CHARS:
            raise ValueError("a value is too large")
        if final:
            raise ValueError("the body ends early")

    def _ws(self) -> str | None:
        while self._pos < len(self._text) and self._text[self._pos] in " \t\r\n":
            self._pos += 1
        return self._text[self._pos] if self._pos < len(self._text) else None

    def _value(self) -> tuple[bool, Any]:
        try:
            value, end = self._decoder.raw_decode(self._text, self._pos)
        except json.JSONDecodeError:
            if self._final:
                raise ValueError("bad JSON") from None
            return False, None
        if end >= len(self._text) and not self._final:
            return False, None  # a number might go on in the next chunk
        self._pos = end
        return True, value

    def _step(self) -> bool:
        char = self._ws()
        if char is None or self._state == "done":
            return False
        if self._state == "open":
            if char != "{":
                raise ValueError("not an object")
            self._pos += 1
            self._state = "key"
        elif self._state in ("key", "after_value"):
            if char == "}":
                self._pos += 1
                self._state = "done"
            elif char == "," and self._state == "after_value":
                self._pos += 1
                self._state = "key"
            elif char == '"' and self._state == "key":
                ok, key = self._value()
                if not ok:
                    return False
                self._key = str(key)
                self._state = "colon"
            else:
                raise ValueError("bad object")
        elif self._state == "colon":
            if char != ":":
                raise ValueError("bad object")
            self._pos += 1
            self._state = "value"
        elif self._state == "value":
            if char == "[":
                self._pos += 1
                self.found = self.found or self._key == "results"
                self._state = "first"
            else:
                ok, value = self._value()
                if not ok:
                    return False
                self.found = self.found or (self._key == "results" and value is None)  # Go's nil slice
                self._state = "after_value"
        elif self._state in ("first", "next"):
            if char == "]":
                self._pos += 1
                self._state = "after_value"
                if self._key == "results":
                    # Go writes RunDetail's fields in order (run, results, logs): nothing after the
                    # results is needed, so the per-account log lines are not even read.
                    self._state = "done"
                    return False
            elif self._state == "next":
                if char != ",":
                    raise ValueError("bad array")
                self._pos += 1
                self._state = "element"
            else:
                self._state = "element"
        elif self._state == "element":
            ok, value = self._value()
            if not ok:
                return False
            if self._key == "results" and isinstance(value, dict):
                self.ready.append(value)
            self._state = "next"
        return True


class CPAMPError(Exception):
    def __init__(self, state: str, sentence: str) -> None:
        super().__init__(sentence)
        self.state = state
        self.sentence = sentence


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
        self.checked = False
        self.state = SourceState.STARTING
        self.problem: str | None = None  # one sentence while the state is not ok
        self.last_ok: datetime | None = None
        self.pending_count: int | None = None
        self.queue_enabled: bool | None = None
        self.auto_disable: bool | None = None

    async def aclose(self) -> None:
        await self._http.aclose()

    def _set(self, state: str, problem: str | None) -> None:
        if (state, problem) != (self.state, self.problem) and problem is not None:
            log.warning("detect.cpamp.state", cpamp=self.name, state=state, problem=problem)
        elif state == SourceState.OK and self.state not in (SourceState.OK, SourceState.STARTING):
            log.info("detect.cpamp.recovered", cpamp=self.name)
        self.state, self.problem = state, problem

    async def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        """The decoded JSON body; raises CPAMPError with one sentence for anything else."""
        async with self._http.stream("GET", path, params=params) as response:
            self._check(response, path)
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise CPAMPError(
                        SourceState.FAILING, f"CPAMP {self.name!r} sent more than 8 MiB for {path}"
                    )
                chunks.append(chunk)
        try:
            return json.loads(b"".join(chunks))
        except ValueError:
            raise CPAMPError(
                SourceState.FAILING, f"CPAMP {self.name!r} answered {path} with something other than JSON"
            ) from None

    def _check(self, response: httpx.Response, path: str) -> None:
        status = response.status_code
        if status in (401, 403):
            self.stopped = f"CPAMP {self.name!r} refused the admin key ({status}); not asking again until reauthd restarts"
            raise CPAMPError(SourceState.KEY_REFUSED, self.stopped)
        if status == 404:
            raise CPAMPError(
                SourceState.NOT_CPAMP,
                f"{path} does not exist at CPAMP {self.name!r}'s base_url: is it CPA Manager Plus's Manager "
                "Server (default port 18317), not CPA itself?",
            )
        if status >= 400:
            raise CPAMPError(SourceState.FAILING, f"CPAMP {self.name!r} answered {path} with HTTP {status}")

    async def check(self) -> bool:
        """At start: CPAMP's unauthenticated `GET /health` (controller/health/handler.go) says whether
        base_url is a Manager Server at all. True when it is."""
        try:
            request = self._http.build_request("GET", HEALTH_PATH)
            del request.headers["Authorization"]  # /health needs no key: none is sent
            response = await self._http.send(request, stream=True)
            try:
                body = b""
                if response.status_code == 200:
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > 64 * 1024:
                            body = b""
                            break
            finally:
                await response.aclose()
            ok = isinstance(data := json.loads(body or b"null"), dict) and data.get("ok") is True
        except httpx.HTTPError as exc:
            self._set(SourceState.UNREACHABLE, f"CPAMP {self.name!r} is unreachable ({type(exc).__name__})")
            return False
        except ValueError:
            ok = False
        self.checked = True
        if not ok:
            # Never send the Admin Key to something else (CPA bans an address after failed keys).
            self.stopped = "its base_url is not CPA Manager Plus's Manager Server"
            self._set(
                SourceState.NOT_CPAMP,
                f"CPAMP {self.name!r}'s base_url does not answer /health like CPA Manager Plus's Manager "
                "Server (default port 18317); is it pointing at CPA itself?",
            )
        return ok

    async def fetch(self, now: datetime) -> CPAMPRead | None:
        """All current findings, or None when CPAMP could not be read at all (keep the previous evidence).
        A part that failed is None in the answer: the previous evidence of that part is kept."""
        if not self.checked and not await self.check():
            return None
        if self.stopped:
            return None
        read = CPAMPRead()
        try:
            await self._policy()
            body = await self._get(CANDIDATES_PATH, {"status": "pending", "limit": str(CANDIDATE_LIMIT)})
            items = body.get("items") if isinstance(body, dict) else None
            if not isinstance(items, list):
                raise CPAMPError(
                    SourceState.FAILING, f"CPAMP {self.name!r} sent a candidate list without items"
                )
            read.candidates = [
                f for item in items if isinstance(item, dict) and (f := candidate_finding(item, now))
            ]
            read.candidate_refs = {ref for f in read.candidates for ref in (f.auth_index, f.file_name) if ref}
            pending = body.get("pendingCount")
            self.pending_count = pending if isinstance(pending, int) else None
            read.candidates_complete = isinstance(pending, int) and len(items) >= pending
            if not read.candidates_complete:
                log.warning(
                    "detect.cpamp.partial_list", cpamp=self.name, returned=len(items), pending=pending
                )
        except CPAMPError as exc:
            self._set(exc.state, exc.sentence)
            return None
        except httpx.HTTPError as exc:
            self._set(SourceState.UNREACHABLE, f"CPAMP {self.name!r} is unreachable ({type(exc).__name__})")
            return None
        try:
            await self._inspection(read, now)
        except CPAMPError as exc:
            self._set(exc.state, exc.sentence)
            read.inspection = None  # keep the previous inspection evidence
            return read
        except httpx.HTTPError as exc:
            self._set(SourceState.UNREACHABLE, f"CPAMP {self.name!r} is unreachable ({type(exc).__name__})")
            read.inspection = None
            return read
        self.last_ok = now
        if self.queue_enabled is False and not read.candidates:
            self._set(
                SourceState.QUEUE_DISABLED,
                f"CPAMP {self.name!r} has its account-action queue switched off "
                "(USAGE_ACCOUNT_ACTIONS_ENABLED): only its inspection results are read",
            )
        else:
            self._set(SourceState.OK, None)
        return read

    async def _policy(self) -> None:
        """`GET /usage-service/account-processing-policy` (service/automation/service.go Status): tells
        "queue disabled" from "nothing pending". An older CPAMP without it is not an error."""
        try:
            body = await self._get(POLICY_PATH)
        except CPAMPError as exc:
            if exc.state == SourceState.NOT_CPAMP:
                return
            raise
        if isinstance(body, dict):
            queue, auto = body.get("authIssueQueue"), body.get("authIssueAutoDisable")
            if isinstance(queue, dict) and isinstance(queue.get("enabled"), bool):
                self.queue_enabled = queue["enabled"]
            if isinstance(auto, dict) and isinstance(auto.get("enabled"), bool):
                self.auto_disable = auto["enabled"]

    async def _inspection(self, read: CPAMPRead, now: datetime) -> None:
        body = await self._get(RUNS_PATH, {"limit": "5"})
        runs = body.get("items") if isinstance(body, dict) else None
        if not isinstance(runs, list):
            raise CPAMPError(SourceState.FAILING, f"CPAMP {self.name!r} sent a run list without items")
        finished = [
            r for r in runs if isinstance(r, dict) and str(r.get("status", "")).lower() == "completed"
            and isinstance(r.get("id"), int)
        ]  # fmt: skip
        read.inspection = []
        if not finished:
            return
        latest = max(finished, key=lambda r: (_ms(r, "finishedAtMs"), r["id"]))
        path = f"{RUNS_PATH}/{int(latest['id'])}"
        reader = _RunDetailReader()
        async with self._http.stream("GET", path) as response:
            self._check(response, path)
            try:
                async for chunk in response.aiter_bytes():
                    reader.feed(chunk)
                    self._take(reader, read, now)
                    if reader.finished:
                        break  # the rest is CPAMP's per-account log lines
                else:
                    reader.feed(b"", final=True)
            except ValueError as exc:
                raise CPAMPError(
                    SourceState.FAILING, f"CPAMP {self.name!r} sent a broken run ({exc})"
                ) from None
        self._take(reader, read, now)
        if not reader.found:
            raise CPAMPError(SourceState.FAILING, f"CPAMP {self.name!r} sent a run without results")

    @staticmethod
    def _take(reader: _RunDetailReader, read: CPAMPRead, now: datetime) -> None:
        """Turn the results read so far into findings at once (a run of 50,000 is never held)."""
        assert read.inspection is not None
        ready, reader.ready = reader.ready, []
        for item in ready:
            for ident in (_str(item, "authIndex"), _str(item, "fileName")):
                if ident:
                    read.inspected.add(ident)
            finding = inspection_finding(item, now)
            if finding is None:
                continue
            if finding.positive and not ({finding.auth_index, finding.file_name} & read.candidate_refs):
                continue  # "works" matters only beside a candidate it may hide (50,000 healthy accounts)
            read.inspection.append(finding)
