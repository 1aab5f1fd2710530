"""sd_notify against a real datagram socket standing in for systemd's $NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from reauthd.ops import sdnotify
from reauthd.ops.sdnotify import SystemdNotifier, watchdog_interval_s


@pytest.fixture
def fs_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    yield str(path), sock
    sock.close()


@pytest.fixture
def abstract_socket() -> Iterator[tuple[str, socket.socket]]:
    name = f"reauthd-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2)
    yield "@" + name, sock
    sock.close()


def _received(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


@pytest.mark.parametrize(
    ("send", "expected"),
    [
        (lambda n: n.ready(), ["READY=1"]),
        (lambda n: n.ready("watching 2 CPAs"), ["READY=1", "STATUS=watching 2 CPAs"]),
        (lambda n: n.status("polling main"), ["STATUS=polling main"]),
        (lambda n: n.watchdog(), ["WATCHDOG=1"]),
        (lambda n: n.stopping(), ["STOPPING=1"]),
        (lambda n: n.stopping("finishing 3 steps"), ["STOPPING=1", "STATUS=finishing 3 steps"]),
        (lambda n: n.reloading(monotonic_usec=123456), ["RELOADING=1", "MONOTONIC_USEC=123456"]),
        # A newline in a status must not become a second assignment (e.g. a forged READY=1).
        (lambda n: n.status("a\nREADY=1"), ["STATUS=a READY=1"]),
    ],
)
def test_messages_reach_the_socket(fs_socket, send, expected) -> None:
    path, sock = fs_socket
    notifier = SystemdNotifier({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    assert send(notifier) is True
    assert _received(sock) == expected


def test_abstract_namespace_socket(abstract_socket) -> None:
    name, sock = abstract_socket
    assert SystemdNotifier({"NOTIFY_SOCKET": name}).ready("up") is True
    assert _received(sock) == ["READY=1", "STATUS=up"]


def test_reloading_carries_the_current_monotonic_clock(fs_socket) -> None:
    import time

    path, sock = fs_socket
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    SystemdNotifier({"NOTIFY_SOCKET": path}).reloading("reloading configuration")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    lines = _received(sock)
    assert lines[0] == "RELOADING=1"
    usec = int(lines[1].removeprefix("MONOTONIC_USEC="))
    assert before <= usec <= after
    assert lines[2] == "STATUS=reloading configuration"


def test_module_shortcuts_read_the_environment(fs_socket, monkeypatch) -> None:
    path, sock = fs_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert sdnotify.ready() is True
    assert _received(sock) == ["READY=1"]
    assert sdnotify.watchdog() is True
    assert _received(sock) == ["WATCHDOG=1"]
    assert sdnotify.status("x") is True
    assert _received(sock) == ["STATUS=x"]
    assert sdnotify.stopping() is True
    assert _received(sock) == ["STOPPING=1"]
    assert sdnotify.reloading() is True
    assert _received(sock)[0] == "RELOADING=1"


def test_no_socket_is_a_silent_no_op(monkeypatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert SystemdNotifier().enabled is False
    assert sdnotify.ready() is False
    assert sdnotify.watchdog() is False
    assert SystemdNotifier({"NOTIFY_SOCKET": ""}).status("x") is False


def test_a_vanished_socket_does_not_raise(tmp_path: Path) -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert notifier.enabled
    assert notifier.ready() is False


@pytest.mark.parametrize(
    ("env", "pid", "expected"),
    [
        ({}, 10, None),
        ({"WATCHDOG_USEC": "30000000"}, 10, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "10"}, 10, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "11"}, 10, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "x"}, 10, None),
        ({"WATCHDOG_USEC": "0"}, 10, None),
        ({"WATCHDOG_USEC": "-5"}, 10, None),
        ({"WATCHDOG_USEC": "soon"}, 10, None),
        ({"WATCHDOG_USEC": "1000"}, 10, 0.0005),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec(env, pid, expected) -> None:
    assert watchdog_interval_s(env, pid=pid) == expected


def test_watchdog_interval_defaults_to_this_process(monkeypatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval_s() == 2.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert watchdog_interval_s() is None
