"""Logging: structlog everywhere (stdlib loggers included), JSON for services, redaction of every secret."""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from reauthd.core.sanitize import BEARER, JWT, REDACTED, mask_emails_in, scrub_secrets

# Keys whose values are secrets whatever they hold. Matched on the lower-cased key, as a substring for the
# long names and exactly for the short ones ("code" and "state" would be too greedy as substrings).
_SECRET_KEY_PARTS = (
    "token",
    "secret",
    "password",
    "passwd",
    "authorization",
    "cookie",
    "api_key",
    "apikey",
    "management_key",
    "private_key",
    "credential",
    "redirect_url",
    "callback_url",
)
_SECRET_KEYS_EXACT = frozenset({"code", "state", "key", "auth", "session", "csrf", "link"})

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization header values.
    (BEARER, r"\1 " + REDACTED),
    # OAuth and token parameters in URLs and form bodies: code=, state=, *token=, key=, secret=.
    (
        re.compile(
            r"(?i)([?&#;\s\"']|^)((?:[a-z_]*token|code|state|key|secret|password|client_secret|session)=)[^&#\s\"']+"
        ),
        r"\1\2" + REDACTED,
    ),
    # JWT-shaped strings (id_token, access tokens).
    (JWT, REDACTED),
    # Provider key shapes.
    (re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), REDACTED),
    # Any localhost callback address as a whole: its query is the OAuth code and state.
    (
        re.compile(r"(?i)https?://(?:localhost|127\.0\.0\.1)(?::\d+)?/[^\s\"'<>]*callback[^\s\"'<>]*"),
        REDACTED,
    ),
)


class Redactor:
    """Removes secrets from log events by key, by pattern, and by the configured secret values."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: tuple[str, ...] = ()
        # `log.mask_emails` (default on): account e-mails in log lines become `a***@example.com`.
        self.mask_emails = True

    def set_secret_values(self, values: Iterable[str]) -> None:
        # Longest first so that a secret containing another is replaced whole.
        cleaned = sorted({v for v in values if v and len(v) >= 4}, key=len, reverse=True)
        with self._lock:
            self._values = tuple(cleaned)

    def add_secret_values(self, values: Iterable[str]) -> None:
        self.set_secret_values([*self._values, *values])

    def scrub_text(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, REDACTED)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        # The shapes the rest of reauthd knows (JSON token fields, ya29., rt-, xai-...), so CPA error text
        # quoted in a log line loses its tokens too (issue 11).
        text = scrub_secrets(text)
        return mask_emails_in(text) if self.mask_emails else text

    def scrub(self, value: Any, depth: int = 0) -> Any:
        if depth > 8:
            return REDACTED
        if isinstance(value, str):
            return self.scrub_text(value)
        if isinstance(value, Mapping):
            return {k: (REDACTED if is_secret_key(k) else self.scrub(v, depth + 1)) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.scrub(v, depth + 1) for v in value]
        if isinstance(value, bool | int | float) or value is None:
            return value
        # Anything else (exceptions, URLs, models) is rendered to text first so it cannot smuggle a secret.
        return self.scrub_text(str(value))

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
        for key in list(event_dict):
            if key in ("exc_info", "stack_info"):
                continue
            if is_secret_key(key):
                event_dict[key] = REDACTED
            else:
                event_dict[key] = self.scrub(event_dict[key])
        return event_dict


def is_secret_key(key: object) -> bool:
    if not isinstance(key, str):
        return False
    lowered = key.lower()
    if lowered in _SECRET_KEYS_EXACT:
        return True
    return any(part in lowered for part in _SECRET_KEY_PARTS)


REDACTOR = Redactor()


def _render_exception(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """Render exc_info as type, message and a plain stack (file:line function) — never local variables."""
    exc_info = event_dict.pop("exc_info", None)
    if not exc_info:
        return event_dict
    if exc_info is True:
        exc_info = sys.exc_info()
    elif isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    if not isinstance(exc_info, tuple) or exc_info[1] is None:
        return event_dict
    exc = exc_info[1]
    frames: list[str] = []
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        frames.append(f"{code.co_filename}:{tb.tb_lineno} {code.co_name}")
        tb = tb.tb_next
    # Flat keys render the same in JSON and on the console (whose renderer wants `exception` as text).
    event_dict["exc_type"] = type(exc).__name__
    event_dict["exc_message"] = REDACTOR.scrub_text(str(exc))
    event_dict["exc_stack"] = frames[-12:]
    return event_dict


def _drop_color_message(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    # uvicorn duplicates its message with ANSI colours in `color_message`.
    event_dict.pop("color_message", None)
    return event_dict


def _scrub_stdlib_event(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    # Messages from stdlib loggers (httpx logs full request URLs) arrive already formatted in `event`.
    event = event_dict.get("event")
    if isinstance(event, str):
        event_dict["event"] = REDACTOR.scrub_text(event)
    return event_dict


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_color_message,
        _render_exception,
        REDACTOR,
    ]


_NOISY_LOGGERS = {
    # httpx logs every request URL at INFO ("HTTP Request: GET http://...?state=..."): keep it at WARNING.
    "httpx": logging.WARNING,
    "httpcore": logging.WARNING,
    "apscheduler": logging.WARNING,
    "apprise": logging.WARNING,
    # urllib3 (under Apprise) logs request lines at DEBUG: "POST /<apprise token>".
    "urllib3": logging.WARNING,
    "uvicorn.access": logging.WARNING,
    "uvicorn.error": logging.INFO,
    "asyncio": logging.WARNING,
}


class _SkippedTickFilter(logging.Filter):
    """APScheduler warns each time a 2 s tick is skipped because the previous one still runs. That is the
    daemon's design (max_instances=1: a long tick hands its leftovers on, it is never run twice at once),
    so the warning would only bury real ones: dropped. Missed runs (a suspended host) still warn."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in record.getMessage()


_SKIPPED_TICKS = _SkippedTickFilter()


def configure_logging(
    level: str = "info",
    fmt: str = "auto",
    *,
    stream: TextIO | None = None,
    secret_values: Iterable[str] = (),
    mask_emails: bool = True,
) -> None:
    """Route structlog and the stdlib through one redacting pipeline.

    `fmt`: "json" (one JSON object a line, for services), "console" (readable), "auto" (console on a TTY).
    """
    out = stream if stream is not None else sys.stdout
    # A failing handler must not print its own traceback (with the record's arguments) to stderr.
    logging.raiseExceptions = False
    REDACTOR.set_secret_values(secret_values)
    REDACTOR.mask_emails = mask_emails
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: Processor = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if use_json
        else structlog.dev.ConsoleRenderer(
            colors=out.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    numeric = getattr(logging, level.upper(), logging.INFO)

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_shared_processors(), _scrub_stdlib_event],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, REDACTOR, renderer],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name, noisy_level in _NOISY_LOGGERS.items():
        logging.getLogger(name).setLevel(max(noisy_level, numeric))
    scheduler_log = logging.getLogger("apscheduler.scheduler")
    if _SKIPPED_TICKS not in scheduler_log.filters:
        scheduler_log.addFilter(_SKIPPED_TICKS)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def scrub(value: Any) -> Any:
    """Redact secrets from any value (for text that leaves reauthd outside the logs, e.g. error pages)."""
    return REDACTOR.scrub(value)
