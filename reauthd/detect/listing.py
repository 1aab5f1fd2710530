"""Reading `GET /auth-files` lean: one entry at a time, straight into `Credential`s.

At 10,000 credentials the listing is ~17 MiB (contract §12). Building a full object tree for it costs
~100 MB; decoding entry by entry with the C JSON scanner and keeping only the fields detection uses
costs ~20 MB, which keeps one detection cycle under the 150 MB budget (issue 3). The rules are the
client's (reauthd/cpa/models.py `AuthFile`): required fields must have CPA's JSON types, `status` must
be one CPA assigns (§2.2); an entry that breaks them is skipped and counted, never the whole listing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from reauthd.core.classify import KNOWN_LISTING_STATUSES
from reauthd.core.model import Credential
from reauthd.cpa.client import CPAClient
from reauthd.cpa.errors import MalformedResponse

log = structlog.get_logger(__name__)

ENDPOINT = "/v0/management/auth-files"
_SKIP = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


class ListingSyntaxError(ValueError):
    """The envelope is not `{"files": [ ... ]}`."""


@dataclass(slots=True)
class Listing:
    credentials: list[Credential] = field(default_factory=list)
    skipped: int = 0
    problems: list[str] = field(default_factory=list)  # the first few, for one log line


def _time(entry: dict[str, Any], key: str) -> datetime | None:
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{key} is not a timestamp")
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.year > 1 else None  # Go's zero time means "not set"


def _text(entry: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = entry.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise TypeError(f"{key} is missing or not a string")
    return value


def _flag(entry: dict[str, Any], key: str, *, required: bool = False) -> bool:
    value = entry.get(key)
    if value is None and not required:
        return False
    if not isinstance(value, bool):  # the string "true" is not a bool (contract §8)
        raise TypeError(f"{key} is missing or not a bool")
    return value


def credential_from_entry(entry: Any, cpa: str) -> Credential:
    """One listing entry → Credential. Raises TypeError/ValueError when it breaks the contract."""
    if not isinstance(entry, dict):
        raise TypeError("entry is not an object")
    status = _text(entry, "status", required=True)
    if status not in KNOWN_LISTING_STATUSES:
        raise ValueError(f"status {str(status)[:20]!r} is not one CPA assigns")
    provider = _text(entry, "provider") or _text(entry, "type", required=True) or ""
    email = _text(entry, "email")
    if not email and entry.get("account_type") == "oauth":
        email = _text(entry, "account")  # never for api_key auths: there `account` is the key itself
    claims = entry.get("id_token")
    account_id = plan = None
    if isinstance(claims, dict):
        account_id = (
            claims.get("chatgpt_account_id") if isinstance(claims.get("chatgpt_account_id"), str) else None
        )
        plan = claims.get("plan_type") if isinstance(claims.get("plan_type"), str) else None
    priority = entry.get("priority")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise TypeError("priority is not an integer")
    return Credential(
        cpa=cpa,
        name=_text(entry, "name", required=True) or "",
        auth_index=_text(entry, "auth_index", required=True) or "",
        provider=provider.lower(),
        status=status,
        status_message=_text(entry, "status_message") or "",
        disabled=_flag(entry, "disabled", required=True),
        unavailable=_flag(entry, "unavailable"),
        runtime_only=_flag(entry, "runtime_only"),
        email=email,
        label=_text(entry, "label") or "",
        source=_text(entry, "source") or "file",
        next_retry_after=_time(entry, "next_retry_after"),
        last_refresh=_time(entry, "last_refresh"),
        modtime=_time(entry, "modtime"),
        account_id=account_id,
        plan_type=plan,
        priority=priority,
        note=_text(entry, "note"),
    )


def _ws(text: str, pos: int) -> int:
    match = _SKIP.match(text, pos)
    return match.end() if match is not None else pos


def _expect(text: str, pos: int, char: str) -> int:
    pos = _ws(text, pos)
    if text[pos : pos + 1] != char:
        raise ListingSyntaxError(f"expected {char!r} at offset {pos}")
    return pos + 1


def parse_listing(raw: bytes | bytearray, cpa: str) -> Listing:
    """Parse `{"files":[...]}` entry by entry. Raises ListingSyntaxError for a broken envelope."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ListingSyntaxError("the body is not UTF-8") from None
    del raw
    listing = Listing()
    found = False
    try:
        pos = _expect(text, 0, "{")
        pos = _ws(text, pos)
        if text[pos : pos + 1] == "}":
            raise ListingSyntaxError("no files list")
        while True:
            key, pos = _DECODER.raw_decode(text, _ws(text, pos))
            pos = _expect(text, pos, ":")
            pos = _ws(text, pos)
            if key == "files" and text[pos : pos + 1] == "[":
                found = True
                pos = _entries(text, pos + 1, cpa, listing)
            else:
                _, pos = _DECODER.raw_decode(text, pos)  # another key: read and drop
            pos = _ws(text, pos)
            if text[pos : pos + 1] == ",":
                pos += 1
                continue
            _expect(text, pos, "}")
            break
    except json.JSONDecodeError as exc:
        raise ListingSyntaxError(f"not JSON at offset {exc.pos}") from None
    if not found:
        raise ListingSyntaxError("no files list")
    return listing


def _entries(text: str, pos: int, cpa: str, listing: Listing) -> int:
    position = 0
    pos = _ws(text, pos)
    if text[pos : pos + 1] == "]":
        return pos + 1
    while True:
        entry, pos = _DECODER.raw_decode(text, _ws(text, pos))
        try:
            listing.credentials.append(credential_from_entry(entry, cpa))
        except (TypeError, ValueError) as exc:
            listing.skipped += 1
            if len(listing.problems) < 5:
                name = entry.get("name") if isinstance(entry, dict) else None
                label = name if isinstance(name, str) else "?"
                listing.problems.append(f"#{position} {label[:80]}: {exc}")
        position += 1
        pos = _ws(text, pos)
        if text[pos : pos + 1] == ",":
            pos += 1
            continue
        if text[pos : pos + 1] == "]":
            return pos + 1
        raise ListingSyntaxError(f"expected ',' or ']' at offset {pos}")


async def fetch_listing(client: CPAClient) -> Listing:
    """One `GET /auth-files` through the client's wire (its key gate, retries and body cap), parsed lean.

    Raises the client's typed errors; a broken envelope becomes MalformedResponse.
    """
    raw_reader = getattr(client, "list_auth_files_raw", None)
    if raw_reader is not None:
        raw = await raw_reader()
    else:
        # Until the client exposes the raw listing, use its own wire and route (same gate, retries
        # and cap); asked of reauthd/cpa's owner in issue 3's report.
        answer = await client._wire.call(client._list_route)
        raw = answer.body
    try:
        listing = parse_listing(raw, client.name)
    except ListingSyntaxError as exc:
        raise MalformedResponse(client.name, ENDPOINT, str(exc)) from None
    if listing.skipped:
        log.warning(
            "detect.listing.entries_skipped",
            cpa=client.name,
            skipped=listing.skipped,
            kept=len(listing.credentials),
            examples=listing.problems,
        )
    return listing
