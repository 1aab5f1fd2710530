"""A loopback webhook Apprise's json:// delivers to: it keeps what it received (by path and by message kind)
and counts every attempt, refused ones too, so tests can say "nothing lost, nothing duplicated"."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# Title openings of reauthd's message kinds (reauthd/notify/templates.py _HEADLINES).
KIND_BY_TITLE = (
    ("Log in again", "new"),
    ("Reminder:", "reminder"),
    ("Unanswered:", "escalation"),
    ("Resolved:", "resolved"),
    ("Re-login failed", "failed"),
    ("Expired:", "expired"),
)


def kind_of(message: dict[str, Any]) -> str:
    title = str(message.get("title", ""))
    for opening, kind in KIND_BY_TITLE:
        if title.startswith(opening):
            return kind
    return "unknown"


@dataclass
class Inbox:
    """What the endpoint saw. `fail_with` makes it refuse (that status) without keeping the message."""

    port: int = 0
    token: str = "hook"
    received: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)  # the request path of each received message
    raw: list[bytes] = field(default_factory=list)  # every request body, refused ones included
    attempts: int = 0
    refused: int = 0
    fail_with: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str | None = None) -> str:
        """The Apprise URL of this inbox; `path` (default: the token) tells routes apart."""
        return f"json://127.0.0.1:{self.port}/{self.token if path is None else path}"

    def messages(self, kind: str | None = None, *, path: str | None = None) -> list[dict[str, Any]]:
        """Received messages, optionally only those of one kind and/or sent to one path."""
        with self.lock:
            return [
                m
                for m, p in zip(self.received, self.paths, strict=True)
                if (kind is None or kind_of(m) == kind) and (path is None or p == "/" + path)
            ]

    def kinds(self) -> Counter[str]:
        return Counter(kind_of(m) for m in self.messages())

    def everything(self) -> str:
        """All bytes ever posted here, for secret canaries."""
        with self.lock:
            return "\n".join(body.decode("utf-8", "replace") for body in self.raw)


@contextmanager
def serve_inbox(token: str = "hook") -> Iterator[Inbox]:
    box = Inbox(token=token)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with box.lock:
                box.attempts += 1
                box.raw.append(body)
                failing = box.fail_with
                if failing is None:
                    box.received.append(json.loads(body))
                    box.paths.append(self.path)
                else:
                    box.refused += 1
            self.send_response(failing or 200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    box.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="loopback-inbox", daemon=True)
    thread.start()
    try:
        yield box
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
