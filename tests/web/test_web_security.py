"""Tables for the page's defences: rate limiter, signed cookies and CSRF tokens, origin check, rendering."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from starlette.requests import Request

from reauthd.web.render import Markup, escape, render
from reauthd.web.security import CookieSigner, RateLimiter, same_origin

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def test_rate_limiter_window() -> None:
    limiter = RateLimiter(3, 60)
    at = [T0 + timedelta(seconds=s) for s in (0, 10, 20, 30, 59, 61, 71)]
    assert [limiter.hit("ip", t) for t in at[:4]] == [True, True, True, False]
    assert limiter.blocked("ip", at[4])
    assert not limiter.blocked("other", at[4])
    # The first two events leave the window at 60 s and 70 s.
    assert limiter.hit("ip", at[5]) is False  # events at 10, 20, 30 (+ this) are inside
    assert limiter.blocked("ip", at[6]) is True
    assert not limiter.blocked("ip", T0 + timedelta(seconds=200))


def test_rate_limiter_forgets_idle_keys_instead_of_growing() -> None:
    limiter = RateLimiter(1, 10, max_keys=4)
    for i in range(50):
        limiter.hit(f"k{i}", T0 + timedelta(seconds=i * 20))
    assert len(limiter._events) <= 4


def test_fresh_keys_never_flush_a_lock_out() -> None:
    """Issue 11: 10,000 addresses used to evict the oldest half of the table, lock-outs included."""
    limiter = RateLimiter(3, 600, max_keys=100)
    for n in range(3):
        limiter.hit("attacker", T0 + timedelta(seconds=n))
    assert limiter.blocked("attacker", T0 + timedelta(seconds=5))
    for i in range(10_000):
        limiter.hit(f"198.51.{i // 256}.{i % 256}", T0 + timedelta(seconds=10))
    assert len(limiter._events) <= 100
    assert limiter.blocked("attacker", T0 + timedelta(seconds=20))
    assert not limiter.blocked("attacker", T0 + timedelta(seconds=700))  # until it ends, not forever
    # A table full of lock-outs: new keys share one overflow bucket rather than evicting any of them.
    full = RateLimiter(1, 600, max_keys=4)
    for i in range(4):
        full.hit(f"k{i}", T0)
    full.hit("new-1", T0)
    assert all(full.blocked(f"k{i}", T0) for i in range(4)) and full.blocked("new-2", T0)


def test_cookie_round_trip_and_tampering() -> None:
    signer = CookieSigner(b"k" * 32)
    value = signer.issue("recipient", "task1", int((T0 + timedelta(hours=1)).timestamp()))
    claim = signer.verify("recipient", value, T0)
    assert claim is not None and claim.subject == "task1"
    subject, expires, nonce, mac = value.split(".")
    forged = [
        f"task2.{expires}.{nonce}.{mac}",  # another task
        f"{subject}.{int(expires) + 3600}.{nonce}.{mac}",  # a longer life
        f"{subject}.{expires}.{nonce}x.{mac}",
        f"{subject}.{expires}.{nonce}.{mac[:-2]}AA",
        "",
        "a.b.c",
        "x" * 500,
    ]
    assert all(signer.verify("recipient", f, T0) is None for f in forged)
    assert signer.verify("operator", value, T0) is None  # a recipient cookie is not an operator cookie
    assert signer.verify("recipient", value, T0 + timedelta(hours=2)) is None  # expired
    assert CookieSigner(b"j" * 32).verify("recipient", value, T0) is None  # another process's key


def test_csrf_tokens_are_bound_to_the_session() -> None:
    signer = CookieSigner()
    one = signer.verify("recipient", signer.issue("recipient", "t", int(T0.timestamp()) + 60), T0)
    two = signer.verify("recipient", signer.issue("recipient", "t", int(T0.timestamp()) + 60), T0)
    assert one is not None and two is not None
    token = signer.csrf_token(one)
    assert signer.csrf_ok(one, token)
    assert not signer.csrf_ok(two, token)
    assert not signer.csrf_ok(one, None)
    assert not signer.csrf_ok(one, "")


def _request(origin: str | None, host: str = "127.0.0.1:8390") -> Request:
    headers = [(b"host", host.encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    return Request({"type": "http", "method": "POST", "scheme": "http", "path": "/", "headers": headers})


@pytest.mark.parametrize(
    ("origin", "ok"),
    [
        (None, True),
        ("null", True),  # what a no-referrer page's own form POST sends
        ("http://127.0.0.1:8390", True),  # the Host it was sent to
        ("https://reauth.example.org", True),  # the public URL behind a proxy
        ("https://evil.example", False),
        ("http://127.0.0.1:9999", False),
    ],
)
def test_same_origin(origin: str | None, ok: bool) -> None:
    assert same_origin(_request(origin), "https://reauth.example.org") is ok


def test_render_escapes_everything_but_markup() -> None:
    html = render("message.html", headline="<script>x</script>", sentence='a"b', extra=Markup("<p>ok</p>"))
    assert "<script>" not in html and "&lt;script&gt;" in html and "a&quot;b" in html and "<p>ok</p>" in html
    assert escape(None) == ""
    with pytest.raises(KeyError):
        render("message.html", headline="x")
