"""The listing parsed while it streams: any chunking gives the whole-body result, only the unfinished tail
is held, garbage stops the read early, and through a real server a broken or cut listing is
MalformedResponse with no partial verdicts."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from reauthd.config import DetectConfig, load_config
from reauthd.cpa import CPAClient, MalformedResponse
from reauthd.cpa.factory import client_from_config
from reauthd.detect.listing import (
    MAX_PENDING_CHARS,
    ListingReader,
    ListingSyntaxError,
    fetch_listing,
    parse_listing,
)
from tests.cpa.conftest import FAST_RETRY, OddCPA, serve
from tests.detect.test_listing import ENTRY, body

ENDPOINT = "/v0/management/auth-files"


def entries(count: int) -> list[dict[str, object]]:
    return [dict(ENTRY, name=f"f{n}.json", auth_index=f"{n:016x}") for n in range(count)]


def read_in_chunks(raw: bytes, sizes: list[int]) -> ListingReader:
    reader = ListingReader("main")
    pos = 0
    for size in sizes:
        reader.feed(raw[pos : pos + size])
        pos += size
    reader.feed(raw[pos:])
    return reader


SMALL = (
    '{"other": {"nested": ["]", "}"]} ,\n "files" : [ '
    + ", ".join(json.dumps(e, ensure_ascii=False) for e in entries(3))
    + ' , "not an object"] , "tail": "é☃\\u00e9\\"" }  trailing'
).encode()


def test_every_split_point_gives_the_whole_body_result() -> None:
    whole = parse_listing(SMALL, "main")
    assert [c.name for c in whole.credentials] == ["f0.json", "f1.json", "f2.json"] and whole.skipped == 1
    for cut in range(len(SMALL) + 1):
        listing = read_in_chunks(SMALL, [cut]).close()
        assert listing.credentials == whole.credentials and listing.skipped == 1, cut


def test_one_byte_at_a_time_and_random_chunks() -> None:
    raw = body(*entries(200))
    whole = parse_listing(raw, "main")
    assert len(whole.credentials) == 200
    assert read_in_chunks(raw, [1] * len(raw)).close().credentials == whole.credentials
    rng = random.Random(3)
    for _ in range(20):
        sizes = [rng.randint(1, 5000) for _ in range(len(raw) // 1000)]
        assert read_in_chunks(raw, sizes).close().credentials == whole.credentials


def test_entries_are_parsed_as_they_complete_and_the_buffer_stays_small() -> None:
    raw = body(*entries(2000))
    reader = ListingReader("main")
    largest = 0
    for pos in range(0, len(raw), 65536):
        reader.feed(raw[pos : pos + 65536])
        largest = max(largest, len(reader._text) + reader._waiting_chars)
        assert len(reader.listing.credentials) >= (pos + 65536) // len(json.dumps(ENTRY)) - 2
    assert len(reader.close().credentials) == 2000
    assert largest < 70_000, largest  # one chunk plus the unfinished entry, never the body (~3.6 MB)


@pytest.mark.parametrize(
    "raw",
    [b'{"files": [1, 2', b'{"files": []', b'{"files": [{"name": "a"', b'{"fi', b"", b'{"files": [1, tru'],
)
def test_a_cut_body_is_refused_at_close(raw: bytes) -> None:
    reader = ListingReader("main")
    reader.feed(raw)
    with pytest.raises(ListingSyntaxError):
        reader.close()


@pytest.mark.parametrize(
    "garbage",
    [b"<html>502</html>", b'{"files": [{"a": 1} {"b": 2}', b'{"files": [{"a": x}, ', b'{"files": [1], ]'],
)
def test_garbage_is_refused_while_streaming_without_waiting_for_the_end(garbage: bytes) -> None:
    reader = ListingReader("main")
    with pytest.raises(ListingSyntaxError):
        reader.feed(garbage + b" " * 100)


def test_non_utf8_is_refused_even_after_the_envelope_closed() -> None:
    reader = ListingReader("main")
    reader.feed(b'{"files": []}')
    with pytest.raises(ListingSyntaxError, match="UTF-8"):
        reader.feed(b"\xff")


def test_an_endless_value_is_refused_at_the_pending_limit() -> None:
    reader = ListingReader("main")
    reader.feed(b'{"files": ["')
    chunk = b"a" * 1_000_000
    for _ in range(MAX_PENDING_CHARS // len(chunk)):
        reader.feed(chunk)
    with pytest.raises(ListingSyntaxError, match="no complete JSON value"):
        reader.feed(chunk * 2)


# ------------------------------------------------------------------------------------ through a server


def chunked(raw: bytes, size: int, *, stop_at: int | None = None) -> Response:
    async def stream() -> AsyncIterator[bytes]:
        for pos in range(0, len(raw) if stop_at is None else stop_at, size):
            yield raw[pos : pos + size]
            await asyncio.sleep(0)

    return StreamingResponse(stream(), 200, headers={"X-CPA-VERSION": "v7"}, media_type="application/json")


async def listing_from(handler: OddCPA) -> object:
    async with serve(handler) as url, CPAClient("main", url, "k", retry=FAST_RETRY) as cpa:
        return await fetch_listing(cpa)


async def test_fetch_listing_streams_through_the_client() -> None:
    raw = body(*entries(500))

    async def handler(request: Request) -> Response:
        return chunked(raw, 7001)

    listing = await listing_from(OddCPA(handler))
    assert listing == parse_listing(raw, "main")


async def test_a_cut_listing_is_malformed_naming_the_endpoint() -> None:
    raw = body(*entries(50))
    cut = raw[: len(raw) // 2]

    async def handler(request: Request) -> Response:
        return Response(cut, 200, headers={"X-CPA-VERSION": "v7"}, media_type="application/json")

    with pytest.raises(MalformedResponse, match=f"on {ENDPOINT}: the body ends inside the listing"):
        await listing_from(OddCPA(handler))


async def test_garbage_midway_stops_the_read_and_is_not_retried() -> None:
    good = body(*entries(300))
    boundary = good.index(b"}, {", 200_000) + 1  # just after a complete entry
    raw = good[:boundary] + b" GARBAGE " + good[boundary:] * 20  # ~7 MB if read to the end
    app = OddCPA(lambda request: _async(chunked(raw, 65536)))

    with pytest.raises(MalformedResponse, match=f"on {ENDPOINT}: (not JSON|expected)"):
        await listing_from(app)
    assert app.hits[ENDPOINT] == 1


async def test_a_drop_midway_restarts_the_parse_on_retry() -> None:
    raw = body(*entries(300))
    calls = 0

    async def handler(request: Request) -> Response:
        nonlocal calls
        calls += 1
        if calls == 1:

            async def dying() -> AsyncIterator[bytes]:
                yield raw[: len(raw) // 2]
                await asyncio.sleep(0)
                raise RuntimeError("CPA restarted mid-body")

            return StreamingResponse(dying(), 200, headers={"X-CPA-VERSION": "v7"})
        return chunked(raw, 65536)

    listing = await listing_from(OddCPA(handler))
    assert calls == 2
    assert listing == parse_listing(raw, "main")  # no entry of the first attempt counted twice


async def _async(response: Response) -> Response:
    return response


def test_a_huge_other_value_is_skipped_without_holding_it() -> None:
    # The simulator's huge_body fault: 50 MB of padding after the files (a valid listing).
    tail = b', "padding": {"a": "' + b' \\" ] } ' * 10 + b" " * 30_000_000 + b'", "b": [[{}], "x"]}}'
    raw = body(*entries(3))[:-1] + tail
    reader = ListingReader("main")
    largest = 0
    for pos in range(0, len(raw), 65536):
        reader.feed(raw[pos : pos + 65536])
        largest = max(largest, len(reader._text) + reader._waiting_chars)
    assert [c.name for c in reader.close().credentials] == ["f0.json", "f1.json", "f2.json"]
    assert largest < 200_000, largest


def test_a_credential_equal_to_the_known_one_is_the_known_object() -> None:
    raw = body(*entries(3))
    before = {c.auth_index: c for c in parse_listing(raw, "main").credentials}
    changed = entries(3)
    changed[1]["status"] = "active"
    reader = ListingReader("main", known=before.get)
    reader.feed(body(*changed))
    first, second, third = reader.close().credentials
    assert first is before[first.auth_index] and third is before[third.auth_index]
    assert second is not before[second.auth_index] and second.status == "active"


# ------------------------------------------------------------------------------------ caps (issue 11)


def test_a_listing_over_the_entry_cap_is_refused_as_soon_as_it_passes_it() -> None:
    raw = body(*entries(150))
    capped = ListingReader("main", max_entries=100)
    with pytest.raises(ListingSyntaxError, match="more than 100 entries"):
        capped.feed(raw)
    assert len(capped.listing.credentials) == 100  # never more held than the cap
    exact = ListingReader("main", max_entries=150)
    exact.feed(raw)
    assert len(exact.close().credentials) == 150


async def test_a_huge_listing_stops_the_read_at_the_entry_cap() -> None:
    """1,000,000 minimal entries (130 MB) took RSS to 1.48 GB; the cap stops reading long before the end."""
    raw = body(*entries(2_000))
    app = OddCPA(lambda request: _async(chunked(raw, 4096)))
    async with serve(app) as url, CPAClient("main", url, "k", retry=FAST_RETRY) as cpa:
        with pytest.raises(MalformedResponse, match="more than 500 entries"):
            await fetch_listing(cpa, max_entries=500)
    assert app.hits[ENDPOINT] == 1  # refused, not retried


def test_the_caps_are_configuration(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        '[[cpa]]\nname = "main"\nbase_url = "http://127.0.0.1:1"\nmanagement_key = "k"\nmax_listing_mib = 3\n'
        "[detect]\nmax_listing_entries = 1234\n"
    )
    settings = load_config(config, environ={})
    assert settings.detect.max_listing_entries == 1234
    assert DetectConfig().max_listing_entries == 100_000
    assert client_from_config(settings.cpa[0])._list_route.max_bytes == 3 * 1024 * 1024


def one_by_one(raw: bytes) -> ListingReader:
    """The reference: every entry decoded on its own by the stdlib scanner (no batches)."""
    reader = ListingReader("main")
    reader.batches = False
    reader.feed(raw)
    return reader


@pytest.mark.parametrize("separator", [",", ", ", ",\n    "])
def test_batches_give_exactly_what_entry_by_entry_decoding_gives(
    separator: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast path (issue 12) decodes runs of complete entries with msgspec; whatever it cannot take
    exactly (a lone surrogate, NaN, an entry that is no object, fields of other types, a nested object
    whose first key looks like an entry's) goes entry by entry: same credentials, same skips, same
    problems, in any chunking."""
    good = entries(1500)
    odd: list[str] = [json.dumps(e) for e in good]
    odd[37] = odd[37].replace('"label": "u@x.com"', '"label": "\\ud800"')
    odd[90] = '"not an object"'
    odd[91] = odd[91].replace('"disabled": false', '"disabled": "true"')
    odd[150] = odd[150].replace('"priority": 3', '"priority": NaN')
    odd[220] = odd[220].replace(
        '"id_token": {', '"id_token": {"nested": {"id": 1}, "x": [{"id": 2}, {"id": 3}], '
    )
    odd[300] = odd[300].replace(
        '"source": "file"', '"source": "file", "note": "}, {\\"id\\": \\"not an entry\\"}"'
    )
    assert all(odd[i] != json.dumps(good[i]) for i in (37, 90, 91, 150, 220, 300))
    raw = ('{"files": [' + separator.join(odd) + "]}").encode()
    reference = one_by_one(raw).close()
    assert reference.skipped >= 2 and len(reference.credentials) > 1490

    import reauthd.detect.listing as listing_module

    batches: list[int] = []
    decode = listing_module._decode_batch

    def counting(text: str) -> list[dict[str, object]] | None:
        result = decode(text)
        batches.append(-1 if result is None else len(result))
        return result

    monkeypatch.setattr(listing_module, "_decode_batch", counting)
    rng = random.Random(12)
    for sizes in ([len(raw)], [7] * 200, [rng.randint(1, 5000) for _ in range(300)], [65536] * 3):
        batches.clear()
        got = read_in_chunks(raw, sizes).close()
        assert got == reference
        assert sum(n for n in batches if n > 0) > 1000  # most entries went through batches
        assert -1 in batches or sizes == [7] * 200  # and the odd ones fell back


