"""Accounts across credentials: one account held twice, and Codex plans that lapse or change (issue 14).

Pure: no I/O; `now` is an argument. Works on the `Credential`s of every configured CPA at once.

- One account, two holders. Two credentials of one account each hold a refresh token; with rotating refresh
  tokens (Codex, Claude) each refresh revokes the other's. The account is Codex's
  `id_token.chatgpt_account_id` plus the entry's `email` (one e-mail can be in several workspaces, one
  workspace holds several people), elsewhere the provider plus the e-mail. Disabled credentials do not
  refresh (CPA's auto-refresh skips them) and are left out.
- Plans. CPA's listing carries the Codex id_token claims `plan_type` and
  `chatgpt_subscription_active_until` (internal/api/handlers/management/auth_files.go
  `extractCodexIDTokenClaims`). A notice goes out `warning_days` before the end, and one when the plan
  type changes.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from reauthd.core.model import Credential
from reauthd.core.sanitize import mask_email, mask_emails_in


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:24]


def account_key(credential: Credential) -> str | None:
    """The account a credential signs into, or None when the listing does not say (Kimi: no e-mail)."""
    email = (credential.email or "").strip().lower()
    provider = credential.provider.lower()
    if provider == "codex" and credential.account_id:
        return f"codex\x1f{credential.account_id.strip()}\x1f{email}"
    if not email:
        return None
    return f"{provider}\x1f{email}"


@dataclass(frozen=True, slots=True)
class Holder:
    cpa: str
    name: str
    auth_index: str

    @property
    def shown(self) -> str:
        """`file on CPA x`, with the e-mail in the file name masked."""
        return f"{mask_emails_in(self.name)} on CPA {self.cpa}"


@dataclass(frozen=True, slots=True)
class DuplicateGroup:
    """Credentials of one account: more than one holder of its login."""

    provider: str
    account: str  # masked
    holders: tuple[Holder, ...]

    @property
    def key(self) -> str:
        """Stable for this set of holders: a third holder is news, the same two are not."""
        return _digest("dup", *sorted(f"{h.cpa}\x1f{h.name}" for h in self.holders))

    @property
    def cross_cpa(self) -> bool:
        return len({h.cpa for h in self.holders}) > 1

    def others(self, cpa: str, name: str) -> list[str]:
        return [h.shown for h in self.holders if (h.cpa, h.name) != (cpa, name)]


def duplicate_holders(
    credentials: Iterable[Credential], exclude: Collection[tuple[str, str]] = ()
) -> list[DuplicateGroup]:
    """Accounts with more than one enabled credential, across every CPA given. `exclude` holds (cpa, file
    name) pairs to leave out: the old and new file of a re-login reauthd itself is finishing."""
    groups: dict[str, list[Credential]] = defaultdict(list)
    for credential in credentials:
        if credential.disabled or (credential.cpa, credential.name) in exclude:
            continue
        key = account_key(credential)
        if key is not None:
            groups[key].append(credential)
    result = []
    for members in groups.values():
        if len(members) < 2:
            continue
        members.sort(key=lambda c: (c.cpa, c.name))
        first = members[0]
        result.append(
            DuplicateGroup(
                provider=first.provider,
                account=mask_email(first.email) or "(no e-mail)",
                holders=tuple(Holder(c.cpa, c.name, c.auth_index) for c in members),
            )
        )
    result.sort(key=lambda g: (g.provider, g.account, g.holders[0].cpa, g.holders[0].name))
    return result


# ---------------------------------------------------------------------------------------------- plans


@dataclass(frozen=True, slots=True)
class PlanNotice:
    """One notice about a Codex plan. `key` is stable: the same notice is never sent twice."""

    key: str
    kind: str  # "plan_lapse" or "plan_change"
    cpa: str
    provider: str
    title: str
    text: str


@dataclass(slots=True)
class PlanReview:
    notices: list[PlanNotice] = field(default_factory=list)
    plans: dict[str, str] = field(default_factory=dict)  # account digest -> plan type now


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def review_plans(
    credentials: Iterable[Credential],
    now: datetime,
    warning_days: float,
    known_plans: Mapping[str, str],
) -> PlanReview:
    """Notices due now about Codex plans, and the plan type of each account as listed now.

    `known_plans` is the previous `plans` (persisted by the caller): a change from it is a notice; an
    account seen for the first time is only recorded. When one account has several files (CPA writes a
    new file name when the plan changes), the most recently written file speaks for it."""
    newest: dict[str, Credential] = {}
    for credential in credentials:
        if credential.provider.lower() != "codex" or credential.disabled:
            continue
        key = account_key(credential)
        if key is None:
            continue
        current = newest.get(key)
        if current is None or _written(credential) > _written(current):
            newest[key] = credential
    review = PlanReview()
    warning = timedelta(days=warning_days)
    for key, credential in sorted(newest.items()):
        account = _digest("acct", key)
        shown = mask_email(credential.email) or "(no e-mail)"
        plan = (credential.plan_type or "").strip()
        if plan:
            review.plans[account] = plan
            before = known_plans.get(account)
            if before is not None and before != plan:
                review.notices.append(
                    PlanNotice(
                        key=_digest("plan_change", account, before, plan),
                        kind="plan_change",
                        cpa=credential.cpa,
                        provider="codex",
                        title=f"Plan changed: {shown} (codex on {credential.cpa}) is now {plan}",
                        text=(
                            f"The Codex plan of {shown} changed from {before} to {plan}. CPA writes a new "
                            f"file name when such an account logs in again; check that the right file is "
                            f"in use ({mask_emails_in(credential.name)} on CPA {credential.cpa})."
                        ),
                    )
                )
        until = credential.subscription_until
        if until is not None and warning_days > 0 and until - warning <= now < until:
            review.notices.append(
                PlanNotice(
                    key=_digest("plan_lapse", account, until.astimezone(UTC).isoformat()),
                    kind="plan_lapse",
                    cpa=credential.cpa,
                    provider="codex",
                    title=f"Plan ends soon: {shown} (codex on {credential.cpa})",
                    text=(
                        f"The Codex subscription{f' ({plan})' if plan else ''} of {shown} is active until "
                        f"{_when(until)}. Renew it before then: when it lapses, requests fail and a new "
                        f"login will not help ({mask_emails_in(credential.name)} on CPA {credential.cpa})."
                    ),
                )
            )
    return review


def _written(credential: Credential) -> datetime:
    return credential.modtime or datetime.min.replace(tzinfo=UTC)
