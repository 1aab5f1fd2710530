"""Why a credential fails, and what a person should do about it: a cause beside the verdict.

Pure: no I/O, no clock. The verdict (core/classify.py) says *whether* a new login is needed; the cause says
*why*, with one plain sentence and the next step, because for several failures a re-login is the wrong
answer: a deactivated account, a blocked egress IP, an ended plan (issue 14). The set of causes is bounded
(a metrics label and a JSON field): add members, never rename them.

Bodies matched here are the upstream bodies of shared/cpa-contract.md §9 and the fixed strings CPA writes
(§2.3 A4-5: `cloudflare challenge`, `payment_required`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from reauthd.core.classify import provider_name
from reauthd.core.model import Evidence, EvidenceSource, ReauthTask, Verdict, VerdictKind


class Cause(StrEnum):
    NONE = "none"  # nothing is wrong (or nothing is known yet)
    REVOKED = "revoked"  # revoked, invalidated, expired past refreshing: a new login fixes it
    REFRESH_TOKEN_REUSED = "refresh_token_reused"  # noqa: S105 — another program refreshed the same login
    ACCOUNT_DEACTIVATED = "account_deactivated"  # deactivated, banned, deleted: a login will not help
    REGION_BLOCKED = "region_blocked"  # country/region refused or a Cloudflare challenge: the egress IP
    PAYMENT = "payment"  # payment required, subscription ended: the plan, not the login
    QUOTA = "quota"  # a usage limit: wait
    TRANSIENT = "transient"  # the provider or the network had a temporary error
    CHECKING = "checking"  # an authentication error not confirmed yet
    MANUAL = "manual"  # an operator asked for a new login
    UNKNOWN = "unknown"  # an error reauthd does not recognise


#: Causes a new login fixes: only these get a re-login link.
RELOGIN_CAUSES = frozenset({Cause.REVOKED, Cause.REFRESH_TOKEN_REUSED, Cause.MANUAL})
#: Causes an operator must act on (no re-login link; one message to the operator).
OPERATOR_CAUSES = frozenset({Cause.ACCOUNT_DEACTIVATED, Cause.REGION_BLOCKED, Cause.PAYMENT})

#: A hint that changes the advice within a cause (bounded too; stored with a task).
HINT_TOKEN_INVALIDATED = "token_invalidated"  # noqa: S105 — an upstream error code, not a secret

# ---------------------------------------------------------------------------------------------- patterns

# OpenAI: `deactivated_workspace`, `account_deactivated` ("Your OpenAI account has been deactivated.");
# banned/deleted/suspended accounts and disabled organisations (Anthropic "This organization has been
# disabled.").
_DEACTIVATED = re.compile(
    r"deactivated_workspace|workspace[_ ](?:has been |was |is )?deactivated|account_deactivated"
    r"|account[_ ](?:has been |was |is )?(?:deactivated|disabled|suspended|banned|deleted|terminated)"
    r"|(?:user|account)_(?:banned|suspended|deleted)|organization (?:has been |was |is )?(?:disabled|deactivated)"
)
# OpenAI's 403 `unsupported_country_region_territory` ("Country, region, or territory not supported"),
# Gemini's "User location is not supported", CPA's fixed `cloudflare challenge` (§2.3 A4) and a raw
# challenge page.
_REGION = re.compile(
    r"unsupported_country_region_territory|country, region,? or territory not supported"
    r"|user location is not supported|not available in your (?:country|region)"
    r"|cloudflare challenge|just a moment\.\.\.|attention required!|cf_chl|cf-ray"
)
# OpenAI's refresh answer `refresh_token_reused` ("Your refresh token has already been used to generate a
# new access token."): the refresh token rotated under another holder.
_REUSED = re.compile(
    r"refresh_token_reused|refresh token has already been used|refresh token (?:was )?reused"
)
# A plan or a bill, not a login: HTTP 402 answers, ended subscriptions, billing limits.
_PAYMENT = re.compile(
    r"subscription (?:has |is )?(?:ended|expired|inactive|lapsed|canceled|cancelled)|no active subscription"
    r"|plan (?:has )?(?:expired|ended)|deactivated[_ ]plan|billing_hard_limit|credit balance is too low"
    r"|payment[_ ]required|subscription_(?:expired|inactive|required)"
)
# Codex answers `token_invalidated` ("Your authentication token has been invalidated."); CPA's reshaping
# keeps only the message (§9).
_INVALIDATED = re.compile(r"token_invalidated|token has been invalidated")


def _haystack(evidence: Evidence) -> str:
    return f"{evidence.text} {evidence.code or ''}".lower()


def _payment(evidence: Evidence) -> bool:
    if evidence.http_status == 402:
        return True
    text = evidence.text.strip().lower()  # not the machine code: CPA's `payment_required` may be a 403
    return text != "payment_required" and bool(_PAYMENT.search(text))


def cause_of(verdict: Verdict, provider: str = "") -> Cause:
    """The cause behind `verdict`, read from the verdict and the evidence it carries."""
    del provider  # the patterns are provider-neutral; kept for symmetry with `advice`
    kind = verdict.kind
    if kind is VerdictKind.HEALTHY:
        return Cause.NONE
    texts = [_haystack(e) for e in verdict.evidence]
    if kind is VerdictKind.ACCOUNT_GONE or any(_DEACTIVATED.search(t) for t in texts):
        return Cause.ACCOUNT_DEACTIVATED
    if kind is VerdictKind.NEEDS_REAUTH:
        if any(e.source is EvidenceSource.MANUAL for e in verdict.evidence):
            return Cause.MANUAL
        return Cause.REFRESH_TOKEN_REUSED if any(_REUSED.search(t) for t in texts) else Cause.REVOKED
    if any(_REGION.search(t) for t in texts):
        return Cause.REGION_BLOCKED
    # CPA writes `payment_required` for a 402 *or* a 403 on the no-model path (§2.3-5): only a known 402
    # or explicit plan wording says "payment".
    if any(_payment(e) for e in verdict.evidence):
        return Cause.PAYMENT
    if kind is VerdictKind.QUOTA:
        return Cause.QUOTA
    if kind is VerdictKind.TRANSIENT:
        return Cause.TRANSIENT
    if kind is VerdictKind.SUSPECT:
        return Cause.CHECKING
    return Cause.UNKNOWN if verdict.evidence else Cause.NONE


def hint_of(verdict: Verdict, provider: str = "") -> str | None:
    """A bounded hint that sharpens the advice: Codex after `token_invalidated` usually asks for a phone."""
    if provider.lower() == "codex" and any(_INVALIDATED.search(_haystack(e)) for e in verdict.evidence):
        return HINT_TOKEN_INVALIDATED
    return None


# ---------------------------------------------------------------------------------------------- advice


@dataclass(frozen=True, slots=True)
class Advice:
    """What to tell a person: the cause, why (one sentence), and the next step (one sentence)."""

    cause: Cause
    why: str
    next_step: str
    relogin: bool  # a re-login link helps
    operator: bool  # an operator must act (the person with the link cannot fix it)

    def as_dict(self) -> dict[str, object]:
        return {
            "cause": self.cause.value,
            "why": self.why,
            "next_step": self.next_step,
            "relogin": self.relogin,
            "operator": self.operator,
        }


def advice(
    cause: Cause, provider: str = "", *, hint: str | None = None, other_holders: Sequence[str] = ()
) -> Advice:
    """The plain sentence and next step for `cause`. `other_holders` names credentials of the same account
    elsewhere ("file on CPA"), known from the duplicate-holder check."""
    who = provider_name(provider)
    holders = ", ".join(other_holders)
    if cause is Cause.REFRESH_TOKEN_REUSED:
        other = f" ({holders})" if holders else ""
        return Advice(
            cause,
            "Another program refreshed this login: two holders of one refresh token revoke each other.",
            f"Log in again here, then stop the other holder{other} or give it its own login.",
            relogin=True,
            operator=False,
        )
    if cause is Cause.REVOKED:
        step = "Log in again with the link."
        if provider.lower() == "vertex":  # a service-account key, not a login (contract §6)
            step = "Upload a new service-account key with the link."
        if hint == HINT_TOKEN_INVALIDATED:
            step += " After an invalidated Codex token OpenAI usually asks for phone verification: keep the phone at hand."
        return Advice(
            cause,
            f"{who} no longer accepts this login (revoked, invalidated, or expired past refreshing).",
            step,
            relogin=True,
            operator=False,
        )
    if cause is Cause.MANUAL:
        return Advice(cause, "An operator asked for a new login.", "Log in again with the link.", True, False)
    if cause is Cause.ACCOUNT_DEACTIVATED:
        return Advice(
            cause,
            f"{who} says the account or workspace was deactivated, banned or deleted; a new login will not bring it back.",
            "An operator should confirm and retire this credential (`reauthd retire --yes` applies the retire "
            "policy); reauthd retires nothing by itself.",
            relogin=False,
            operator=True,
        )
    if cause is Cause.REGION_BLOCKED:
        return Advice(
            cause,
            f"{who} refuses requests from this network (region not supported or a Cloudflare challenge); "
            "the login itself may be fine.",
            "The proxy or egress IP is the problem: an operator should change the proxy CPA uses; "
            "a new login will not help.",
            relogin=False,
            operator=True,
        )
    if cause is Cause.PAYMENT:
        return Advice(
            cause,
            f"{who} asks for payment: the plan or subscription ended, not the login.",
            "An operator should renew the plan or subscription; a new login will not help until then.",
            relogin=False,
            operator=True,
        )
    if cause is Cause.QUOTA:
        return Advice(
            cause,
            f"{who} reports a usage limit.",
            "Wait for the limit to reset; no new login needed.",
            False,
            False,
        )
    if cause is Cause.TRANSIENT:
        return Advice(
            cause,
            f"{who} or the network had a temporary error.",
            "Nothing to do; reauthd checks again.",
            False,
            False,
        )
    if cause is Cause.CHECKING:
        return Advice(
            cause,
            f"{who} returned an authentication error that is not confirmed yet.",
            "Nothing yet; a person is asked only once reauthd has confirmed it.",
            False,
            False,
        )
    if cause is Cause.UNKNOWN:
        return Advice(
            cause,
            "CPA reports an error reauthd does not recognise.",
            "Look at the credential in CPA's panel.",
            False,
            False,
        )
    return Advice(Cause.NONE, "No failure is known.", "Nothing to do.", False, False)


def explain(verdict: Verdict, provider: str = "", other_holders: Sequence[str] = ()) -> Advice:
    """Cause and advice for a verdict in one call."""
    return advice(
        cause_of(verdict, provider), provider, hint=hint_of(verdict, provider), other_holders=other_holders
    )


def parse_cause(value: object) -> Cause | None:
    """A stored cause value back to the enum; None for anything not in the set."""
    if isinstance(value, str):
        try:
            return Cause(value)
        except ValueError:
            return None
    return None


def task_cause(task: ReauthTask) -> tuple[Cause, str | None]:
    """The cause stored with a task when it was raised (`details["cause"]`, `details["cause_hint"]`). A task
    raised before causes existed: an operator's request is `manual`; otherwise its stored evidence says
    whether the refresh token was reused; tasks are raised only for a confirmed needs_reauth."""
    details = task.details or {}
    stored = parse_cause(details.get("cause"))
    hint = details.get("cause_hint") if details.get("cause_hint") == HINT_TOKEN_INVALIDATED else None
    if stored is not None:
        return stored, hint
    if task.source == "manual":
        return Cause.MANUAL, None
    texts = [
        f"{e.get('text', '')} {e.get('code', '')}".lower()
        for e in details.get("evidence", [])
        if isinstance(e, dict)
    ]
    if any(_REUSED.search(t) for t in texts):
        return Cause.REFRESH_TOKEN_REUSED, None
    if task.provider.lower() == "codex" and any(_INVALIDATED.search(t) for t in texts):
        return Cause.REVOKED, HINT_TOKEN_INVALIDATED
    return Cause.REVOKED, None


def task_advice(task: ReauthTask) -> Advice:
    """Cause and advice for a task (page, messages, `tasks show`, operator view)."""
    cause, hint = task_cause(task)
    holders = task.details.get("other_holders") if task.details else None
    others = [h for h in holders if isinstance(h, str)] if isinstance(holders, list) else []
    return advice(cause, task.provider, hint=hint, other_holders=others)
