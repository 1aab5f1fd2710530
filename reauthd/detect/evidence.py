"""Turning what CPA and CPAMP say into sanitised `Evidence`: listing entries, `errors` events, candidates."""

from __future__ import annotations

from datetime import datetime

from reauthd.core.classify import KNOWN_LISTING_STATUSES
from reauthd.core.model import Credential, Evidence, EvidenceSource
from reauthd.core.sanitize import sanitize_text
from reauthd.cpa.models import ErrorEvent

ListingFingerprint = tuple[str, str, bool, str]


def listing_fingerprint(credential: Credential) -> ListingFingerprint:
    """What must change for a listing entry to count as news. `next_retry_after` moves on every new
    failure of a fully blocked auth (contract §2.3 step 4), so a repeated failure with the same message
    is still seen as new."""
    retry = credential.next_retry_after.isoformat() if credential.next_retry_after else ""
    return (credential.status, credential.status_message, credential.unavailable, retry)


def listing_evidence(
    credential: Credential,
    previous: Evidence | None,
    previous_fingerprint: ListingFingerprint | None,
    now: datetime,
) -> tuple[Evidence | None, ListingFingerprint]:
    """The listing's evidence, timestamped when it *first* showed this state: CPA keeps an `error` in
    place until something clears it (contract §2.3 C), so a newer probe success must be able to win
    over a stale message that is merely still displayed. None for a status CPA never sends."""
    fingerprint = listing_fingerprint(credential)
    if previous is not None and fingerprint == previous_fingerprint:
        return previous, fingerprint
    if credential.status not in KNOWN_LISTING_STATUSES:
        return None, fingerprint
    # Entries that first show the same state in the same cycle share one (immutable) Evidence and one
    # fingerprint: 100,000 healthy credentials hold one of each instead of one per credential (issue 12).
    if _SHARED_AT[0] != now or len(_SHARED) >= _SHARED_MAX:
        _SHARED.clear()
        _SHARED_AT[0] = now
    shared = _SHARED.get(fingerprint)
    if shared is not None:
        return shared
    evidence = Evidence(
        source=EvidenceSource.LISTING,
        observed_at=now,
        text=sanitize_text(credential.status_message),
        code=credential.status,
    )
    _SHARED[fingerprint] = (evidence, fingerprint)
    return evidence, fingerprint


_SHARED: dict[ListingFingerprint, tuple[Evidence, ListingFingerprint]] = {}
_SHARED_AT: list[datetime | None] = [None]
_SHARED_MAX = 1024


def error_event_evidence(event: ErrorEvent, now: datetime) -> Evidence:
    """An `errors` channel message (contract §7). Timestamped with reauthd's clock, not CPA's, so it
    orders correctly against probes (CPA's clock may be skewed)."""
    return Evidence(
        source=EvidenceSource.ERROR_STREAM,
        observed_at=now,
        http_status=event.status_code,
        text=sanitize_text(event.body),
        code=event.code or None,
    )


def credential_from_event(cpa: str, event: ErrorEvent) -> Credential:
    """A stand-in until the next listing names the credential (it never produces a paging event)."""
    status = event.auth_status
    return Credential(
        cpa=cpa,
        name=event.auth_id or event.auth_index,
        auth_index=event.auth_index,
        provider=event.provider.lower(),
        status=status.status or "error",
        status_message=status.status_message,
        disabled=status.disabled,
        unavailable=status.unavailable,
        source="event",
    )
