"""The Codex subscription end in CPA's listing: Go `any`, passed through as the id_token held it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from reauthd.detect.listing import claim_time, credential_from_entry

END = datetime(2027, 1, 15, 8, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2027-01-15T08:30:00+00:00", END),
        ("2027-01-15T08:30:00Z", END),
        ("2027-01-15T09:30:00.123+01:00", END.replace(microsecond=123000)),
        (int(END.timestamp()), END),
        (float(END.timestamp()), END),
        ("2027-01-15T08:30:00", None),  # no zone: not a moment
        ("soon", None),
        (True, None),
        (None, None),
        ({"at": 1}, None),
        (10**20, None),
    ],
)
def test_claim_time(value: object, expected: datetime | None) -> None:
    assert claim_time(value) == expected


def test_entry_with_and_without_the_claim() -> None:
    base = {"name": "codex-a.json", "auth_index": "0123456789abcdef", "type": "codex", "status": "active"}
    with_claim = {
        **base,
        "disabled": False,
        "id_token": {"chatgpt_subscription_active_until": END.isoformat()},
    }
    assert credential_from_entry(with_claim, "main").subscription_until == END
    odd = {**base, "disabled": False, "id_token": {"chatgpt_subscription_active_until": "garbage"}}
    assert credential_from_entry(odd, "main").subscription_until is None  # kept, without a date
    assert credential_from_entry({**base, "disabled": False}, "main").subscription_until is None
