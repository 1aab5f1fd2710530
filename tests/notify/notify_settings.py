"""A real HTTP endpoint on loopback that Apprise's json:// delivers to, and test settings around it."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from reauthd.config import Settings


@dataclass
class Inbox:
    """What the endpoint received; `fail_with` makes it answer that status instead of 200."""

    port: int = 0
    received: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    fail_with: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "hook") -> str:
        return f"json://127.0.0.1:{self.port}/{path}"

    def messages(self, path: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [
                m for m, p in zip(self.received, self.paths, strict=True) if path is None or p == "/" + path
            ]


@contextmanager
def serve_inbox() -> Iterator[Inbox]:
    box = Inbox()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            if box.fail_with is not None:
                self.send_response(box.fail_with)
                self.end_headers()
                return
            with box.lock:
                box.received.append(json.loads(body))
                box.paths.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    box.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield box
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def make_settings(tmp_path: Path, **notify: Any) -> Settings:
    return Settings(
        state={"path": tmp_path / "state.db"},
        cpa=[{"name": "main", "base_url": "http://127.0.0.1:9", "management_key": "mgmt-key-secret-0000"}],
        notify=notify,
        web={"public_url": "https://reauthd.example.org"},
    )
