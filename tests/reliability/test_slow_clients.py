"""Issue 11: 1,100 clients that send their headers one line at a time, against a daemon held to systemd's
default 1,024 open files (soft and hard, so it cannot raise them): a revocation is still detected and its
notification delivered, and /livez still answers, while the slow clients keep coming back."""

from __future__ import annotations

import selectors
import socket
import threading
import time

import httpx
import pytest

from reauthd.sim.server import SimThread
from tests.reliability.daemon_process import wait_for
from tests.reliability.staging import DaemonFactory, add_credentials, revoke_live
from tests.support.inbox import Inbox

pytestmark = pytest.mark.slow

CLIENTS = 1_100


class SlowClients:
    """CLIENTS loopback connections, each sending one more header line every second and never finishing;
    a connection the server drops is opened again at once, so the pressure never lets up."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.selector = selectors.DefaultSelector()
        self.socks: dict[socket.socket, int] = {}
        self.reconnects = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slow-clients", daemon=True)

    def _open(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", self.port))
        self.socks[sock] = 0
        self.selector.register(sock, selectors.EVENT_READ)

    def _close(self, sock: socket.socket) -> None:
        self.selector.unregister(sock)
        del self.socks[sock]
        sock.close()

    def _run(self) -> None:
        for _ in range(CLIENTS):
            self._open()
        next_line = time.monotonic()
        while not self._stop.is_set():
            for key, _ in self.selector.select(timeout=0.1):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(4096)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:  # dropped by the server: come back
                    self._close(sock)
                    self._open()
                    self.reconnects += 1
            if time.monotonic() >= next_line:
                next_line += 1.0
                for sock, lines in list(self.socks.items()):
                    line = b"GET / HTTP/1.1\r\n" if lines == 0 else f"X-Slow-{lines}: 1\r\n".encode()
                    try:
                        sock.send(line)
                        self.socks[sock] = lines + 1
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        self._close(sock)
                        self._open()
                        self.reconnects += 1
        for sock in list(self.socks):
            self._close(sock)

    def __enter__(self) -> SlowClients:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@pytest.mark.timeout(150)
def test_1100_slow_clients_do_not_stop_detection_or_delivery(
    sim: SimThread, inbox: Inbox, daemon: DaemonFactory
) -> None:
    (name,) = add_credentials(sim, "codex")
    proc = daemon(open_files=(1024, 1024))
    proc.start()
    with SlowClients(proc.config.port) as clients:
        wait_for(lambda: len(clients.socks) == CLIENTS, 20, "the slow clients to connect")
        time.sleep(3)  # the page holds what it can; the rest queue or come back
        revoke_live(sim, name)
        wait_for(lambda: len(proc.tasks()) == 1, 40, "the revocation's task")
        wait_for(lambda: inbox.messages("new"), 40, "its notification")
        live = wait_for(_livez(proc.base), 15, "/livez to answer during the flood")
        assert live == 200
        assert clients.reconnects > 0  # the page dropped slow clients rather than holding them all
    log = proc.log_text()
    assert "web.connections_dropped" in log
    assert "Too many open files" not in log


def _livez(base: str) -> object:
    def check() -> int | None:
        try:
            return httpx.get(f"{base}/livez", timeout=2).status_code
        except httpx.HTTPError:
            return None

    return check
