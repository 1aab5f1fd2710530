"""Pydantic models of CPA management answers (contract §2-§7): extra fields ignored, relied-on fields strict.

Strictness (`strict=True`): a field reauthd decides on must have the JSON type CPA's Go code writes: a
`"true"` string is not a bool, `"5"` is not an int, and `status` must be one of the three values CPA
ever assigns (§2.2). One entry breaking these rules is skipped by `parse_auth_file_listing` (counted
and logged), never the whole listing: one odd plugin auth must not blind reauthd to 9,999 others.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from reauthd.core.model import Credential

_STRICT = ConfigDict(extra="ignore", strict=True, frozen=True)
_LOOSE = ConfigDict(extra="ignore", frozen=True)

#: The only values CPA assigns in production code (sdk/cliproxy/auth/status.go, contract §2.2).
#: `unknown`, `pending`, `refreshing` exist in the Go enum but are never set; the docs' `ready` does not exist.
AuthFileStatus = Literal["active", "error", "disabled"]


def _unset_if_zero(value: datetime | None) -> datetime | None:
    """Go's zero `time.Time` (`0001-01-01T00:00:00Z`) means "not set"."""
    return None if value is not None and value.year <= 1 else value


GoTime = Annotated[datetime | None, AfterValidator(_unset_if_zero)]


class CodexIdTokenClaims(BaseModel):
    """`id_token` in a codex listing entry: parsed claims, never the raw JWT (auth_files.go extractCodexIDTokenClaims)."""

    model_config = _STRICT

    chatgpt_account_id: str | None = None
    plan_type: str | None = None
    # Go type `any`: CPA forwards whatever the JWT holds (a string or a number).
    chatgpt_subscription_active_start: Any = None
    chatgpt_subscription_active_until: Any = None


class AuthFile(BaseModel):
    """One entry of `GET /v0/management/auth-files` (contract §2.1, auth_files.go buildAuthFileEntryLocked)."""

    model_config = _STRICT

    # Always present in CPA's answer; reauthd relies on them, so they are required.
    id: str
    auth_index: str = Field(min_length=1)
    name: str = Field(min_length=1)
    type: str
    provider: str
    status: AuthFileStatus
    disabled: bool
    # Always present too, but a missing one has an obvious neutral value.
    label: str = ""
    status_message: str = ""
    unavailable: bool = False
    runtime_only: bool = False
    source: str = "file"
    # Optional, as CPA omits them when empty or zero.
    email: str | None = None
    account_type: str | None = None
    # For `api_key` auths this is the API key itself (types.go AccountInfo): never print it.
    account: str | None = Field(default=None, repr=False)
    path: str | None = None
    project_id: str | None = None
    modtime: GoTime = None
    last_refresh: GoTime = None
    next_retry_after: GoTime = None  # present only when non-zero
    created_at: GoTime = None
    updated_at: GoTime = None
    id_token: CodexIdTokenClaims | None = None
    priority: int | None = None
    note: str | None = None
    weight: int | None = None
    websockets: bool | None = None
    request_retry: int | None = None

    @property
    def account_email(self) -> str | None:
        """The account's e-mail: `email`, else `account` when it is an OAuth account (never an API key)."""
        if self.email:
            return self.email
        if self.account_type == "oauth" and self.account:
            return self.account
        return None

    def to_credential(self, cpa_name: str) -> Credential:
        claims = self.id_token
        return Credential(
            cpa=cpa_name,
            name=self.name,
            auth_index=self.auth_index,
            provider=self.provider or self.type,
            status=self.status,
            status_message=self.status_message,
            disabled=self.disabled,
            unavailable=self.unavailable,
            runtime_only=self.runtime_only,
            email=self.account_email,
            label=self.label,
            source=self.source,
            next_retry_after=self.next_retry_after,
            last_refresh=self.last_refresh,
            modtime=self.modtime,
            account_id=claims.chatgpt_account_id if claims else None,
            plan_type=claims.plan_type if claims else None,
            priority=self.priority,
            note=self.note,
        )


class _UnusableEntry(BaseModel):
    """Whatever can be salvaged from an entry that is not a valid `AuthFile`, to name it in a warning."""

    model_config = _LOOSE

    name: Any = None
    auth_index: Any = None
    status: Any = None


def _registering(entry: object) -> bool:
    """An entry CPA registered from the raw OAuth record a login just saved, before its watcher reloaded
    the file (saveTokenRecord → runtimeAuthSyncHook, sdk/cliproxy/builder.go; contract §13): it has no
    `status` yet. Not a broken entry: it is left out of this listing, silently, until the next one."""
    return isinstance(entry, _UnusableEntry) and entry.status == ""


# left_to_right: a valid entry is validated once, as AuthFile; anything else (an object that breaks the
# contract, or not even an object) lands in the fallbacks instead of failing the whole listing.
_Entry = Annotated[AuthFile | _UnusableEntry | Any, Field(union_mode="left_to_right")]


class _Listing(BaseModel):
    model_config = _LOOSE
    files: list[_Entry]


class _StrictListing(BaseModel):
    model_config = _LOOSE
    files: list[AuthFile]


_LISTING = TypeAdapter(_Listing)
_STRICT_LISTING = TypeAdapter(_StrictListing)


@dataclass(frozen=True, slots=True)
class SkippedEntry:
    """An entry of the listing that broke the contract; `name` is CPA's file name when it was a string."""

    position: int
    name: str | None
    problem: str


@dataclass(frozen=True, slots=True)
class AuthFileListing:
    files: list[AuthFile]
    skipped: list[SkippedEntry]


