"""Callback-address checks: a table of real and broken pastes, then properties over arbitrary input."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reauthd.login.callback import (
    MAX_CALLBACK_URL_CHARS,
    AcceptedCallback,
    CallbackProblem,
    CallbackRejected,
    check_callback_url,
)

STATE = "0123456789abcdef0123456789abcdef"
OTHER = "fedcba9876543210fedcba9876543210"
CODEX = f"http://localhost:1455/auth/callback?code=ac_Xy-12.3&scope=openid&state={STATE}"


@pytest.mark.parametrize(
    ("pasted", "expected"),
    [
        (CODEX, CODEX),
        (f"  {CODEX}\n", CODEX),  # surrounding whitespace from the clipboard is dropped
        (f"http://localhost:54545/callback?code=abc%23def&state={STATE}", None),
        (f"https://127.0.0.1:8317/codex/callback?state={STATE}&code=x", None),  # is_webui forwarder
        (f"http://localhost:51121/oauth-callback?state={STATE}&error=access_denied", None),  # declined
        (f"http://localhost:1455/auth/callback?code=x&state={STATE}#frag", None),
        (f"HTTP://LOCALHOST:1455/auth/callback?code=x&state={STATE}", None),
    ],
)
def test_accepted_unchanged(pasted: str, expected: str | None) -> None:
    accepted = check_callback_url(pasted, STATE)
    assert accepted.url == (expected or pasted.strip())
    assert STATE not in repr(accepted)


@pytest.mark.parametrize(
    ("pasted", "problem"),
    [
        ("", CallbackProblem.EMPTY),
        ("   \n", CallbackProblem.EMPTY),
        ("x" * (MAX_CALLBACK_URL_CHARS + 1), CallbackProblem.TOO_LONG),
        ("y" * (MAX_CALLBACK_URL_CHARS * 3), CallbackProblem.TOO_LONG),
        (f"http://localhost:1455/auth/callback?code=a b&state={STATE}", CallbackProblem.HAS_SPACES),
        (f"http://localhost:1455/auth/\ncallback?code=a&state={STATE}", CallbackProblem.HAS_SPACES),
        (f"http://localhost:1455/auth/callback?code=a\x00&state={STATE}", CallbackProblem.HAS_SPACES),
        ("hello world", CallbackProblem.HAS_SPACES),
        ("garbage", CallbackProblem.NOT_A_URL),
        (f"localhost:1455/auth/callback?code=a&state={STATE}", CallbackProblem.NOT_A_URL),
        (f"ftp://localhost/auth/callback?code=a&state={STATE}", CallbackProblem.NOT_A_URL),
        (f"javascript:alert(1)//?state={STATE}&code=1", CallbackProblem.NOT_A_URL),
        (f"http:///auth/callback?code=a&state={STATE}", CallbackProblem.NOT_A_URL),
        (f"http://localhost:99999/auth/callback?code=a&state={STATE}", CallbackProblem.NOT_A_URL),
        (f"http://localhost:port/auth/callback?code=a&state={STATE}", CallbackProblem.NOT_A_URL),
        (f"http://[::1/auth/callback?code=a&state={STATE}", CallbackProblem.NOT_A_URL),
        (f"http://localhost:1455/auth/callback?code=%zz&state={STATE}", CallbackProblem.NOT_A_URL),
        ("http://localhost:1455/auth/callback?code=abc", CallbackProblem.NO_STATE),
        ("http://localhost:1455/auth/callback?code=abc&state=", CallbackProblem.NO_STATE),
        (f"http://localhost:1455/auth/callback#state={STATE}&code=a", CallbackProblem.NO_STATE),
        (f"http://localhost:1455/cb?state={STATE}&state={STATE}&code=a", CallbackProblem.SEVERAL_STATES),
        (f"http://localhost:1455/auth/callback?code=abc&state={OTHER}", CallbackProblem.WRONG_STATE),
        (f"http://localhost:1455/auth/callback?code=abc&state={STATE.upper()}", CallbackProblem.WRONG_STATE),
        (f"http://localhost:1455/auth/callback?code=abc&state={STATE}x", CallbackProblem.WRONG_STATE),
        (f"http://localhost:1455/auth/callback?state={STATE}", CallbackProblem.NO_CODE),
        (f"http://localhost:1455/auth/callback?state={STATE}&code=", CallbackProblem.NO_CODE),
    ],
)
def test_rejected(pasted: str, problem: CallbackProblem) -> None:
    with pytest.raises(CallbackRejected) as caught:
        check_callback_url(pasted, STATE)
    assert caught.value.problem is problem
    # The sentence never repeats the input (it may carry the OAuth code).
    assert STATE not in str(caught.value)
    assert "abc" not in str(caught.value)


def test_empty_expected_state_never_matches() -> None:
    with pytest.raises(CallbackRejected):
        check_callback_url("http://localhost:1455/auth/callback?code=a&state=", "")


_state_chars = st.text(alphabet="abcdef0123456789", min_size=32, max_size=32)
_query_text = st.text(
    alphabet=st.characters(codec="ascii", exclude_categories=("Cc",), exclude_characters=" #&=%+"),
    min_size=1,
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(pasted=st.text(max_size=300), state=_state_chars)
def test_any_text_is_accepted_or_rejected_cleanly(pasted: str, state: str) -> None:
    """Arbitrary input never raises anything but CallbackRejected, and acceptance implies the state matched."""
    outcome: object
    try:
        outcome = check_callback_url(pasted, state)
    except CallbackRejected as exc:
        outcome = exc
    if isinstance(outcome, CallbackRejected):
        assert str(outcome)
        assert state not in str(outcome)
    else:
        assert isinstance(outcome, AcceptedCallback)
        assert f"state={state}" in outcome.url
        assert outcome.url == pasted.strip()


@settings(max_examples=300, deadline=None)
@given(
    state=_state_chars,
    code=_query_text,
    port=st.integers(min_value=1, max_value=65535),
    path=st.sampled_from(["/auth/callback", "/callback", "/oauth-callback", "/codex/callback"]),
    extra=st.lists(st.tuples(st.sampled_from(["scope", "iss", "x"]), _query_text), max_size=3),
    host=st.sampled_from(["localhost", "127.0.0.1", "[::1]"]),
    state_first=st.booleans(),
)
def test_real_callbacks_pass_through_byte_for_byte(
    state: str,
    code: str,
    port: int,
    path: str,
    extra: list[tuple[str, str]],
    host: str,
    state_first: bool,
) -> None:
    pairs = [("code", quote(code, safe="")), ("state", state)]
    if state_first:
        pairs.reverse()
    pairs += [(k, quote(v, safe="")) for k, v in extra]
    url = f"http://{host}:{port}{path}?" + "&".join(f"{k}={v}" for k, v in pairs)
    assert check_callback_url(url, state).url == url


@settings(max_examples=200, deadline=None)
@given(state=_state_chars, other=_state_chars, code=_query_text)
def test_a_different_state_is_always_refused(state: str, other: str, code: str) -> None:
    url = f"http://localhost:1455/auth/callback?code={quote(code, safe='')}&state={other}"
    if other == state:
        assert check_callback_url(url, state).url == url
    else:
        with pytest.raises(CallbackRejected) as caught:
            check_callback_url(url, state)
        assert caught.value.problem is CallbackProblem.WRONG_STATE
