"""Reading `GET /auth-files` lean: parsed while it streams, straight into `Credential`s.

At 50,000 credentials the listing is ~85 MiB (contract §12). Holding the body (and a decoded copy of
it) pushed the daemon past its 384Mi limit; instead the client feeds the body chunk by chunk to a
`ListingReader`, which keeps only the not-yet-complete tail, decodes the complete entries and keeps only
the fields detection uses.

Decoding is most of a poll cycle's CPU, and most of an entry is what detection never reads (CPA's
`recent_requests` alone is 20 objects per entry). The complete entries in the buffer are therefore
decoded in batches (at most `BATCH_CHARS`, cut where one entry ends and the next begins) by msgspec into
a struct of the fields `credential_from_entry` reads, skipping the rest without building it (issue 12:
about 7x faster than the stdlib scanner on the same entries). Whatever that fast path cannot take
exactly — a field of another type than CPA sends, a value that is no object, anything msgspec refuses — is
decoded again entry by entry with the stdlib scanner, so every entry gets the same verdict (kept, skipped
with its reason, or the whole listing rejected) either way. An entry whose fields are exactly last
cycle's (same digest) is the caller's Credential, not built again. The rules are the client's
(reauthd/cpa/models.py `AuthFile`): required fields must have CPA's JSON types, `status` must be one CPA
assigns (§2.2); an entry that breaks them is skipped and counted, never the whole listing. A broken or
cut envelope rejects the whole listing (nothing is built from part of it).
"""

from __future__ import annotations

import codecs
import hashlib
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
import structlog

from reauthd.core.classify import KNOWN_LISTING_STATUSES
from reauthd.core.model import Credential
from reauthd.cpa.client import CPAClient
from reauthd.cpa.wire import BodyRejected

log = structlog.get_logger(__name__)

ENDPOINT = "/v0/management/auth-files"
_SKIP = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
# The longest unfinished piece (an entry, a key, another key's value) kept while waiting for its end;
# a real entry is a few KiB, so this only stops garbage from growing the buffer.
MAX_PENDING_CHARS = 16 * 1024 * 1024
# A prefix of valid JSON fails to decode only at its very end (a cut literal, number or `\uXXXX`
# escape) or as an unterminated string; an error further back is garbage, not a short read.
_CUT_MARGIN = 16


class ListingSyntaxError(BodyRejected):
    """The envelope is not `{"files": [ ... ]}`, the body is not UTF-8, or it ends early."""


class _NeedMore(Exception):
    """The buffer ends before the current step could finish: wait for the next chunk."""


@dataclass(slots=True)
class Listing:
    credentials: list[Credential] = field(default_factory=list)
    skipped: int = 0
    problems: list[str] = field(default_factory=list)  # the first few, for one log line
    # Entries without a status yet: a login's raw record before CPA's watcher reloaded the file (§13).
    # Left out without counting as broken; like skipped ones, their credentials still exist.
    registering: int = 0
    # Parallel to `credentials`: a digest of the fields each was built from (None where it was decoded
    # entry by entry), so the next listing can reuse an unchanged entry's Credential without rebuilding it.
    digests: list[bytes | None] = field(default_factory=list, compare=False)


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


