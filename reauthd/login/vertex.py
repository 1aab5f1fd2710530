"""Checking a Vertex service-account key file and location before `POST /vertex/import` (contract §6).

CPA rejects a bad file itself, but a person deserves a specific sentence before the upload, and a
file that is not a key (a photo, a 50 MB log) must never reach CPA.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

#: Google's JSON keys are about 2.4 KB; this leaves room for odd ones and refuses anything else.
MAX_SERVICE_ACCOUNT_BYTES = 64 * 1024
DEFAULT_LOCATION = "us-central1"

# Google Cloud region names: `us-central1`, `europe-west4`, `global`.
_LOCATION = re.compile(r"[a-z][a-z0-9-]{1,62}")


class ServiceAccountRejected(Exception):
    """The upload is not a usable service-account key; `str()` is a sentence without the file's content."""


@dataclass(frozen=True, slots=True)
class ServiceAccountSummary:
    """What the page may show about the key: never the private key."""

    project_id: str
    client_email: str


def check_service_account(data: bytes) -> ServiceAccountSummary:
    """Validate a service-account JSON (type, project_id, client_email, private_key) or raise."""
    if not data:
        raise ServiceAccountRejected("Choose the service-account key file (a .json file) first.")
    if len(data) > MAX_SERVICE_ACCOUNT_BYTES:
        raise ServiceAccountRejected(
            f"That file is larger than {MAX_SERVICE_ACCOUNT_BYTES // 1024} KB; a service-account key is "
            "a small JSON file."
        )
    try:
        parsed = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ServiceAccountRejected(
            "That file is not JSON. Upload the key file downloaded from Google Cloud."
        ) from None
    if not isinstance(parsed, dict):
        raise ServiceAccountRejected("That JSON is not a service-account key.")
    if parsed.get("type") != "service_account":
        raise ServiceAccountRejected(
            'That JSON is not a service-account key (its "type" is not "service_account").'
        )
    missing = [
        key
        for key in ("project_id", "client_email", "private_key")
        if not isinstance(parsed.get(key), str) or not parsed[key].strip()
    ]
    if missing:
        raise ServiceAccountRejected(
            f"The key file lacks {', '.join(missing)}. Download a fresh key and try again."
        )
    if "PRIVATE KEY" not in parsed["private_key"]:
        raise ServiceAccountRejected("The key file's private_key is not a private key. Download a fresh key.")
    email = parsed["client_email"].strip()
    if "@" not in email:
        raise ServiceAccountRejected("The key file's client_email is not an e-mail address.")
    return ServiceAccountSummary(project_id=parsed["project_id"].strip(), client_email=email)


def check_location(value: str | None) -> str:
    """The Vertex location, `us-central1` when left empty; raises ServiceAccountRejected when malformed."""
    location = (value or "").strip().lower() or DEFAULT_LOCATION
    if not _LOCATION.fullmatch(location):
        raise ServiceAccountRejected("The location should look like us-central1 or europe-west4.")
    return location
