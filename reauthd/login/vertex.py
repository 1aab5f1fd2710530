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
# Google Cloud project ids (`my-project-123`), or the legacy domain-scoped form (`example.com:my-project`).
# CPA builds the file name from the id (vertex_import.go), so anything else is refused before it gets there.
_PROJECT_ID = re.compile(r"(?:[a-z0-9][a-z0-9.-]{0,62}:)?[a-z0-9][a-z0-9-]{0,62}")
# A service account's e-mail names its project: `<name>@<project>.iam.gserviceaccount.com`.
_SA_EMAIL = re.compile(r"[^@\s]+@(?P<project>[a-z0-9][a-z0-9-]*)\.iam\.gserviceaccount\.com")
_VERTEX_NAME = re.compile(r"vertex-(?P<part>.+)\.json")


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
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError):
        # ValueError also covers an integer longer than Python's 4,300-digit conversion limit.
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
    project_id = parsed["project_id"].strip()
    if not _PROJECT_ID.fullmatch(project_id):
        raise ServiceAccountRejected(
            "The key file's project_id is not a Google Cloud project id. Download a fresh key."
        )
    return ServiceAccountSummary(project_id=project_id, client_email=email)


def vertex_file_name(project_id: str) -> str:
    """The file CPA's `POST /vertex/import` writes for a project (vertex_import.go sanitizeVertexFilePart)."""
    part = project_id.strip()
    for old, new in (("/", "_"), ("\\", "_"), (":", "_"), (" ", "-")):
        part = part.replace(old, new)
    return f"vertex-{part or 'vertex'}.json"


def email_project(email: str | None) -> str | None:
    """`reauth@my-project.iam.gserviceaccount.com` → `my-project`; None for any other address."""
    match = _SA_EMAIL.fullmatch((email or "").strip().lower())
    return match.group("project") if match else None


def project_mismatch(
    key: ServiceAccountSummary, old_name: str, old_project: str | None, old_email: str | None
) -> str | None:
    """The sentence refusing a key for another project than the credential being replaced, or None.

    A recipient link replaces its own credential only: CPA names the file after the key's project and
    overwrites whatever holds that name, so a key for another project would replace (or adopt) another
    credential. The old project comes from CPA's listing (`project_id`), else from the old file's
    service-account e-mail, else from its name (`vertex-[<prefix>-]<project>.json`, cmd/vertex_import.go).
    """
    wanted = key.project_id
    key_email_project = email_project(key.client_email)
    if key_email_project is not None and key_email_project != wanted.rsplit(":", 1)[-1]:
        return (
            f"This key's service account belongs to project {key_email_project}, but its project_id says "
            f"{wanted}. Download a fresh key from the project of this request."
        )
    old = (old_project or "").strip() or email_project(old_email)
    if old:
        if old.casefold() == wanted.casefold():
            return None
        return f"This key belongs to project {wanted}; this request is for project {old}."
    match = _VERTEX_NAME.fullmatch(old_name)
    if match is None:
        return (
            f"reauthd cannot tell which project {old_name} belongs to, so it cannot check this key. "
            "The operator has to renew this credential by hand."
        )
    part = vertex_file_name(wanted)[len("vertex-") : -len(".json")]
    if match.group("part") == part or match.group("part").endswith(f"-{part}"):
        return None
    return f"This key belongs to project {wanted}; this request is for project {match.group('part')}."


def check_location(value: str | None) -> str:
    """The Vertex location, `us-central1` when left empty; raises ServiceAccountRejected when malformed."""
    location = (value or "").strip().lower() or DEFAULT_LOCATION
    if not _LOCATION.fullmatch(location):
        raise ServiceAccountRejected("The location should look like us-central1 or europe-west4.")
    return location
