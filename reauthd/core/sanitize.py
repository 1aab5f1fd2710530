"""Making text safe to store and show: mask e-mails and accounts, scrub tokens and OAuth secrets, truncate.

Upstream error bodies reach reauthd verbatim (contract §2.3: `status_message` is the raw body; §7: the
`errors` event carries it too). They can echo JWTs, Bearer values, refresh tokens, `code=`/`state=`
query values and account emails. Everything that leaves detection passes through `sanitize_text`.
Task reasons, history and message texts pass through the stricter one-line `sanitize_line`. The log
redactor (reauthd/logging.py) shares the token shapes defined here.
"""

from __future__ import annotations

import re

# CPAMP truncates its failure summaries to 4096 bytes (cpamp-signals.md §4.2); evidence is for people,
# and the classifier only needs the first few hundred characters of a body.
EVIDENCE_MAX_CHARS = 2048
SHORT_MAX_CHARS = 160

REDACTED = "[redacted]"

_EMAIL = re.compile(r"([A-Za-z0-9._%+-]+)@([A-Za-z0-9.-]+\.[A-Za-z0-9-]+)")
# A JWT: three base64url segments, the first two starting with the base64 of '{"'.
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
# An Authorization header value; group 1 is the scheme, kept so a reader sees what kind of secret it was.
BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=$-]{4,}")
# JSON or form fields whose value is a secret: "access_token":"...", refresh_token=..., api_key: ...
_SECRET_FIELD = re.compile(
    r"(?i)([\"']?(?:access_token|refresh_token|id_token|accesstoken|refreshtoken|idtoken|token|api[_-]?key"
    r"|apikey|secret|client_secret|password|authorization|cookie|session_id|x-management-key|"
    r"management[_-]?key)[\"']?\s*[:=]\s*)(\"[^\"]*\"|'[^']*'|[^\s,;&}\]\"']+)"
)
# OAuth callback parameters: the code and state must never be stored or shown (design.md step 4).
_OAUTH_PARAM = re.compile(r"(?i)\b(code|state|code_verifier|id_token|access_token)=([^&\s\"'#]+)")
# Provider API keys and bare token shapes with well-known prefixes: OpenAI/Anthropic `sk-`, xAI `xai-`,
# Google access tokens `ya29.` and refresh tokens `1//`, refresh tokens `rt-` (issue 11).
_API_KEY = re.compile(
    r"\b(sk-[A-Za-z0-9_-]{8,}|sk-ant-[A-Za-z0-9_-]{8,}|xai-[A-Za-z0-9_-]{20,}|ya29\.[A-Za-z0-9._-]{10,}"
    r"|rt-[A-Za-z0-9._-]{16,})|(?<![A-Za-z0-9/])1//[A-Za-z0-9_-]{20,}"
)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


# CPA file names carry the account's e-mail after a provider prefix (contract §4.4); keep the prefix so a
# reader can tell `codex-1a2b3c4d-c***@example.com-plus.json` from the legacy `codex-c***@example.com-plus.json`.
_FILE_PREFIX = re.compile(
    r"^((?:codex|claude|xai|antigravity|kimi|vertex|gemini|iflow|qwen)-(?:[0-9a-f]{8}-)?)(.+)$"
)


def _masked_address(local: str, domain: str) -> str:
    return f"{local[0]}***@{domain}"


def mask_email(email: str | None) -> str:
    """`alice@example.com` → `a***@example.com`; anything without an `@` → `***` (never echoed)."""
    if not email:
        return ""
    local, sep, domain = email.strip().rpartition("@")
    if not sep or not local or not domain:
        return "***"
    return _masked_address(local, domain)


def mask_account(account: str | None) -> str:
    """`alice@example.com` -> `a***@example.com`; other labels keep their first character only."""
    if not account:
        return "(unknown account)"
    account = account.strip()
    local, at, domain = account.partition("@")
    if at and local and domain:
        return _masked_address(local, domain)
    return f"{account[0]}***" if len(account) > 1 else "***"


def _mask_email_match(match: re.Match[str]) -> str:
    local, domain = match.group(1), match.group(2)
    prefix = ""
    in_file_name = _FILE_PREFIX.match(local)
    if in_file_name is not None:
        prefix, local = in_file_name.group(1), in_file_name.group(2)
    return f"{prefix}{_masked_address(local, domain)}"


def mask_emails_in(text: str) -> str:
    """Mask every e-mail in free text, keeping a CPA file name's provider/hash prefix in front of it."""
    masked = _EMAIL.sub(_mask_email_match, text)
    # A greedy domain can swallow the local part of the address right after it (`a@x.org-b@y.org`); the next
    # pass masks that one too. A masked local part (`a***`) never matches again, so this ends.
    while masked != text:
        text, masked = masked, _EMAIL.sub(_mask_email_match, masked)
    return masked


def _redact_field(match: re.Match[str]) -> str:
    value = match.group(2)
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{match.group(1)}{quote}{REDACTED}{quote}"


def scrub(text: str) -> str:
    """Remove secrets and mask emails, without truncating."""
    if not text:
        return ""
    return mask_emails_in(scrub_secrets(_CONTROL.sub(" ", text)))


def scrub_secrets(text: str) -> str:
    """Remove every token shape reauthd knows (JWTs, Authorization values, OAuth parameters, JSON and form
    secret fields, provider key prefixes); e-mails and control characters are left alone. The log
    redactor (reauthd/logging.py) runs this on every string it writes."""
    text = JWT.sub(REDACTED, text)
    text = BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _OAUTH_PARAM.sub(lambda m: f"{m.group(1)}={REDACTED}", text)
    text = _SECRET_FIELD.sub(_redact_field, text)
    return _API_KEY.sub(REDACTED, text)


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


# ------------------------------------------------------------------------------------------ one-line texts

# Task reasons and message texts are for people and never classified, so this policy is stricter than
# `scrub`: whole URLs go (an authorize URL carries `state`, a callback URL `code` and `state`), and so does
# any long opaque string.
_SENSITIVE_KEYS = (
    r"access_token|refresh_token|id_token|token|code|state|key|api_key|apikey|password|secret|"
    r"client_secret|session|cookie|authorization|redirect_url|callback"
)
_LINE_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s\"'<>]+", re.IGNORECASE), "[url]"),
    (re.compile(r"\bBearer\s+[^\s\"',;]+", re.IGNORECASE), f"Bearer {REDACTED}"),
    (re.compile(rf"(?i)\b({_SENSITIVE_KEYS})(\"?\s*[=:]\s*\"?)[^\s\"',;&}}]+"), rf"\1\2{REDACTED}"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}(?:\.[A-Za-z0-9_-]+){0,2}"), REDACTED),  # JWTs
    (re.compile(r"\b(?:sk|rt|ak|pk)-[A-Za-z0-9_-]{8,}"), REDACTED),  # API-key-shaped strings
    (re.compile(r"[A-Za-z0-9_+/=-]{32,}"), REDACTED),  # long opaque strings: tokens, keys, codes
)
LINE_MAX_CHARS = 500


def sanitize_line(text: str) -> str:
    """Make free text safe to store and show on one line: no URLs, tokens, OAuth codes/states, keys or
    full e-mails."""
    clean = text.replace("\r", " ").replace("\n", " ").strip()
    clean = scrub_secrets(clean)  # the shapes every other output knows (issue 11), then the stricter rules
    for pattern, substitute in _LINE_PATTERNS:
        clean = pattern.sub(substitute, clean)
    clean = mask_emails_in(clean)
    if len(clean) > LINE_MAX_CHARS:
        clean = clean[: LINE_MAX_CHARS - 1] + "…"
    return clean
