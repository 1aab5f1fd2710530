"""One review of every listed credential after a new listing (issue 14): accounts held twice, Codex plans
that lapse or change, and failures a re-login will not fix, as operator notices.

Pure apart from its inputs: the daemon passes the listing, the latest unhealthy verdicts, the previous
plan types (from the store) and `now`; it posts the notices (reauthd.notify.notices) and stores the plans.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from reauthd.core.accounts import DuplicateGroup, duplicate_holders, review_plans
from reauthd.core.causes import OPERATOR_CAUSES, Cause, explain, task_cause
from reauthd.core.model import Credential, ReauthTask, VerdictKind
from reauthd.core.sanitize import mask_email
from reauthd.notify.notices import OperatorNotice, cause_notice, duplicate_notice, plan_notice
from reauthd.tasks.service import LatestVerdict

#: Store key of the Codex plan type last seen per account (digest → plan), so a change is told once.
PLANS_KEY = "accounts.plans"


@dataclass(slots=True)
class Review:
    duplicates: list[DuplicateGroup] = field(default_factory=list)
    notices: list[OperatorNotice] = field(default_factory=list)
    plans: dict[str, str] = field(default_factory=dict)

    def holders_of(self, cpa: str, name: str) -> list[str]:
        """The other holders of the account of (cpa, file name), shown as `file on CPA x`."""
        for group in self.duplicates:
            if any((h.cpa, h.name) == (cpa, name) for h in group.holders):
                return group.others(cpa, name)
        return []


def cause_key(cpa: str, auth_index: str, cause: str) -> str:
    return hashlib.sha256(f"cause\x1f{cpa}\x1f{auth_index}\x1f{cause}".encode()).hexdigest()[:24]


def review(
    credentials: Iterable[Credential],
    unhealthy: Iterable[LatestVerdict],
    now: datetime,
    *,
    warning_days: float,
    known_plans: Mapping[str, str],
    exclude: Collection[tuple[str, str]] = (),
) -> Review:
    """`credentials`: every listed credential of every CPA. `unhealthy`: the latest verdicts that are not
    healthy. `exclude`: (cpa, file name) of the old and new files of re-logins reauthd is finishing."""
    listed = list(credentials)
    result = Review()
    result.duplicates = duplicate_holders(listed, exclude)
    result.notices = [duplicate_notice(group) for group in result.duplicates]
    plans = review_plans(listed, now, warning_days, known_plans)
    result.plans = plans.plans
    result.notices += [plan_notice(notice) for notice in plans.notices]
    for view in unhealthy:
        credential = view.credential
        if credential is None:
            continue
        verdict = view.verdict
        advice = explain(verdict, credential.provider)
        if advice.cause not in OPERATOR_CAUSES:
            continue
        if verdict.kind in (VerdictKind.NEEDS_REAUTH, VerdictKind.ACCOUNT_GONE) and not verdict.confirmed:
            continue  # a deactivation is told once it is confirmed, like a revocation
        notice = cause_notice(
            cause_key(credential.cpa, credential.auth_index, advice.cause.value),
            credential.cpa,
            credential.provider,
            credential.name,
            mask_email(credential.email) or "(unknown account)",
            advice,
        )
        if notice is not None:
            result.notices.append(notice)
    return result


def other_holders_for(tasks: Iterable[ReauthTask], result: Review) -> dict[str, list[str]]:
    """task id → the other holders to name, for open tasks whose cause is a reused refresh token and whose
    file shares its account with another credential (only where that changes what the task says)."""
    updates: dict[str, list[str]] = {}
    for task in tasks:
        if task.state.terminal or task_cause(task)[0] is not Cause.REFRESH_TOKEN_REUSED:
            continue
        others = result.holders_of(task.cpa, task.auth_name)
        if others and task.details.get("other_holders") != others:
            updates[task.id] = others
    return updates
