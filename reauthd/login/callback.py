"""Checking a pasted callback address before it goes to CPA: a URL, this session's `state`, a code.

The address is sent to CPA as `redirect_url` exactly as pasted (surrounding whitespace aside): CPA parses
it itself and only fills empty fields from it (oauth_callback.go handleOAuthCallback, contract §4.3), so
reauthd never picks out `code` or `state` and rebuilds a URL. These checks only keep garbage, a wrong
session and oversized input away from CPA, and give the person one clear sentence instead.
"""

from __future__ import annotations

import hmac
import re
import unicodedata
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import parse_qsl, urlsplit

#: Real callback addresses are a few hundred characters; anything near this is not one.
MAX_CALLBACK_URL_CHARS = 4096

# Go's url.ParseQuery drops a pair with a bad escape (and CPA then sees no code or state).
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


class CallbackProblem(StrEnum):
    EMPTY = "empty"
    TOO_LONG = "too_long"
    HAS_SPACES = "has_spaces"
    NOT_A_URL = "not_a_url"
    NO_STATE = "no_state"
    SEVERAL_STATES = "several_states"
    WRONG_STATE = "wrong_state"
    NO_CODE = "no_code"


_SENTENCES: dict[CallbackProblem, str] = {
    CallbackProblem.EMPTY: "Paste the address from your browser's address bar first.",
    CallbackProblem.TOO_LONG: (
        "That is far longer than a sign-in address. Copy only the address from the address bar."
    ),
    CallbackProblem.HAS_SPACES: (
        "The pasted text contains spaces or line breaks, so it is not one address. "
        "Copy the address again from the address bar."
    ),
    CallbackProblem.NOT_A_URL: (
        "That does not look like a web address. Copy the whole address that starts with http://localhost."
    ),
    CallbackProblem.NO_STATE: (
        "That address has no sign-in information in it. After signing in, copy the address of the page "
        "your browser lands on (it starts with http://localhost)."
    ),
    CallbackProblem.SEVERAL_STATES: "That address is not a single sign-in result. Copy it again.",
    CallbackProblem.WRONG_STATE: (
        "That address belongs to a different or older sign-in, not the one started on this page. "
        "Use the sign-in link on this page, then paste the new address."
    ),
    CallbackProblem.NO_CODE: (
        "That address does not carry the sign-in result yet. Finish signing in, then copy the address "
        "your browser lands on."
    ),
}


class CallbackRejected(Exception):
    """The pasted text is not this session's callback; `str()` is a sentence for the person, with no input."""

    def __init__(self, problem: CallbackProblem) -> None:
        self.problem = problem
        super().__init__(_SENTENCES[problem])


@dataclass(frozen=True, slots=True)
class AcceptedCallback:
    """A pasted address that may go to CPA. `url` is a secret (it carries the code): never log or show it."""

    url: str = field(repr=False)
    provider_error: bool  # the provider answered `error=` (e.g. the person declined) instead of a code


def _has_space_or_control(text: str) -> bool:
    return any(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in text)


def check_callback_url(pasted: str, expected_state: str) -> AcceptedCallback:
    """Accept `pasted` as this session's callback address or raise CallbackRejected.

    Whitespace around the paste is dropped (CPA trims it too); everything else is kept byte for byte.
    """
    if len(pasted) > MAX_CALLBACK_URL_CHARS * 2:
        raise CallbackRejected(CallbackProblem.TOO_LONG)
    url = pasted.strip()
    if not url:
        raise CallbackRejected(CallbackProblem.EMPTY)
    if len(url) > MAX_CALLBACK_URL_CHARS:
        raise CallbackRejected(CallbackProblem.TOO_LONG)
    if _has_space_or_control(url):
        raise CallbackRejected(CallbackProblem.HAS_SPACES)
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a non-numeric or out-of-range port, as Go's url.Parse does
    except ValueError:
        raise CallbackRejected(CallbackProblem.NOT_A_URL) from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise CallbackRejected(CallbackProblem.NOT_A_URL)
    if _BAD_ESCAPE.search(parts.query):
        raise CallbackRejected(CallbackProblem.NOT_A_URL)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    states = [value.strip() for key, value in pairs if key == "state"]
    if not states or not states[0]:
        raise CallbackRejected(CallbackProblem.NO_STATE)
    if len(states) > 1:
        raise CallbackRejected(CallbackProblem.SEVERAL_STATES)
    if not expected_state or not hmac.compare_digest(
        states[0].encode("utf-8", "surrogatepass"), expected_state.encode("utf-8", "surrogatepass")
    ):
        raise CallbackRejected(CallbackProblem.WRONG_STATE)
    values = {key: value.strip() for key, value in reversed(pairs)}  # first value wins, as Go's Get
    provider_error = bool(values.get("error") or values.get("error_description"))
    if not values.get("code") and not provider_error:
        raise CallbackRejected(CallbackProblem.NO_CODE)
    return AcceptedCallback(url=url, provider_error=provider_error)
