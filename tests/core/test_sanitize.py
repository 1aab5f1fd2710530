"""Evidence and task texts are safe to store and show: emails masked, tokens and OAuth secrets scrubbed, truncated."""

from __future__ import annotations

import pytest

from reauthd.core.sanitize import (
    REDACTED,
    mask_account,
    mask_email,
    mask_emails_in,
    sanitize_line,
    sanitize_text,
    short_text,
)

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEyMyJ9.c2lnbmF0dXJlLXZhbHVl"


@pytest.mark.parametrize(
    ("email", "masked"),
    [
        ("alice@example.com", "a***@example.com"),
        ("a@example.com", "a***@example.com"),
        ("  bob.smith+x@mail.co.uk ", "b***@mail.co.uk"),
        ("not-an-email", "***"),
        ("@example.com", "***"),
        ("", ""),
        (None, ""),
    ],
)
def test_mask_email(email: str | None, masked: str) -> None:
    assert mask_email(email) == masked


@pytest.mark.parametrize(
    ("text", "secret", "kept"),
    [
        (f"id_token {JWT} rejected", JWT, "rejected"),
        ("Authorization: Bearer sk-live-abcdef123456", "sk-live-abcdef123456", "Authorization"),
        ('{"access_token":"at-SECRET-123","error":"invalid_grant"}', "at-SECRET-123", "invalid_grant"),
        ("refresh_token=rt-SECRET-456&grant_type=refresh_token", "rt-SECRET-456", "grant_type"),
        (
            "http://localhost:1455/auth/callback?code=ac_SECRETCODE&state=0123abcd",
            "ac_SECRETCODE",
            "callback",
        ),
        ("http://localhost:1455/auth/callback?code=ac_x&state=0123abcdSTATE", "0123abcdSTATE", "localhost"),
        ("user alice.w@example.com was revoked", "alice.w@example.com", "a***@example.com"),
        ("key sk-ant-api03-SECRETKEYVALUE here", "sk-ant-api03-SECRETKEYVALUE", "here"),
        ("X-Management-Key: hunter2-mgmt", "hunter2-mgmt", "X-Management-Key"),
    ],
)
def test_sanitize_scrubs_secrets(text: str, secret: str, kept: str) -> None:
    clean = sanitize_text(text)
    assert secret not in clean
    assert kept in clean


def test_sanitize_keeps_the_words_the_classifier_needs() -> None:
    body = (
        '{"error":{"message":"Your authentication token has been invalidated. Please try signing in again.",'
        '"type":"authentication_error","code":"auth_unavailable"}}'
    )
    assert sanitize_text(body) == body
    assert REDACTED not in sanitize_text(
        "token_invalidated refresh_token_reused invalid_grant status_code=401"
    )


def test_sanitize_truncates_and_bounds_work_on_huge_bodies() -> None:
    huge = "x" * (50 * 1024 * 1024)
    clean = sanitize_text(huge)
    assert len(clean) <= 2048
    assert clean.endswith("…")
    assert sanitize_text(b"\xff\xfe broken bytes" * 10, limit=20).endswith("…")


def test_a_secret_cut_at_the_limit_is_still_scrubbed() -> None:
    text = "a" * 95 + " Bearer abcdefghijklmnopqrstuvwxyz0123456789"
    clean = sanitize_text(text, limit=100)
    assert "abcdefghij" not in clean


def test_short_text_is_one_line() -> None:
    assert short_text("line one\nline two\t\tend") == "line one line two end"
    assert len(short_text("word " * 200, limit=40)) == 40


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("codex-1a2b3c4d-alice@example.com-plus.json", "codex-1a2b3c4d-a***@example.com-plus.json"),
        ("codex-alice@example.com-plus.json", "codex-a***@example.com-plus.json"),
        ("user alice.w@example.com was revoked", "user a***@example.com was revoked"),
    ],
)
def test_emails_in_text_are_masked_and_file_names_keep_their_prefix(text: str, masked: str) -> None:
    assert mask_emails_in(text) == masked
    assert sanitize_text(text) == masked
    assert sanitize_line(text) == masked


# ------------------------------------------------------------------------------------------ one-line texts

SECRETS = [
    ("Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJl", "eyJ"),
    ("access_token=ya29.a0AfH6SMBx1234567890", "ya29"),
    ('{"refresh_token": "rt_1234567890abcdefghij"}', "rt_1234"),
    ("https://auth.openai.com/oauth/authorize?client_id=x&state=abcdef123456", "abcdef123456"),
    ("http://localhost:1455/auth/callback?code=ac_XYZ&state=s1", "ac_XYZ"),
    ("key sk-proj-abcdefghijklmnop1234 was rejected", "sk-proj-abcdefghijklmnop1234"),
    ("management key: MGMT-KEY-0123456789abcdef0123456789", "0123456789abcdef0123456789"),
    ("user alice.smith@example.com was logged out", "alice.smith@"),
    ("code: 4/0AX4XfWh_abcdef", "0AX4XfWh"),
]


@pytest.mark.parametrize(("raw", "leak"), SECRETS)
def test_sanitize_line_removes_secrets(raw: str, leak: str) -> None:
    clean = sanitize_line(raw)
    assert leak not in clean


@pytest.mark.parametrize(
    "plain",
    [
        "token revoked by the provider",
        "refresh token reused",
        "401 unauthorized after refresh",
        "quota exceeded",
    ],
)
def test_sanitize_line_keeps_plain_reasons(plain: str) -> None:
    assert sanitize_line(plain) == plain


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("alice@example.com", "a***@example.com"),
        ("bob", "b***"),
        ("x", "***"),
        (None, "(unknown account)"),
        ("", "(unknown account)"),
    ],
)
def test_mask_account(raw: str | None, masked: str) -> None:
    assert mask_account(raw) == masked


def test_every_output_knows_the_same_token_shapes() -> None:
    """Issue 11 item 7: task reasons, messages and evidence drop ya29., 1//, rt-, xai- and JSON token fields."""
    from reauthd.core.sanitize import sanitize_line, sanitize_text

    text = (
        'refused: {"refresh_token": "rtCANARY1", "access_token":"atCANARY2"} ya29.CANARY3short '
        "1//0CANARY4abcdefghijklmnopq xai-CANARY5abcdefghijklmnop rt-CANARY6abcdefghijk"
    )
    for out in (sanitize_line(text), sanitize_text(text)):
        for n in range(1, 7):
            assert f"CANARY{n}" not in out, (n, out)
