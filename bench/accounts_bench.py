"""Issue 14 benchmark: what the per-listing account review and the cause-labelled gauge cost.

Builds N credentials (mixed providers, a share of Codex ones with plan claims, a few accounts held twice
and a few percent failing with real upstream bodies) and times, on one core of this machine:

- `detect.review.review` (accounts held twice, Codex plan notices, operator causes): once per listing;
- the (verdict, cause) counts the daemon exports after each reconcile (`cause_of` for unhealthy ones);
- the store round trip of the plan map (`accounts.plans`, read and written as JSON).

    .venv/bin/python bench/accounts_bench.py                # 1,000 / 10,000 / 50,000
    .venv/bin/python bench/accounts_bench.py --sizes 50000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reauthd.core.causes import Cause, cause_of  # noqa: E402
from reauthd.core.classify import classify  # noqa: E402
from reauthd.core.model import (  # noqa: E402
    Credential,
    CredentialRef,
    Evidence,
    EvidenceSource,
    Verdict,
    VerdictKind,
)
from reauthd.detect.review import review  # noqa: E402

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
PROVIDERS = ("codex", "claude", "antigravity", "kimi", "xai")
BODIES = (
    '{"error":{"message":"Your authentication token has been invalidated. Please try signing in again.",'
    '"type":"authentication_error","code":"auth_unavailable"}}',
    '{"detail":{"code":"deactivated_workspace"}}',
    '{"error":{"code":"unsupported_country_region_territory","message":"Country, region, or territory not '
    'supported","param":null,"type":"request_forbidden"}}',
    "quota exhausted",
)


@dataclass(frozen=True)
class View:
    ref: CredentialRef
    credential: Credential
    verdict: Verdict


def build(n: int) -> tuple[list[Credential], list[View], list[Verdict]]:
    credentials: list[Credential] = []
    views: list[View] = []
    verdicts: list[Verdict] = []
    for i in range(n):
        twin = i % 500 == 1  # one in 500 shares its account with the credential before it
        person = i - 1 if twin else i
        provider = PROVIDERS[person % len(PROVIDERS)]
        failing = i % 33 == 0
        credential = Credential(
            cpa="main" if i % 2 else "backup",
            name=f"{provider}-{i:06d}.json",
            auth_index=f"{i:016x}",
            provider=provider,
            status="error" if failing else "active",
            status_message=BODIES[i % len(BODIES)] if failing else "",
            email=None if provider == "kimi" else f"user{person}@example.com",
            account_id=f"acct-{person}" if provider == "codex" else None,
            plan_type="plus" if provider == "codex" else None,
            subscription_until=NOW + timedelta(days=i % 40) if provider == "codex" else None,
            modtime=NOW,
        )
        credentials.append(credential)
        evidence = Evidence(
            EvidenceSource.LISTING, NOW, text=credential.status_message, code=credential.status
        )
        verdict = classify(credential, [evidence], NOW)
        verdicts.append(verdict)
        if verdict.kind is not VerdictKind.HEALTHY:
            confirmed = Verdict(verdict.kind, verdict.reason, verdict.evidence, confirmed=True)
            views.append(
                View(
                    CredentialRef(credential.cpa, credential.name, credential.auth_index),
                    credential,
                    confirmed,
                )
            )
    return credentials, views, verdicts


def timed(fn: object, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        fn()  # type: ignore[operator]
        best = min(best, time.process_time() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000,50000")
    args = parser.parse_args()
    print(
        f"{'credentials':>12} {'review s':>9} {'held twice':>10} {'notices':>8} {'cause counts s':>14} {'plans JSON s':>12}"
    )
    for n in (int(s) for s in args.sizes.split(",")):
        measure(n)


def measure(n: int) -> None:
    credentials, views, verdicts = build(n)
    result = review(credentials, views, NOW, warning_days=3, known_plans={})
    review_s = timed(lambda: review(credentials, views, NOW, warning_days=3, known_plans=result.plans))

    def counts() -> Counter[tuple[VerdictKind, Cause]]:
        c: Counter[tuple[VerdictKind, Cause]] = Counter()
        for credential, verdict in zip(credentials, verdicts, strict=True):
            healthy = verdict.kind is VerdictKind.HEALTHY
            c[(verdict.kind, Cause.NONE if healthy else cause_of(verdict, credential.provider))] += 1
        return c

    counts_s = timed(counts)
    plans_s = timed(lambda: json.loads(json.dumps(result.plans, sort_keys=True)))
    print(
        f"{n:>12,} {review_s:>9.3f} {len(result.duplicates):>10} {len(result.notices):>8} "
        f"{counts_s:>14.3f} {plans_s:>12.3f}"
    )


if __name__ == "__main__":
    main()
