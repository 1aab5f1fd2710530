"""Parsing the Vertex upload (multipart/form-data) from the already size-capped body, in memory.

Starlette's parser spools file parts to temporary files and, on a body without its closing boundary,
leaves them open (found by tests/reliability/test_fuzz_forms.py). A service-account key is a few KB and
the body is capped before parsing, so the stdlib e-mail parser reads it in memory instead: no files, and
any structural defect refuses the upload.
"""

from __future__ import annotations

from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser


class UploadUnreadable(Exception):
    """The body is not a well-formed multipart/form-data upload (or has too many parts)."""


@dataclass(frozen=True, slots=True)
class FormPart:
    data: bytes
    filename: str | None


MAX_PARTS = 4


def parse_form_data(body: bytes, content_type: str) -> dict[str, FormPart]:
    """Field name → first part with that name. Raises UploadUnreadable for anything malformed."""
    if not content_type.lower().startswith("multipart/form-data") or "boundary=" not in content_type:
        raise UploadUnreadable("not multipart/form-data")
    if "\r" in content_type or "\n" in content_type:
        raise UploadUnreadable("bad content type")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
    message = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    if not isinstance(message, EmailMessage) or not message.is_multipart() or message.defects:
        raise UploadUnreadable("malformed multipart body")
    parts: dict[str, FormPart] = {}
    for count, part in enumerate(message.iter_parts(), start=1):
        if count > MAX_PARTS or part.defects or part.is_multipart():
            raise UploadUnreadable("unexpected parts")
        if part.get_content_disposition() != "form-data":
            raise UploadUnreadable("a part without form-data disposition")
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or not name:
            raise UploadUnreadable("a part without a name")
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        filename = part.get_filename()
        parts.setdefault(name, FormPart(data, filename))
    return parts
