"""Typed errors of the CPA management client: one class per answer a caller must branch on.

Every `str()` is one sentence naming the CPA and the endpoint (a path, never a query string). None of
them ever contains the management key, a token, an OAuth state/code or a callback URL: the text that
comes from CPA is redacted and truncated by the wire layer before it reaches these constructors.

    CPAError
    ├── KeyProblem                    the management key cannot be used: stop calling this CPA
    │   ├── ManagementKeyRejected     401 missing / invalid key (counts toward CPA's 5-strike IP ban)
    │   ├── ManagementBanned          403 IP ban (even the right key is refused until it ends)
    │   ├── RemoteManagementDisabled  403 reauthd is not "local" and allow-remote is off
    │   ├── ManagementKeyNotSet       403 CPA has no secret key configured
    │   └── ClientPaused              the key gate refused to send anything (carries the original reason)
    ├── ManagementUnavailable
    │   ├── ManagementNotEnabled      404 empty body: management routes are off
    │   └── AuthManagerUnavailable    503 "core auth manager unavailable"
    ├── FeatureMissing                404 on a route this CPA version lacks
    ├── TransientCPAError             connect errors, timeouts, proxy 5xx (after retries)
    │   └── UpstreamRequestFailed     /api-call 502: the *upstream* failed, CPA is fine
    ├── MalformedResponse             bad JSON, missing fields, oversized body
    │   └── ResponseTooLarge
    └── CPARequestError               any other 4xx/5xx with CPA's `error` text (`.status`, `.error_text`)
"""

from __future__ import annotations

import re
from datetime import datetime


class CPAError(Exception):
    """Base of every error raised by reauthd.cpa. `cpa` is the configured CPA name."""

    def __init__(self, cpa: str, endpoint: str, sentence: str) -> None:
        super().__init__(sentence)
        self.cpa = cpa
        self.endpoint = endpoint
        self.sentence = sentence

    def __str__(self) -> str:
        return self.sentence


# ---------------------------------------------------------------------------------------------- key


class KeyProblem(CPAError):
    """The management key cannot be used right now; reauthd must not keep calling this CPA."""

    #: True when the answer counted as a failed key attempt on CPA's ban table (contract §1).
    counts_as_failure: bool = False


class ManagementKeyRejected(KeyProblem):
    """401: CPA said `missing management key` or `invalid management key`."""

    counts_as_failure = True

    def __init__(self, cpa: str, endpoint: str, reason: str) -> None:
        self.reason = reason
        super().__init__(
            cpa,
            endpoint,
            f"CPA {cpa!r} rejected the management key on {endpoint} ({reason}); "
            "reauthd stops calling it until the key is changed",
        )


class ManagementBanned(KeyProblem):
    """403 `IP banned due to too many failed attempts. Try again in <go duration>`."""

    def __init__(self, cpa: str, endpoint: str, retry_after_s: float | None) -> None:
        self.retry_after_s = retry_after_s
        wait = f"for another {format_seconds(retry_after_s)}" if retry_after_s is not None else "for a while"
        super().__init__(
            cpa,
            endpoint,
            f"CPA {cpa!r} has banned reauthd's IP address {wait} after too many failed management-key "
            f"attempts (answer on {endpoint})",
        )


class RemoteManagementDisabled(KeyProblem):
    """403 `remote management disabled`: reauthd's IP is not 127.0.0.1/::1 and allow-remote is off."""

    def __init__(self, cpa: str, endpoint: str) -> None:
        super().__init__(
            cpa,
            endpoint,
            f"CPA {cpa!r} refuses remote management on {endpoint}: set remote-management.allow-remote "
            "or run reauthd on the same host",
        )


class ManagementKeyNotSet(KeyProblem):
    """403 `remote management key not set`: CPA has neither a secret-key nor MANAGEMENT_PASSWORD."""

    def __init__(self, cpa: str, endpoint: str) -> None:
        super().__init__(
            cpa,
            endpoint,
            f"CPA {cpa!r} has no remote-management secret key configured (answer on {endpoint})",
        )


class ClientPaused(KeyProblem):
    """The key gate refused to send: an earlier answer said the key is rejected or the IP is banned."""

    def __init__(self, cpa: str, endpoint: str, cause: KeyProblem, until: datetime | None) -> None:
        self.cause = cause
        self.until = until
        when = (
            f"until {until.isoformat(timespec='seconds')}" if until is not None else "until its key changes"
        )
        super().__init__(
            cpa,
            endpoint,
            f"reauthd is not calling CPA {cpa!r} ({endpoint}) {when}: {cause.sentence}",
        )


# ------------------------------------------------------------------------------------- availability


