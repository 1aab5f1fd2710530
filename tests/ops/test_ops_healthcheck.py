"""The container health-check command against tiny live HTTP servers (200, 503, silence, nothing)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from reauthd.ops import healthcheck


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/slow":
            time.sleep(2)
        status = {"/livez": 200, "/readyz": 503, "/slow": 200, "/redirect": 302}.get(self.path, 404)
        body = b"ok\n" if status == 200 else b"not ready: CPA 'main' did not answer\nsecond line\n"
        try:
            self.send_response(status)
            if status == 302:
                self.send_header("Location", "/readyz")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # /slow: the health check gave up first, as it should

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("path", "code", "printed"),
    [
        ("/livez", 0, "healthy: 200 ok"),
        ("/readyz", 1, "unhealthy: 503 not ready: CPA 'main' did not answer"),
        ("/missing", 1, "unhealthy: 404"),
        ("/redirect", 1, "unhealthy: 503"),  # redirects are followed; the final answer counts
    ],
)
def test_exit_code_follows_the_answer(server: str, path: str, code: int, printed: str, capsys) -> None:
    assert healthcheck.main(server + path) == code
    out = capsys.readouterr().out
    assert out.startswith(printed)
    assert "second line" not in out


def test_a_silent_server_times_out(server: str, capsys) -> None:
    started = time.monotonic()
    assert healthcheck.main(server + "/slow", timeout_s=0.3) == 1
    assert time.monotonic() - started < 1.5
    assert capsys.readouterr().out.startswith("unhealthy: no answer from")


def test_nobody_listening(capsys) -> None:
    assert healthcheck.main(f"http://127.0.0.1:{_closed_port()}/livez", timeout_s=1) == 1
    assert "no answer" in capsys.readouterr().out


@pytest.mark.parametrize("url", ["file:///etc/passwd", "127.0.0.1:8390/livez", "ftp://x/"])
def test_only_http_urls(url: str, capsys) -> None:
    assert healthcheck.main(url) == 2
    assert "not an http" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "code"),
    [(["--help"], 2), (["a", "b", "c"], 2), (["http://127.0.0.1:1/livez", "soon"], 2)],
)
def test_cli_arguments(args: list[str], code: int) -> None:
    assert healthcheck._cli(args) == code


def test_proxy_environment_is_ignored(server: str, monkeypatch) -> None:
    # A proxy from the environment would answer for (or hide) the daemon: the check must go direct.
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{_closed_port()}")
    assert healthcheck.main(server + "/livez") == 0


def test_runs_as_the_container_healthcheck_command(server: str) -> None:
    # Exactly how the Dockerfile's HEALTHCHECK runs it: a fresh interpreter, `python -m`.
    ok = subprocess.run(
        [sys.executable, "-m", "reauthd.ops.healthcheck", server + "/livez"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert (ok.returncode, ok.stdout.strip()) == (0, "healthy: 200 ok")
    bad = subprocess.run(
        [sys.executable, "-m", "reauthd.ops.healthcheck", server + "/readyz", "2"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert bad.returncode == 1
    assert bad.stderr == ""


def test_the_command_starts_light() -> None:
    # Docker runs it every 30 s next to the daemon: it must not drag in the daemon's dependencies.
    probe = (
        "import sys, reauthd.ops.healthcheck; "
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('reauthd', 'httpx', 'starlette', 'pydantic', 'prometheus_client', 'structlog', 'apprise'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=30, check=True
    )
    assert done.stdout.strip() == "reauthd,reauthd.ops,reauthd.ops.healthcheck"
