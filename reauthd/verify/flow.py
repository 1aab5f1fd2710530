"""The persisted progress of one verify-and-retire run, kept in the task's `details["completion"]`.

Every side effect in CPA is bracketed by two writes of this record: the intent ("sent") before the
request and the result after it. A crash in between leaves "sent", and the runner then re-checks CPA
before repeating the step (each step is idempotent). The record holds no secrets: file names (which embed
an e-mail where CPA names files that way, like the task's own `auth_name`), auth indexes, timestamps,
states and plain-language notes only — never a token, a key, a setting's value or a downloaded file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

DETAILS_KEY = "completion"
VERSION = 1


class Phase(StrEnum):
    FIND = "find"  # waiting for CPA to list the new credential
    VERIFY = "verify"  # one test request with the new credential
    RETIRE = "retire"  # copy settings, disable, delete (per policy)
    FINISHED = "finished"  # the task left verifying/retiring (done, failed, operator)


class StepState(StrEnum):
    PENDING = "pending"
    SENT = "sent"  # the request went out (or may have): the answer is not recorded
    DONE = "done"
    SKIPPED = "skipped"


class PublicStage(StrEnum):
    PLANNED = "planned"  # original prefix recorded, temporary prefix not sent yet
    PREFIX_SENT = "prefix_sent"
    PREFIX_SET = "prefix_set"
    RESTORE_SENT = "restore_sent"
    RESTORED = "restored"


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass(slots=True)
class Candidate:
    """The single candidate as last seen, to tell how long it has looked unchanged (same-name settle)."""

    name: str
    auth_index: str
    fingerprint: str  # status|modtime|last_refresh
    first_seen: datetime


@dataclass(slots=True)
class NewCredential:
    name: str
    auth_index: str
    provider: str
    same_name: bool


@dataclass(slots=True)
class PublicCheck:
    """The public-API verification's own steps: set a temporary prefix, one request, restore."""

    prefix: str
    original_prefix: str | None  # None: the file had no prefix (restored as "", which CPA reads as none)
    model: str
    stage: PublicStage = PublicStage.PLANNED


@dataclass(slots=True)
class Verification:
    method: str = ""  # "probe" | "public_api"
    attempts: int = 0
    not_routed: int = 0  # public API answers "unknown model" while CPA has not routed the prefix yet
    next_attempt_at: datetime | None = None
    result: str = ""  # "" (not yet), "ok", "refused"
    detail: str = ""
    at: datetime | None = None  # when the successful (or refusing) answer was recorded
    public: PublicCheck | None = None


@dataclass(slots=True)
class Flow:
    attempt: str  # identifies the login attempt this run belongs to (time the task entered verifying)
    since: datetime  # files written before this are not the new credential
    started: datetime
    expected_name: str | None = None
    phase: Phase = Phase.FIND
    candidate: Candidate | None = None
    new: NewCredential | None = None
    verification: Verification = field(default_factory=Verification)
    steps: dict[str, StepState] = field(default_factory=dict)
    # The old file's `modtime` when reauthd last looked at it (after its own change, if any): a different
    # one at the re-check means somebody rewrote the file meanwhile.
    old_modtime: str | None = None
    we_disabled: bool = False
    old_disabled_by_someone: bool = False
    retire_errors: int = 0
    retire_after: datetime | None = None  # backoff after a failed retire step (CPA down)
    last_error: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        """True once a successful test request of the new credential is recorded: the only key to retiring."""
        return self.verification.result == "ok" and self.verification.at is not None

    def note(self, text: str) -> None:
        if text and text not in self.notes:
            self.notes.append(text)

    # ------------------------------------------------------------------------------ (de)serialise

    def to_json(self) -> dict[str, Any]:
        raw = asdict(self)
        raw["v"] = VERSION
        out: dict[str, Any] = _jsonable(raw)
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Flow:
        cand = raw.get("candidate")
        new = raw.get("new")
        ver = dict(raw.get("verification") or {})
        pub = ver.pop("public", None)
        return cls(
            attempt=str(raw["attempt"]),
            since=datetime.fromisoformat(raw["since"]),
            started=datetime.fromisoformat(raw["started"]),
            expected_name=raw.get("expected_name"),
            phase=Phase(raw.get("phase", Phase.FIND)),
            candidate=None
            if cand is None
            else Candidate(
                cand["name"],
                cand["auth_index"],
                cand["fingerprint"],
                datetime.fromisoformat(cand["first_seen"]),
            ),
            new=None if new is None else NewCredential(**new),
            verification=Verification(
                method=ver.get("method", ""),
                attempts=int(ver.get("attempts", 0)),
                not_routed=int(ver.get("not_routed", 0)),
                next_attempt_at=_dt(ver.get("next_attempt_at")),
                result=ver.get("result", ""),
                detail=ver.get("detail", ""),
                at=_dt(ver.get("at")),
                public=None
                if pub is None
                else PublicCheck(
                    pub["prefix"], pub.get("original_prefix"), pub["model"], PublicStage(pub["stage"])
                ),
            ),
            steps={k: StepState(v) for k, v in (raw.get("steps") or {}).items()},
            old_modtime=raw.get("old_modtime"),
            we_disabled=bool(raw.get("we_disabled", False)),
            old_disabled_by_someone=bool(raw.get("old_disabled_by_someone", False)),
            retire_errors=int(raw.get("retire_errors", 0)),
            retire_after=_dt(raw.get("retire_after")),
            last_error=raw.get("last_error", ""),
            notes=list(raw.get("notes", [])),
        )


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value
