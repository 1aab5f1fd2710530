"""The CLIProxyAPIHome adapter: the `CPAClient` interface, answered by a Home (shared/home-contract.md).

What it covers today (issue 15 point 3): the listing and detection.

- **Identity by UUID.** Home's `id` = `auth_index` = a UUID, and names are not unique after a re-login
  (home-contract §3.1, §5.4). The adapter hands reauthd a CPA-shaped listing whose `name` *is* that UUID, so
  every call reauthd makes "by name" goes to Home by id: `PATCH /auth-files/status {"name": <uuid>}`
  (§3.4: `name` is tried as the id first), `DELETE /auth-files?id=`, `GET /auth-files/download?id=`,
  `PATCH /auth-files/fields {"id": <uuid>}` (§9.3). Home's own display name stays in `label`'s company:
  it is `display_name` in `HomeCredentialView` for pages that want it.
- **Home's auto-disable is a revocation, not a person's choice.** A terminal refresh failure makes Home set
  `disabled:true, status:"disabled", status_message:"unauthorized"` itself (§3.2, `result.go:703-734`). In
  reauthd `disabled` means "a person switched it off" (core/classify.py leaves those alone), so the adapter
  presents such a row as CPA presents the same event: `status:"error"`, `status_message:"unauthorized"`
  (CPA's fixed code after a failed refresh, cpa-contract §2.3), `disabled:false`. An operator's disable
  (`"disabled via management API"`) stays disabled.
- **Fields Home does not have or means otherwise** (§3.1, §3.2): `modtime` is "row updated", not "file
  written", so it is dropped (reauthd must not read a new login from it); `unavailable` is persisted as of
  the last write, so it is dropped for `error` rows (§9.4: "treat as possibly stale").
- **No errors channel** (§4): `failed_request_events()` polls `GET /request-events?status=failed` from a
  cursor, oldest first, pages of 200, deduplicated by event id; `HomeDetector` (reauthd/detect/home.py) turns
  them and listing diffs into evidence.

Logins: `auth_url` (no `is_webui`, xAI by callback, kimi by device), `post_oauth_callback` with the key,
`cancel_oauth_session` refused (Home has none), `find_login_credential` (the new row a login wrote).
Not covered yet (see the README, "CPA clusters (Home)"): reauthd's login page, verify and retire driving
these (copy settings to the new row, verify through Home, delete the old one by id), `/quota/credentials`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog
from pydantic import ValidationError

from reauthd.cpa.client import _STATE_RE, CPAClient
from reauthd.cpa.errors import FeatureMissing, MalformedResponse
from reauthd.cpa.kind import FoundKind
from reauthd.cpa.models import AuthFile, AuthURL, parse_auth_file_listing
from reauthd.cpa.wire import BodyReader, BodyRejected, KiB, MiB, Route

log = structlog.get_logger(__name__)
_T = TypeVar("_T")

_EVENTS = Route("GET", "/request-events", idempotent=True, max_bytes=16 * MiB)
_CAPABILITIES = Route("GET", "/capabilities", idempotent=True, max_bytes=256 * KiB)
#: `limit` is at most 200 (home-contract §4.2).
EVENTS_PAGE = 200
#: Pages read per poll at most: a backlog larger than this is read over the next polls.
EVENTS_MAX_PAGES = 25
# Login provider → `<route>-auth-url` on Home (oauth_login.go:33-51, aliases :1151-1166).
_HOME_AUTH_ROUTE = {
    "claude": "anthropic", "anthropic": "anthropic", "codex": "codex", "openai": "codex",
    "antigravity": "antigravity", "anti-gravity": "antigravity", "kimi": "kimi",
    "xai": "xai", "x-ai": "xai", "x.ai": "xai", "grok": "xai",
}  # fmt: skip
# Login provider → the `type` Home saves (anthropic logins are saved as claude, §3.9).
_SAVED_TYPE = {"anthropic": "claude", "openai": "codex", "anti-gravity": "antigravity", "x-ai": "xai",
               "x.ai": "xai", "grok": "xai"}  # fmt: skip
_HOME_CALLBACK = Route("POST", "/oauth-callback", idempotent=False, max_bytes=64 * KiB, keyed=True)
#: Home writes this after a terminal refresh failure (internal/cliproxy/auth/result.go:703-734).
HOME_AUTO_DISABLED = "unauthorized"


@dataclass(frozen=True, slots=True)
class HomeRequestEvent:
    """One failed request a node reported to Home (management/request_events.go:162-196), secret-free."""

    id: str
    at: datetime
    credential_id: str
    provider: str
    status_code: int | None
    body: str  # error.body_preview (redacted by Home, first 500 bytes), else error.message


def pick_login_row(
    files: list[Any], provider: str, email: str | None, before_ids: Collection[str], started_at: datetime
) -> str | None:
    """See `HomeClient.find_login_credential`. `provider` is a login provider or a saved type; Home saves an
    anthropic login as `type:"claude"` (§3.9). `created_at` is the row's creation, i.e. the login (§3.1)."""
    saved = _SAVED_TYPE.get(provider.strip().lower(), provider.strip().lower())
    found: list[str] = []
    for entry in files:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or entry["id"] in before_ids:
            continue
        if str(entry.get("type") or entry.get("provider") or "").lower() != saved:
            continue
        if email is not None and str(entry.get("email") or "").lower() != email.lower():
            continue
        created = entry.get("created_at")
        try:
            at = datetime.fromisoformat(created.replace("Z", "+00:00")) if isinstance(created, str) else None
        except ValueError:
            at = None
        if at is None or at.tzinfo is None or at < started_at:
            continue
        found.append(entry["id"])
    return found[0] if len(found) == 1 else None