def test_an_unchanged_entry_reuses_its_credential_without_building_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The next listing's entries whose fields are exactly those of last time (same digest) are the
    caller's Credentials, not rebuilt (issue 12: building them was most of a cycle's CPU after decoding);
    an entry with any field changed is built anew and shows the change."""
    import reauthd.detect.listing as listing_module

    first_entries = entries(600)
    first = read_in_chunks(('{"files":' + json.dumps(first_entries) + "}").encode(), [4096] * 50).close()
    held = {c.auth_index: (c, d) for c, d in zip(first.credentials, first.digests, strict=True)}
    assert sum(d is not None for d in first.digests) > 500

    changed = [dict(e) for e in first_entries]
    changed[100]["status_message"] = "now failing"
    changed[200]["last_refresh"] = "2026-08-21T10:00:00Z"
    changed[300]["id_token"] = {"chatgpt_account_id": "acct-2", "plan_type": "plus"}
    changed[400]["priority"] = "3"  # a string now: the entry breaks the contract and is skipped
    built: list[str] = []
    build = listing_module.credential_from_entry

    def counting(entry: object, cpa: str) -> object:
        built.append(str(entry.get("auth_index")) if isinstance(entry, dict) else "?")
        return build(entry, cpa)

    monkeypatch.setattr(listing_module, "credential_from_entry", counting)
    reader = ListingReader(
        "main", lambda i: held[i][0] if i in held else None, lambda i: held.get(i, (0, None))[1]
    )
    raw = ('{"files":' + json.dumps(changed) + "}").encode()
    for start in range(0, len(raw), 4096):
        reader.feed(raw[start : start + 4096])
    second = reader.close()
    built_for_second = list(built)

    reference = parse_listing(raw, "main")
    assert second == reference  # the same result as building everything
    assert second.skipped == 1
    for n in (100, 200, 300):
        index = changed[n]["auth_index"]
        assert index in built_for_second
        (mine,) = [c for c in second.credentials if c.auth_index == index]
        assert mine is not held[index][0] and mine != held[index][0]
    reused = [c for c in second.credentials if c is held[c.auth_index][0]]
    assert len(reused) > 500 and len(built_for_second) < 100, (len(reused), len(built_for_second))


def test_batches_find_entry_boundaries_when_entries_start_with_different_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CPA builds each entry as a Go map, so its keys come out sorted: an OAuth entry starts with
    `account`, one without an account with `auth_index` (auth_files.go buildAuthFileEntryLocked). The
    batches must still find where entries end when the first entry starts unlike the rest."""
    import reauthd.detect.listing as listing_module

    plain = dict(ENTRY, name="vertex.json", auth_index="f" * 16)
    for key in ("account", "account_type", "email"):
        plain.pop(key, None)
    oauth = [dict(e, account="u@x.com", account_type="oauth") for e in entries(800)]
    raw = ('{"files":' + json.dumps([plain, *oauth], sort_keys=True, separators=(",", ":")) + "}").encode()
    assert raw.startswith(b'{"files":[{"auth_index":') and b'},{"account":' in raw
    batched: list[int] = []
    decode = listing_module._decode_batch

    def counting(text: str) -> list[object] | None:
        result = decode(text)
        batched.append(0 if result is None else len(result))
        return result  # type: ignore[return-value]

    monkeypatch.setattr(listing_module, "_decode_batch", counting)
    got = read_in_chunks(raw, [8192] * 200).close()
    assert got == one_by_one(raw).close() and len(got.credentials) == 801
    assert sum(batched) > 700, batched
