"""CPA's answers during a login, told in plain words, with what the person can do next.

CPA's texts are short fixed phrases (contract §4.2, §4.3, §6); the session error messages of §4.2 may
carry a cause after a colon, which can quote upstream bodies, so only the phrase before it is shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from reauthd.cpa.errors import CPAError, CPARequestError, FeatureMissing


class NextStep(StrEnum):
    PASTE_AGAIN = "paste_again"  # this login is still usable: fix the address and paste again
    START_AGAIN = "start_again"  # this login is over (window lapsed, cancelled, failed): mint a new one
    COMPLETED = "completed"  # CPA already has the result: just follow the progress
    TRY_LATER = "try_later"  # CPA is unreachable or refusing reauthd: nothing the person can fix now
    FIX_FILE = "fix_file"  # Vertex: the uploaded file was not accepted


@dataclass(frozen=True, slots=True)
class Explanation:
    sentence: str
    next_step: NextStep


_LAPSED = Explanation(
    "The sign-in took longer than the proxy server (CPA) allows (5 minutes), so this attempt has expired. "
    "Start again to get a fresh sign-in link.",
    NextStep.START_AGAIN,
)
_UNREACHABLE = Explanation(
    "reauthd cannot reach the proxy server right now. Please try again in a few minutes; "
    "the operator can see what is wrong.",
    NextStep.TRY_LATER,
)

_CODE_EXPIRED = Explanation(
    "The code expired before it was approved. Start again for a new one.", NextStep.START_AGAIN
)

# CPA's waiter timeouts (contract §4.2): anthropic/codex say the first, antigravity the second.
_TIMEOUT_TEXTS = ("timeout waiting for oauth callback", "oauth flow timed out")
# A device code that ran out: `Authentication failed: kimi: device code expired` (internal/auth/kimi/kimi.go).
_CODE_EXPIRED_TEXTS = ("device code expired",)


def _phrase(text: str) -> str:
    """CPA's message up to its first colon, capped: the cause after it may quote an upstream body."""
    head = text.split(":", 1)[0].strip()
    return head[:120] or "no reason given"


def explain_status_error(error_text: str | None, *, device: bool = False) -> Explanation:
    """`get-auth-status` said `error` (contract §4.2). `device`: the login is a device code, which CPA
    waits for until the code expires (up to 15 or 30 minutes), not 5 minutes."""
    text = (error_text or "").strip()
    low = text.lower()
    if device and (low == "unknown or expired state" or any(t in low for t in _CODE_EXPIRED_TEXTS)):
        return _CODE_EXPIRED
    if low == "unknown or expired state" or any(t in low for t in _TIMEOUT_TEXTS):
        return _LAPSED
    if "state" in low and ("mismatch" in low or "code error" in low):
        return Explanation(
            "The provider's answer did not match this sign-in. Start again and use the new link.",
            NextStep.START_AGAIN,
        )
    return Explanation(
        f"The sign-in did not complete: {_phrase(text)}. Start again; if it keeps failing, tell the operator.",
        NextStep.START_AGAIN,
    )


def explain_callback_answer(exc: CPAError) -> Explanation:
    """What `POST /oauth-callback` refused, in CPA's order of checks (oauth_callback.go, contract §4.3)."""
    if not isinstance(exc, CPARequestError):
        return explain_cpa_problem(exc)
    low = exc.error_text.strip().lower()
    if exc.status == 404:
        return _LAPSED
    if exc.status == 409:
        if low == "oauth flow is already completed":
            return Explanation(
                "This sign-in was already completed. Follow its progress below.", NextStep.COMPLETED
            )
        if any(t in low for t in _TIMEOUT_TEXTS):
            return _LAPSED
        if low == "oauth flow is not pending":
            return Explanation(
                "This sign-in is no longer waiting for an address (it finished or was cancelled). "
                "Start again if the account still needs it.",
                NextStep.START_AGAIN,
            )
        return explain_status_error(exc.error_text)
    if exc.status == 400:
        if low in ("invalid redirect_url", "state is required", "invalid state", "code or error is required"):
            return Explanation(
                "The proxy server could not read a sign-in result from that address. Copy the whole address "
                "from the address bar again and paste it.",
                NextStep.PASTE_AGAIN,
            )
        if low in ("provider does not match state", "unsupported provider"):
            return Explanation(
                "That address is from a different provider's sign-in. Use the link on this page.",
                NextStep.PASTE_AGAIN,
            )
    if exc.status >= 500:
        return Explanation(
            "The proxy server could not record the sign-in just now. Paste the same address again in a moment.",
            NextStep.PASTE_AGAIN,
        )
    return Explanation(
        f"The proxy server refused the address ({_phrase(exc.error_text)}). Start again if this repeats.",
        NextStep.PASTE_AGAIN,
    )


def explain_vertex_answer(exc: CPAError) -> Explanation:
    """What `POST /vertex/import` refused (vertex_import.go, contract §6)."""
    if not isinstance(exc, CPARequestError):
        return explain_cpa_problem(exc)
    low = exc.error_text.strip().lower()
    if exc.status == 400:
        if low in ("invalid json", "invalid service account", "project_id missing", "file required"):
            return Explanation(
                f"The proxy server did not accept that key file ({_phrase(exc.error_text)}). "
                "Download a fresh JSON key for the service account and upload it.",
                NextStep.FIX_FILE,
            )
        return Explanation(
            f"The proxy server could not read the upload ({_phrase(exc.error_text)}). Try again.",
            NextStep.FIX_FILE,
        )
    return Explanation(
        "The proxy server could not save the key file. Try again in a few minutes; "
        "if it keeps failing, tell the operator.",
        NextStep.TRY_LATER,
    )


def explain_start_problem(exc: CPAError) -> Explanation:
    """Asking CPA for an authorize URL / device code failed (contract §4.1)."""
    if isinstance(exc, FeatureMissing):  # 404 on /<plugin>-auth-url: the plugin is not installed
        return Explanation(
            "This proxy server has no sign-in for this provider (its plugin may be missing). "
            "The operator needs to look at it.",
            NextStep.TRY_LATER,
        )
    if isinstance(exc, CPARequestError):
        if exc.status == 404:
            return Explanation(
                "This proxy server has no sign-in for this provider (its plugin may be missing). "
                "The operator needs to look at it.",
                NextStep.TRY_LATER,
            )
        low = exc.error_text.strip().lower()
        if low == "failed to start callback server":
            # is_webui: CPA could not listen on the provider's fixed localhost port (1455, 54545, 51121),
            # usually because another program or an earlier sign-in holds it (contract §4.1).
            return Explanation(
                "The proxy server could not open the local port this sign-in needs (another program or "
                "sign-in may be using it); try again in a minute, and tell the operator if it keeps failing.",
                NextStep.START_AGAIN,
            )
        if low == "callback server unavailable":
            return Explanation(
                "The proxy server is not set up to receive this sign-in by itself; "
                "the operator needs to look at it.",
                NextStep.TRY_LATER,
            )
        return Explanation(
            f"The proxy server could not start a sign-in ({_phrase(exc.error_text)}). Try again in a moment.",
            NextStep.START_AGAIN,
        )
    return explain_cpa_problem(exc)


def explain_cpa_problem(exc: CPAError) -> Explanation:
    """Key rejected, banned, management off, unreachable: nothing for the person to fix."""
    # KeyProblem, ManagementUnavailable, FeatureMissing, TransientCPAError, MalformedResponse: all the same
    # to the person; the operator sees the typed error in the log and the task's history.
    return _UNREACHABLE