def parse_auth_file_listing(raw: bytes | bytearray) -> AuthFileListing:
    """Parse `{"files":[...]}` straight from bytes; entries that break the contract are skipped and described.

    Raises `ValidationError` (the caller maps it to MalformedResponse) only when the envelope itself is
    wrong: not JSON, not an object, or no `files` list. pydantic-core parses the bytes without building
    Python objects for ignored fields such as the 20 `recent_requests` buckets of every entry.
    """
    listing = _LISTING.validate_json(raw)
    files: list[AuthFile] = []
    bad: list[tuple[int, object]] = []
    for position, entry in enumerate(listing.files):
        if isinstance(entry, AuthFile):
            files.append(entry)
        elif not _registering(entry):
            bad.append((position, entry))
    if not bad:
        return AuthFileListing(files, [])
    # Rare path: validate again strictly only to say *why* (costs one more parse, only when needed).
    problems: dict[int, str] = {}
    try:
        _STRICT_LISTING.validate_json(raw)
    except ValidationError as exc:
        for err in exc.errors(include_input=False, include_url=False):
            loc = err["loc"]
            if len(loc) >= 2 and loc[0] == "files" and isinstance(loc[1], int):
                field = ".".join(str(p) for p in loc[2:]) or "entry"
                problems.setdefault(loc[1], f"{field}: {err['msg']}")
    skipped = [
        SkippedEntry(
            position=pos,
            name=entry.name if isinstance(entry, _UnusableEntry) and isinstance(entry.name, str) else None,
            problem=problems.get(pos, "not an auth file entry"),
        )
        for pos, entry in bad
    ]
    return AuthFileListing(files, skipped)


# ------------------------------------------------------------------------------------------ OAuth


class AuthURL(BaseModel):
    """Answer of `GET /<provider>-auth-url` (contract §4.1). `url` and `state` are secrets: never log them."""

    model_config = _STRICT

    url: str = Field(min_length=1, repr=False)
    state: str = Field(min_length=1, repr=False)
    flow: Literal["callback", "device"] = "callback"  # CPA omits `flow` for callback and plugin flows
    user_code: str | None = None
    expires_in: int | None = None


class AuthStatus(BaseModel):
    """Answer of `GET /get-auth-status` (contract §4.2). `error` is CPA's message, e.g. `unknown or expired state`."""

    model_config = _STRICT

    status: Literal["wait", "ok", "error"]
    error: str | None = None


class CancelResult(BaseModel):
    model_config = _STRICT
    cancelled: bool = False


# ---------------------------------------------------------------------------------------- tools


class APICallResult(BaseModel):
    """Answer of `POST /api-call` (contract §5): the upstream's status, headers and body, always HTTP 200."""

    model_config = _STRICT

    status_code: int
    header: dict[str, list[str]] = Field(default_factory=dict, repr=False)
    body: str = Field(default="", repr=False)


class VertexImportResult(BaseModel):
    """Answer of `POST /vertex/import` (contract §6). CPA spells the file key `auth-file`."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True, populate_by_name=True)

    auth_file: str = Field(alias="auth-file")
    project_id: str
    email: str = ""
    location: str = ""


class UploadResult(BaseModel):
    """Answer of `POST /auth-files` for one raw-body upload: `{"status":"ok"}`."""

    model_config = _LOOSE
    status: str


class ResetQuotaResult(BaseModel):
    """Answer of `POST /reset-quota` (contract §3)."""

    model_config = _LOOSE
    auth_index: str = ""
    models: list[str] = Field(default_factory=list)


class AuthModel(BaseModel):
    """One model of `GET /auth-files/models` (contract §3)."""

    model_config = _LOOSE
    id: str
    display_name: str | None = None
    type: str | None = None
    owned_by: str | None = None


class AuthModels(BaseModel):
    model_config = _LOOSE
    models: list[AuthModel] = Field(default_factory=list)


class ErrorBody(BaseModel):
    """CPA's error envelope `{"error": "...", "message"?: "..."}` (plus `"status":"error"` on some routes)."""

    model_config = _LOOSE
    error: str
    message: str | None = None


class OkBody(BaseModel):
    """`{"status":"ok", ...}`: the answer of mutating endpoints."""

    model_config = _LOOSE
    status: str


# ---------------------------------------------------------------------------------- error stream


class ErrorEventQuota(BaseModel):
    model_config = _LOOSE
    exceeded: bool = False
    reason: str | None = None
    next_recover_at: datetime | None = None
    backoff_level: int = 0


class ErrorEventModelStatus(BaseModel):
    model_config = _LOOSE
    name: str = ""
    status: str = ""
    status_message: str = ""
    unavailable: bool = False
    next_retry_after: datetime | None = None
    quota: ErrorEventQuota | None = None


class ErrorEventAuthStatus(BaseModel):
    model_config = _LOOSE
    status: str = ""
    status_message: str = ""
    disabled: bool = False
    unavailable: bool = False
    next_retry_after: datetime | None = None
    quota: ErrorEventQuota | None = None
    model: ErrorEventModelStatus | None = None


class ErrorEvent(BaseModel):
    """One message of the RESP `errors` channel (sdk/cliproxy/auth/error_events.go, contract §7)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    timestamp: datetime
    provider: str = ""
    model: str = ""
    auth_id: str = ""
    auth_index: str
    status_code: int = 500  # CPA defaults to 500 when the error has no status
    body: str = ""
    code: str | None = None  # omitted when empty
    retryable: bool = False  # omitted when false
    auth_status: ErrorEventAuthStatus = Field(default_factory=ErrorEventAuthStatus)