def claim_time(value: Any) -> datetime | None:
    """A Codex subscription claim as CPA lists it. CPA decodes the claim into `any` and passes it through
    (internal/auth/codex/jwt_parser.go `ChatgptSubscriptionActiveUntil any`), so it is whatever the id_token
    held: an RFC 3339 string, or a number of Unix seconds. Anything else, or no zone, is no date."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo is not None else None
    return None


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
    until: datetime | None = None
    if isinstance(claims, dict):
        until = claim_time(claims.get("chatgpt_subscription_active_until"))
        account_id = (
            claims.get("chatgpt_account_id") if isinstance(claims.get("chatgpt_account_id"), str) else None
        )
        plan = claims.get("plan_type") if isinstance(claims.get("plan_type"), str) else None
    priority = entry.get("priority")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise TypeError("priority is not an integer")
    # Fields with few distinct values are interned: 100,000 credentials share a handful of strings
    # instead of holding one copy each (issue 12: peak RSS).
    return Credential(
        cpa=cpa,
        name=_text(entry, "name", required=True) or "",
        auth_index=_text(entry, "auth_index", required=True) or "",
        provider=sys.intern(provider.lower()),
        status=sys.intern(status),
        status_message=sys.intern(_text(entry, "status_message") or ""),
        disabled=_flag(entry, "disabled", required=True),
        unavailable=_flag(entry, "unavailable"),
        runtime_only=_flag(entry, "runtime_only"),
        email=email,
        label=_text(entry, "label") or "",
        source=sys.intern(_text(entry, "source") or "file"),
        next_retry_after=_time(entry, "next_retry_after"),
        last_refresh=_time(entry, "last_refresh"),
        modtime=_time(entry, "modtime"),
        account_id=account_id,
        plan_type=plan,
        subscription_until=until,
        priority=priority,
        note=_text(entry, "note"),
    )


class _Fields(msgspec.Struct):
    """The fields of a listing entry `credential_from_entry` reads, each as whatever JSON value it is;
    every other key is skipped unread. A missing key and `null` both become None, which is what
    `entry.get(key)` gives for either."""

    status: Any = None
    provider: Any = None
    type: Any = None
    email: Any = None
    account_type: Any = None
    account: Any = None
    id_token: Any = None
    priority: Any = None
    name: Any = None
    auth_index: Any = None
    status_message: Any = None
    disabled: Any = None
    unavailable: Any = None
    runtime_only: Any = None
    label: Any = None
    source: Any = None
    next_retry_after: Any = None
    last_refresh: Any = None
    modtime: Any = None
    note: Any = None


_BATCH = msgspec.json.Decoder(list[_Fields])
_DIGEST_ENCODER = msgspec.msgpack.Encoder()
# At most this much of the listing per batch: an entry the fast path cannot take sends only its batch
# entry by entry, and a batch's decoded fields stay small.
BATCH_CHARS = 128 * 1024
_MAX_OPENINGS = 4
_FIRST_KEY_RE = re.compile(r'\{"(?:[^"\\]|\\.){1,64}":')


def _decode_batch(text: str) -> list[_Fields] | None:
    """`[entry,...]` → the entries' fields detection reads, or None when msgspec cannot take it exactly
    (then the entries are decoded one by one)."""
    try:
        return _BATCH.decode(text)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def _digest(fields: _Fields) -> bytes | None:
    """128-bit digest of every field `credential_from_entry` reads (typed: msgpack tells a string from a
    number); equal digests mean equal Credentials. None when a value cannot be encoded."""
    try:
        return hashlib.blake2b(_DIGEST_ENCODER.encode(fields), digest_size=16).digest()
    except (TypeError, ValueError, OverflowError):
        return None


# Reader states: where in `{"key": value, "files": [entry, ...], ...}` the next byte belongs.
_OPEN, _FIRST_KEY, _KEY, _VALUE, _SKIPPING, _AFTER_VALUE, _ENTRIES, _ENTRY, _AFTER_ENTRY, _DONE = range(10)
# Skipping another key's string/array/object without holding it (it may be tens of MiB: the simulator's
# huge_body fault pads the listing with 50 MB): jump from one quote, backslash or bracket to the next.
_IN_STRING_STOP = re.compile(r'["\\]')
_STRUCTURE_STOP = re.compile(r'["\[\]{}]')


class ListingReader:
    """Parses `{"files":[...]}` incrementally (a `reauthd.cpa.wire.BodyReader`): `feed` chunks, then `close`.

    Only the unfinished tail of the body is buffered. Raises ListingSyntaxError (a BodyRejected) for a
    broken envelope, a body that is not UTF-8, or one that ends inside the listing. Bytes after the
    closing brace are ignored (as a whole-body parse would).
    """

    def __init__(
        self,
        cpa: str,
        known: Callable[[str], Credential | None] | None = None,
        digest_of: Callable[[str], bytes | None] | None = None,
        *,
        max_entries: int | None = None,
    ) -> None:
        """`known(auth_index)`: the Credential the caller already holds for that entry, if any. An equal
        new one is dropped for it at once, so a cycle does not hold every credential twice (~50 MB at
        50,000) while the listing streams. `max_entries` (`detect.max_listing_entries`): one more entry
        rejects the whole listing at once, so memory stays bounded whatever CPA sends."""
        self.cpa = cpa
        self._known = known
        self._max_entries = max_entries
        # `digest_of(auth_index)`: the digest (`Listing.digests`) the caller's Credential was built from.
        # An entry with the same digest is that Credential: reused without building it again (issue 12:
        # building 100,000 Credentials was the largest part of a poll cycle's CPU after decoding).
        self._digest_of = digest_of if known is not None else None
        self.listing = Listing()
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._text = ""
        self._pos = 0
        self._offset = 0  # characters dropped from the front of `_text` so far (for error offsets)
        self._state = _OPEN
        self._key: object = None
        self._found = False
        self._entry_number = 0
        self._final = False
        self._retry_at = 0  # pending characters needed before trying again after a short read
        self._waiting: list[str] = []  # chunks not yet joined to `_text` (a long value arriving)
        self._waiting_chars = 0
        self._skip_depth = 0  # open brackets of the value being skipped
        self._skip_in_string = False
        # Batches: how one entry ends and the next begins in this listing (`},{"account":` for CPA's
        # compact JSON with sorted keys), learnt from the entries decoded one by one; and where the last
        # batch that could not be taken ends (the entries up to there are decoded one by one).
        self.batches = True
        self._openings: list[str] = []  # how entries start: `{"account":`, `{"auth_index":`, ...
        self._comma: str | None = None  # what came between the first two entries up to the comma
        self._gap: str | None = None  # ... and from the `}` to the `{`
        self._separators: list[str] = []
        self._one_by_one_until = 0

    def feed(self, chunk: bytes) -> None:
        text = self._decode(chunk, final=False)
        if self._state == _DONE:
            return  # after the closing brace: checked for UTF-8, otherwise ignored
        self._waiting.append(text)
        self._waiting_chars += len(text)
        if len(self._text) - self._pos + self._waiting_chars >= self._retry_at:
            self._append()
            self._run()

    def close(self) -> Listing:
        self._waiting.append(self._decode(b"", final=True))
        self._append()
        self._final = True
        self._run()
        if not self._found:
            raise ListingSyntaxError("no files list")
        return self.listing

    # ------------------------------------------------------------------------------------ buffer

    def _decode(self, chunk: bytes, *, final: bool) -> str:
        try:
            return self._utf8.decode(chunk, final)
        except UnicodeDecodeError:
            raise ListingSyntaxError("the body is not UTF-8") from None

    def _append(self) -> None:
        self._offset += self._pos
        self._text = "".join([self._text[self._pos :], *self._waiting])
        self._pos = 0
        self._waiting.clear()
        self._waiting_chars = 0

    def _run(self) -> None:
        while self._state != _DONE:
            try:
                self._step()
            except _NeedMore:
                if self._final:
                    raise ListingSyntaxError(
                        f"the body ends inside the listing (offset {self._offset + len(self._text)})"
                    ) from None
                pending = len(self._text) - self._pos
                if pending > MAX_PENDING_CHARS:
                    raise ListingSyntaxError(
                        f"no complete JSON value within {MAX_PENDING_CHARS:,} characters at offset "
                        f"{self._offset + self._pos}"
                    ) from None
                # Try again once the pending part doubled: a huge value costs linear time, not quadratic.
                self._retry_at = min(2 * pending, MAX_PENDING_CHARS + 1)
                return
        self._retry_at = 0

    # ------------------------------------------------------------------------------------ steps

    def _ws(self, pos: int) -> int:
        match = _SKIP.match(self._text, pos)
        return match.end() if match is not None else pos

    def _char(self, pos: int) -> str:
        if pos >= len(self._text):
            raise _NeedMore
        return self._text[pos]

    def _value(self, pos: int) -> tuple[Any, int]:
        try:
            return _DECODER.raw_decode(self._text, pos)
        except json.JSONDecodeError as exc:
            cut = exc.msg.startswith("Unterminated string") or exc.pos >= len(self._text) - _CUT_MARGIN
            if cut:
                raise _NeedMore from None  # at close() this is "the body ends inside the listing"
            raise ListingSyntaxError(f"not JSON at offset {self._offset + exc.pos}") from None

    def _fail(self, expected: str, pos: int) -> ListingSyntaxError:
        return ListingSyntaxError(f"expected {expected} at offset {self._offset + pos}")

    def _step(self) -> None:
        """Advance by one envelope token or one entry; commits `_pos`/`_state` only when it completes."""
        state = self._state
        pos = self._ws(self._pos)
        if state == _OPEN:
            if self._char(pos) != "{":
                raise self._fail("'{'", pos)
            self._pos, self._state = pos + 1, _FIRST_KEY
        elif state == _FIRST_KEY:
            if self._char(pos) == "}":
                raise ListingSyntaxError("no files list")
            self._pos, self._state = pos, _KEY
        elif state == _KEY:
            key, after = self._value(pos)
            after = self._ws(after)
            if self._char(after) != ":":
                raise self._fail("':'", after)
            after = self._ws(after + 1)
            if key == "files" and self._char(after) == "[":
                self._found = True
                self._pos, self._state = after + 1, _ENTRIES
            else:
                self._char(after)  # the value has started
                self._pos, self._state = after, _VALUE
        elif state == _VALUE:  # another key: read and drop
            char = self._char(pos)
            if char in '"[{':
                self._skip_in_string, self._skip_depth = char == '"', int(char != '"')
                self._pos, self._state = pos + 1, _SKIPPING
            else:
                _, after = self._value(pos)  # a number or a literal: short
                self._pos, self._state = after, _AFTER_VALUE
        elif state == _SKIPPING:
            self._skip()
        elif state == _AFTER_VALUE:
            char = self._char(pos)
            if char == ",":
                self._pos, self._state = pos + 1, _KEY
            elif char == "}":
                self._pos, self._state = pos + 1, _DONE
            else:
                raise self._fail("'}'", pos)
        elif state == _ENTRIES:
            if self._char(pos) == "]":
                self._pos, self._state = pos + 1, _AFTER_VALUE
            else:
                self._pos, self._state = pos, _ENTRY
        elif state == _ENTRY:
            self._learn_separator(pos)
            after_batch = self._batch(pos)
            if after_batch is not None:
                self._pos, self._state = after_batch, _AFTER_ENTRY
                return
            entry, after = self._value(pos)
            self._learn_opening(pos)
            self._keep(entry)
            self._pos, self._state = after, _AFTER_ENTRY
        else:  # _AFTER_ENTRY
            char = self._char(pos)
            if char == ",":
                if self._comma is None:
                    self._comma = self._text[self._pos : pos + 1]
                self._pos, self._state = pos + 1, _ENTRY
            elif char == "]":
                self._pos, self._state = pos + 1, _AFTER_VALUE
            else:
                raise self._fail("',' or ']'", pos)

    def _learn_separator(self, pos: int) -> None:
        """At the second entry: what lies between an entry's closing brace and the next one's `{`."""
        if self._gap is not None or self._comma is None or pos >= len(self._text):
            return
        self._gap = self._comma + self._text[self._pos : pos]
        self._separators = ["}" + self._gap + opening for opening in self._openings]

    def _learn_opening(self, pos: int) -> None:
        """How the entry at `pos` (decoded one by one) starts: a few such openings are enough to find
        the entry boundaries of a listing whose entries start with different keys."""
        if not self.batches or len(self._openings) >= _MAX_OPENINGS:
            return
        match = _FIRST_KEY_RE.match(self._text, pos)
        if match is None or match.group() in self._openings:
            return
        self._openings.append(match.group())
        if self._gap is not None:
            self._separators.append("}" + self._gap + match.group())

    def _batch(self, pos: int) -> int | None:
        """Take every complete entry from `pos` to the last separator in the buffer as one batch; the
        position after the batch's last entry, or None to decode the entry at `pos` on its own."""
        if not self._separators or not self.batches or self._offset + pos < self._one_by_one_until:
            return None
        text, limit = self._text, pos + BATCH_CHARS
        cut = max(text.rfind(separator, pos, limit) for separator in self._separators)
        if cut <= pos:
            return None
        end = cut + 1  # just after the `}` that closes the batch's last entry
        entries = _decode_batch("[" + self._text[pos:end] + "]")
        if entries is None:
            self._one_by_one_until = self._offset + end
            return None
        for entry in entries:
            self._keep_fields(entry)
        return end

    def _keep_fields(self, fields: _Fields) -> None:
        digest = _digest(fields)
        index = fields.auth_index
        same_as = None
        if digest is not None and isinstance(index, str) and index:
            same_as = self._built_from(index, digest)
        self._keep(msgspec.structs.asdict(fields), same_as=same_as, digest=digest)

    def _built_from(self, auth_index: str, digest: bytes) -> Credential | None:
        """The caller's Credential for `auth_index` if it was built from fields with this digest."""
        if self._known is None or self._digest_of is None or self._digest_of(auth_index) != digest:
            return None
        return self._known(auth_index)

    def _skip(self) -> None:
        """Move past the rest of a string/array/object, dropping what it passed (commits as it goes)."""
        text, pos = self._text, self._pos
        while True:
            if self._skip_in_string:
                match = _IN_STRING_STOP.search(text, pos)
                if match is None:
                    self._pos = len(text)
                    raise _NeedMore
                if match.group() == "\\":
                    if match.end() >= len(text):
                        self._pos = match.start()  # keep the backslash with what it escapes
                        raise _NeedMore
                    pos = match.end() + 1
                    continue
                pos = match.end()
                self._skip_in_string = False
                if self._skip_depth == 0:
                    break
            else:
                match = _STRUCTURE_STOP.search(text, pos)
                if match is None:
                    self._pos = len(text)
                    raise _NeedMore
                char, pos = match.group(), match.end()
                if char == '"':
                    self._skip_in_string = True
                elif char in "[{":
                    self._skip_depth += 1
                else:
                    self._skip_depth -= 1
                    if self._skip_depth == 0:
                        break
        self._pos, self._state = pos, _AFTER_VALUE

    def _keep(self, entry: Any, *, same_as: Credential | None = None, digest: bytes | None = None) -> None:
        """One entry: its Credential, or a skip with the reason. `same_as`: the caller's Credential for
        this entry, known to be built from the very same fields (`digest`), so it is not built again."""
        listing = self.listing
        if self._max_entries is not None and self._entry_number >= self._max_entries:
            raise ListingSyntaxError(
                f"more than {self._max_entries} entries (detect.max_listing_entries); nothing was read from it"
            )
        try:
            credential = same_as or credential_from_entry(entry, self.cpa)
            if same_as is None and self._known is not None:
                previous = self._known(credential.auth_index)
                if previous is not None and previous == credential:
                    credential = previous
            listing.credentials.append(credential)
            listing.digests.append(digest)
        except (TypeError, ValueError) as exc:
            if isinstance(entry, dict) and entry.get("status") == "":
                listing.registering += 1  # saveTokenRecord's raw record (runtimeAuthSyncHook), §13
                self._entry_number += 1
                return
            listing.skipped += 1
            if len(listing.problems) < 5:
                name = entry.get("name") if isinstance(entry, dict) else None
                label = name if isinstance(name, str) else "?"
                listing.problems.append(f"#{self._entry_number} {label[:80]}: {exc}")
        self._entry_number += 1


def parse_listing(raw: bytes | bytearray, cpa: str) -> Listing:
    """Parse a whole `{"files":[...]}` body (tests, tools). Raises ListingSyntaxError for a broken envelope."""
    reader = ListingReader(cpa)
    reader.feed(bytes(raw))
    return reader.close()


async def fetch_listing(
    client: CPAClient,
    known: Callable[[str], Credential | None] | None = None,
    digest_of: Callable[[str], bytes | None] | None = None,
    *,
    max_entries: int | None = None,
) -> Listing:
    """One `GET /auth-files`, parsed while it streams through the client (its key gate, retries and cap).

    Raises the client's typed errors; a broken, cut or non-UTF-8 listing is MalformedResponse naming the
    endpoint, and no partial listing is returned.
    """
    listing = await client.stream_auth_files(
        lambda: ListingReader(client.name, known, digest_of, max_entries=max_entries)
    )
    if listing.skipped:
        log.warning(
            "detect.listing.entries_skipped",
            cpa=client.name,
            skipped=listing.skipped,
            kept=len(listing.credentials),
            examples=listing.problems,
        )
    return listing
