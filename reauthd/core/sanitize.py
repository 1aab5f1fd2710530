"""Making evidence text safe to store and show: mask emails, scrub tokens and OAuth secrets, truncate.

Upstream error bodies reach reauthd verbatim (contract §2.3: `status_message` is the raw body; §7: the
`errors` event carries it too). They can echo JWTs, Bearer values, refresh tokens, `code=`/`state=`
query values and account emails. Everything that leaves detection passes through `sanitize_text`.
"""

from __future__ import annotations

import re

# CPAMP truncates its failure summaries to 4096 bytes (cpamp-signals.md §4.2); evidence is for people,
# and the classifier only needs the first few hundred characters of a body.
EVIDENCE_MAX_CHARS = 2048
SHORT_MAX_CHARS = 160

REDACTED = "[redacted]"

_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)")
# A JWT: three base64url segments, the first two starting with the base64 of '{"'.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=$-]{4,}")
# JSON or form fields whose value is a secret: "access_token":"...", refresh_token=..., api_key: ...
_SECRET_FIELD = re.compile(
    r"(?i)([\"']?(?:access_token|refresh_token|id_token|accesstoken|refreshtoken|idtoken|token|api[_-]?key"
    r"|apikey|secret|client_secret|password|authorization|cookie|session_id|x-management-key|"
    r"management[_-]?key)[\"']?\s*[:=]\s*)(\"[^\"]*\"|'[^']*'|[^\s,;&}\]\"']+)"
)
# OAuth callback parameters: the code and state must never be stored or shown (design.md step 4).
_OAUTH_PARAM = re.compile(r"(?i)\b(code|state|code_verifier|id_token|access_token)=([^&\s\"'#]+)")
# Provider API keys with well-known prefixes.
_API_KEY = re.compile(r"\b(sk-[A-Za-z0-9_-]{8,}|sk-ant-[A-Za-z0-9_-]{8,}|xai-[A-Za-z0-9_-]{20,})")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def mask_email(email: str | None) -> str:
    """`alice@example.com` → `a***@example.com`; anything without an `@` → `***` (never echoed)."""
    if not email:
        return ""
    local, sep, domain = email.strip().rpartition("@")
    if not sep or not local or not domain:
        return "***"
    return f"{local[0]}***@{domain}"


def _mask_email_match(match: re.Match[str]) -> str:
    return f"{match.group(1)}***@{match.group(2)}"


def _redact_field(match: re.Match[str]) -> str:
    value = match.group(2)
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{match.group(1)}{quote}{REDACTED}{quote}"


def scrub(text: str) -> str:
    """Remove secrets and mask emails, without truncating."""
    if not text:
        return ""
    text = _CONTROL.sub(" ", text)
    text = _JWT.sub(REDACTED, text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _OAUTH_PARAM.sub(lambda m: f"{m.group(1)}={REDACTED}", text)
    text = _SECRET_FIELD.sub(_redact_field, text)
    text = _API_KEY.sub(REDACTED, text)
    return _EMAIL.sub(_mask_email_match, text)


def truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 1)].rstrip() + "…"


def sanitize_text(text: str | bytes | None, limit: int = EVIDENCE_MAX_CHARS) -> str:
    """Scrub and truncate evidence text. Scrubbing sees a little more than `limit` so a secret cut in half
    at the boundary is still recognised; a 50 MB body costs no more than a few kilobytes of work."""
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text[: limit * 2 + 512].decode("utf-8", errors="replace")
    head = text[: limit * 2 + 512]
    return truncate(scrub(head).strip(), limit)


def short_text(text: str | None, limit: int = SHORT_MAX_CHARS) -> str:
    """One line for a table cell: sanitised, whitespace collapsed, truncated."""
    cleaned = sanitize_text(text, limit=limit * 4)
    return truncate(" ".join(cleaned.split()), limit)