class ManagementUnavailable(CPAError):
    """CPA answers, but its management side cannot serve the request."""


class ManagementNotEnabled(ManagementUnavailable):
    """404 with an empty body: management routes are not registered or disabled (contract §1)."""

    def __init__(self, cpa: str, endpoint: str) -> None:
        super().__init__(
            cpa,
            endpoint,
            f"CPA {cpa!r} has its management API turned off ({endpoint} answered 404 with no body)",
        )


class AuthManagerUnavailable(ManagementUnavailable):
    """503 `core auth manager unavailable` (contract §3)."""

    def __init__(self, cpa: str, endpoint: str) -> None:
        super().__init__(cpa, endpoint, f"CPA {cpa!r} has no core auth manager attached ({endpoint})")


class FeatureMissing(CPAError):
    """404 on a management route this CPA version does not have (removed or not yet added)."""

    def __init__(self, cpa: str, endpoint: str, feature: str, version: str | None) -> None:
        self.feature = feature
        self.version = version
        seen = f" (version {version})" if version else ""
        super().__init__(
            cpa,
            endpoint,
            f"CPA {cpa!r}{seen} has no {endpoint}: this CPA is too old or too new for {feature}",
        )


# ------------------------------------------------------------------------------------------ transient


class TransientCPAError(CPAError):
    """Connect error, timeout or a 5xx that is not one of CPA's own answers; retries are exhausted."""

    def __init__(self, cpa: str, endpoint: str, what: str, attempts: int = 1) -> None:
        self.what = what
        self.attempts = attempts
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        super().__init__(cpa, endpoint, f"CPA {cpa!r} did not answer {endpoint}{tries}: {what}")


class UpstreamRequestFailed(TransientCPAError):
    """/api-call answered 502: CPA could not reach the upstream (or read its answer). Not retried here."""

    def __init__(self, cpa: str, endpoint: str, error_text: str) -> None:
        self.error_text = error_text
        CPAError.__init__(
            self,
            cpa,
            endpoint,
            f"CPA {cpa!r} could not complete the upstream request behind {endpoint}: {error_text}",
        )
        self.what = error_text
        self.attempts = 1


# ------------------------------------------------------------------------------------------ malformed


class MalformedResponse(CPAError):
    """The answer is not what the contract says (bad JSON, a missing or impossible field)."""

    def __init__(self, cpa: str, endpoint: str, problem: str) -> None:
        self.problem = problem
        super().__init__(cpa, endpoint, f"CPA {cpa!r} sent an unusable answer on {endpoint}: {problem}")


class ResponseTooLarge(MalformedResponse):
    """The body exceeded the per-endpoint cap; reading stopped at the cap."""

    def __init__(self, cpa: str, endpoint: str, limit: int) -> None:
        self.limit = limit
        super().__init__(cpa, endpoint, f"the body is larger than the {limit:,}-byte limit for this endpoint")


# ---------------------------------------------------------------------------------------- request


class CPARequestError(CPAError):
    """Any other error answer (400, 404 with a body, 409, 500 with a body, ...), with CPA's `error` text."""

    def __init__(self, cpa: str, endpoint: str, status: int, error_text: str, attempt: int = 1) -> None:
        self.status = status
        self.error_text = error_text
        self.attempt = attempt  # >1: an earlier attempt may have been applied before its answer was lost
        text = error_text or "no error text"
        super().__init__(cpa, endpoint, f"CPA {cpa!r} answered {status} on {endpoint}: {text}")


# ------------------------------------------------------------------------------------ go durations

_GO_DURATION = re.compile(r"(?P<num>\d+(?:\.\d+)?)(?P<unit>h|ms|us|µs|ns|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_BAN_TEXT = re.compile(r"Try again in (?P<dur>[0-9.hmsuµn]+)")


def parse_go_duration(text: str) -> float | None:
    """`29m59s` → 1799.0, `1h0m0s` → 3600.0, `45s` → 45.0, `0s` → 0.0; None if not a Go duration."""
    text = text.strip()
    if not text:
        return None
    pos = 0
    total = 0.0
    for match in _GO_DURATION.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group("num")) * _UNIT_SECONDS[match.group("unit")]
        pos = match.end()
    if pos != len(text):
        return None
    return total


def parse_ban_retry_after(error_text: str) -> float | None:
    """The remaining ban in seconds from CPA's `... Try again in 29m59s` (handler.go AuthenticateManagementKey)."""
    match = _BAN_TEXT.search(error_text)
    return parse_go_duration(match.group("dur")) if match else None


def format_seconds(seconds: float) -> str:
    """A short human duration: `29m59s`, `2h0m`, `45s`."""
    s = max(0, round(seconds))
    hours, rest = divmod(s, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"
