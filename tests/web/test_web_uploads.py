"""The in-memory multipart parser of the Vertex upload: real browser-shaped bodies and broken ones."""

from __future__ import annotations

import httpx
import pytest

from reauthd.web.uploads import UploadUnreadable, parse_form_data


def encoded(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://x/", data=fields, files=files)
    return request.read(), request.headers["content-type"]


def test_fields_and_file() -> None:
    body, content_type = encoded(
        {"csrf": "tok", "location": "europe-west4"}, {"file": ("k.json", b'{"a": 1}\r\n')}
    )
    parts = parse_form_data(body, content_type)
    assert parts["csrf"].data == b"tok" and parts["csrf"].filename is None
    assert parts["location"].data == b"europe-west4"
    assert parts["file"].data == b'{"a": 1}\r\n' and parts["file"].filename == "k.json"


def test_binary_file_survives() -> None:
    blob = bytes(range(256)) * 4
    body, content_type = encoded({}, {"file": ("k.bin", blob)})
    assert parse_form_data(body, content_type)["file"].data == blob


UNTERMINATED = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="key.json"\r\n\r\n{}\r\n'


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (UNTERMINATED, "multipart/form-data; boundary=XyZ"),
        (b"csrf=x", "application/x-www-form-urlencoded"),
        (b"--XyZ--\r\n", "multipart/form-data"),  # no boundary parameter
        (b"", "multipart/form-data; boundary=XyZ"),
        (b"garbage", "multipart/form-data; boundary=XyZ"),
        (UNTERMINATED + b"--XyZ--\r\n", "multipart/form-data; boundary=XyZ\r\nX-Evil: 1"),
        (
            b"".join(
                f'--B\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\nv\r\n'.encode() for i in range(5)
            )
            + b"--B--\r\n",
            "multipart/form-data; boundary=B",
        ),
        (b"--B\r\nContent-Type: text/plain\r\n\r\nv\r\n--B--\r\n", "multipart/form-data; boundary=B"),
    ],
)
def test_unreadable(body: bytes, content_type: str) -> None:
    with pytest.raises(UploadUnreadable):
        parse_form_data(body, content_type)