def cpa_shaped_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """One Home listing entry (§3.1) as reauthd reads a CPA entry (see the module docstring for each rule)."""
    out = {k: v for k, v in entry.items() if k not in ("modtime", "name", "file_name")}
    uid = entry.get("id")
    out["name"] = uid  # identity by UUID: every "by name" call goes to Home by id
    out["display_name"] = entry.get("name")
    if entry.get("auth_index") != uid:
        raise ValueError("id and auth_index differ: not a Home listing entry")
    auto_disabled = (
        entry.get("disabled") is True
        and entry.get("status") == "disabled"
        and entry.get("status_message") == HOME_AUTO_DISABLED
    )
    if auto_disabled:
        out["disabled"] = False
        out["status"] = "error"
        out["status_message"] = HOME_AUTO_DISABLED
        out["home_auto_disabled"] = True
    if out.get("status") == "error":
        out.pop("unavailable", None)  # persisted, possibly stale (§3.2)
    return out


def cpa_shaped_listing(body: bytes | bytearray, *, name: str | None, auth_index: str | None) -> bytes:
    """Home's `{"in_flight_observed_at", "files": [...]}` → `{"files": [...]}` of CPA-shaped entries, filtered
    on the client side (Home ignores `name`/`auth_index` query filters, §3.1). Raises BodyRejected."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BodyRejected("the Home listing is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        raise BodyRejected("the Home listing has no files list")
    files: list[Any] = []
    for entry in data["files"]:
        if not isinstance(entry, dict):
            files.append(entry)  # the CPA parser skips and reports it
            continue
        try:
            shaped = cpa_shaped_entry(entry)
        except ValueError:
            files.append({"name": entry.get("name"), "problem": "id and auth_index differ"})
            continue
        if name is not None and shaped["name"] != name:
            continue
        if auth_index is not None and shaped.get("auth_index") != auth_index:
            continue
        files.append(shaped)
    return json.dumps({"files": files}).encode()


class HomeClient(CPAClient):
    """A `CPAClient` whose base_url is a CLIProxyAPIHome. Same key gate, retries, caps and typed errors (Home's
    management middleware is CPA v7.2.83's, home-contract §2)."""

    # Home's /oauth-callback sits behind the management key (§3.10); CPA's is key-less.
    _callback_route = _HOME_CALLBACK

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("kind", "home")
        super().__init__(*args, **kwargs)
        self._wire.serves = FoundKind.HOME

    def __repr__(self) -> str:
        return f"HomeClient(name={self.name!r}, base_url={self.base_url!r})"

    def rebuilt_with_key(self, management_key: Any) -> HomeClient:
        s = self._settings
        return HomeClient(
            self.name, self.base_url, management_key, timeout=s.timeout, connect_timeout=s.connect_timeout,
            max_connections=s.max_connections, retry=s.retry, pause_after_rejection=s.pause_after_rejection,
            listing_max_bytes=s.listing_max_bytes, transport=self._transport, tls_verify=self.tls_verify,
            clock=self._clock, kind=self.configured_kind,
        )  # fmt: skip

    # ------------------------------------------------------------------------------ listing

    async def _shaped(self, name: str | None, auth_index: str | None) -> bytes:
        answer = await self._wire.call(self._list_route)  # Home ignores query filters: none are sent
        try:
            return cpa_shaped_listing(answer.body, name=name, auth_index=auth_index)
        except BodyRejected as exc:
            raise MalformedResponse(self.name, self._list_route.full_path, str(exc)) from None

    async def list_auth_files(
        self, *, name: str | None = None, auth_index: str | None = None
    ) -> list[AuthFile]:
        body = await self._shaped(name, auth_index)
        try:
            listing = parse_auth_file_listing(body)
        except ValidationError as exc:
            raise self._malformed(self._list_route, exc) from None
        self.last_skipped = listing.skipped
        return listing.files

    async def list_auth_files_raw(self, *, name: str | None = None, auth_index: str | None = None) -> bytes:
        return await self._shaped(name, auth_index)

    async def stream_auth_files(
        self,
        reader: Callable[[], BodyReader[_T]],
        *,
        name: str | None = None,
        auth_index: str | None = None,
    ) -> _T:
        """The shaped listing fed to one `reader()`. Home's listing is read whole first (its entries must
        be rewritten); the byte cap of the listing route still bounds it."""
        body = await self._shaped(name, auth_index)
        parse = reader()
        try:
            parse.feed(body)
            return parse.close()
        except BodyRejected as exc:
            raise MalformedResponse(self.name, self._list_route.full_path, str(exc)) from None

    # ------------------------------------------------------------------------ by id, not name

    async def set_disabled(self, name: str, disabled: bool, *, auth_index: str | None = None) -> None:
        """`PATCH /auth-files/status {"name": <uuid>}` (§3.4), then a re-read: Home answers 200 even when a
        version race dropped the write (`repository.go:198-203`), so the listing must confirm it."""
        await super().set_disabled(name, disabled)
        entries = await self.list_auth_files(auth_index=name)
        if not entries:
            raise MalformedResponse(self.name, "/v0/management/auth-files/status", "the credential is gone")
        if entries[0].disabled is not disabled:
            raise MalformedResponse(
                self.name,
                "/v0/management/auth-files/status",
                "Home answered ok but did not keep the change (a concurrent write won); try again",
            )

    async def delete_auth_file(self, name: str) -> None:
        """`DELETE /auth-files?id=<uuid>` (§3.6): never `name=` (after a re-login it may hit the new row)."""
        answer = await self._wire.call(Route("DELETE", "/auth-files", idempotent=True, max_bytes=64 * KiB),
                                       params={"id": name})  # fmt: skip
        self._expect_ok(Route("DELETE", "/auth-files", idempotent=True), answer)

    async def download_auth_file(self, name: str) -> bytes:
        answer = await self._wire.call(Route("GET", "/auth-files/download", idempotent=True, max_bytes=8 * MiB),
                                       params={"id": name})  # fmt: skip
        return bytes(answer.body)

    async def patch_fields(self, name: str, fields: Mapping[str, object]) -> None:
        if not fields:
            raise ValueError("patch_fields needs at least one field")
        if {"name", "id", "uuid", "auth_index", "index"} & set(fields):
            raise ValueError("selector keys cannot be patched")
        route = Route("PATCH", "/auth-files/fields", idempotent=True, max_bytes=64 * KiB)
        answer = await self._wire.call(route, json_body={"id": name, **fields})
        self._expect_ok(route, answer)

    # --------------------------------------------------------------------- not on Home (yet)

    def _not_yet(self, path: str, what: str) -> FeatureMissing:
        version = self.home_version.version if self.home_version else None
        return FeatureMissing(self.name, "/v0/management" + path, what, version)

    async def cancel_oauth_session(self, state: str) -> bool:
        """Home has no `DELETE /oauth-session` (§3.12): a pending login simply expires after 20 minutes."""
        raise self._not_yet(
            "/oauth-session",
            "cancelling a login (Home has none: the pending sign-in expires after 20 minutes)",
        )

    async def auth_url(self, provider: str, *, is_webui: bool = False) -> AuthURL:
        """`GET /<provider>-auth-url` on Home (§3.9). Home ignores every query parameter (no `is_webui`: there
        is no callback forwarder anywhere, the person always pastes the address); xAI is a PKCE callback
        flow (not CPA's device code); kimi is a device flow answering only `url` and `state`. Plugin logins
        are not supported through the adapter (unverified on Home, §11)."""
        key = provider.strip().lower()
        route_name = _HOME_AUTH_ROUTE.get(key)
        if route_name is None:
            raise self._not_yet(f"/{key}-auth-url", f"{key} login through reauthd's Home adapter")
        route = Route("GET", f"/{route_name}-auth-url", idempotent=False, max_bytes=64 * KiB,
                      feature=f"{key} login")  # fmt: skip
        answer = await self._wire.call(route)
        result = self._parse(route, answer, AuthURL)
        if not _STATE_RE.fullmatch(result.state) or ".." in result.state:
            raise MalformedResponse(self.name, route.full_path, "the OAuth state is not a valid state")
        if route_name == "kimi":
            result = result.model_copy(update={"flow": "device"})
        return result

    async def find_login_credential(
        self, provider: str, email: str | None, before_ids: Collection[str], started_at: datetime
    ) -> str | None:
        """The id of the credential a login wrote (§5.7): every Home login writes a **new** row, so it is the
        row of the same provider and account whose id was not there before and was created after the login
        started. None until it is listed, or when two rows would fit (never a guess)."""
        answer = await self._wire.call(self._list_route)
        try:
            data = json.loads(answer.body)
            files = data["files"]
            if not isinstance(files, list):
                raise TypeError
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise MalformedResponse(self.name, self._list_route.full_path, "not a Home listing") from None
        return pick_login_row(files, provider, email, before_ids, started_at)

    # ----------------------------------------------------------------------------- detection

    async def failed_request_events(self, since: datetime) -> list[HomeRequestEvent]:
        """Failed request events at or after `since`, oldest first (§4.2, §9.2): `status=failed`,
        `sort=timestamp_asc`, pages of 200, at most EVENTS_MAX_PAGES pages. Entries without a credential id
        are skipped. The caller dedupes by `id` (the same instant is asked again on the next poll)."""
        events: list[HomeRequestEvent] = []
        since_text = since.astimezone(UTC).isoformat().replace("+00:00", "Z")
        for page in range(EVENTS_MAX_PAGES):
            params = {"status": "failed", "from": since_text, "sort": "timestamp_asc",
                      "limit": str(EVENTS_PAGE), "offset": str(page * EVENTS_PAGE)}  # fmt: skip
            answer = await self._wire.call(_EVENTS, params=params)
            try:
                data = json.loads(answer.body)
                items = data["items"]
                if not isinstance(items, list):
                    raise TypeError
            except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                raise MalformedResponse(self.name, _EVENTS.full_path, "not a request-events page") from None
            events.extend(e for e in map(_event, items) if e is not None)
            if len(items) < EVENTS_PAGE:
                break
        return events

    async def capabilities(self) -> dict[str, Any]:
        """`GET /capabilities` (§7): 200 on Home only."""
        answer = await self._wire.call(_CAPABILITIES)
        try:
            data = json.loads(answer.body)
        except (ValueError, UnicodeDecodeError):
            raise MalformedResponse(self.name, _CAPABILITIES.full_path, "not JSON") from None
        if not isinstance(data, dict):
            raise MalformedResponse(self.name, _CAPABILITIES.full_path, "not an object")
        return data


def _event(item: Any) -> HomeRequestEvent | None:
    if not isinstance(item, dict):
        return None
    raw_credential, raw_error = item.get("credential"), item.get("error")
    credential: dict[str, Any] = raw_credential if isinstance(raw_credential, dict) else {}
    error: dict[str, Any] = raw_error if isinstance(raw_error, dict) else {}
    cid = credential.get("credential_id") or credential.get("auth_index")
    raw_at = item.get("timestamp")
    if (
        not isinstance(cid, str)
        or not cid
        or not isinstance(item.get("id"), str)
        or not isinstance(raw_at, str)
    ):
        return None
    try:
        at = datetime.fromisoformat(raw_at.replace("Z", "+00:00"))
    except ValueError:
        return None
    status = item.get("upstream_status_code") or item.get("status_code")
    body = error.get("body_preview") or error.get("message") or ""
    return HomeRequestEvent(
        id=item["id"],
        at=at if at.tzinfo else at.replace(tzinfo=UTC),
        credential_id=cid,
        provider=str(item.get("provider") or credential.get("provider") or ""),
        status_code=status if isinstance(status, int) and not isinstance(status, bool) else None,
        body=body if isinstance(body, str) else "",
    )
