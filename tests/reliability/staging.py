"""Staging the simulated world for the reliability tests: secret canaries and credential helpers."""

from __future__ import annotations

from collections.abc import Callable

from reauthd.sim import scenarios
from reauthd.sim.server import SimThread
from tests.reliability.daemon_process import DaemonProcess

# An Apprise URL token that must never be printed (json://host:port/<token>).
APPRISE_TOKEN = "apprise-CANARY-5c1e88d0b2"

# `daemon(**DaemonConfig fields)` → a configured, not yet started DaemonProcess (the `daemon` fixture).
DaemonFactory = Callable[..., DaemonProcess]


def add_credentials(sim: SimThread, *providers: str) -> list[str]:
    """One fresh, healthy credential per provider; returns their file names."""
    return sim.call(lambda s: [scenarios.add_credential(s, p).name for p in providers])


def revoke_live(sim: SimThread, *names: str) -> None:
    """Revoke upstream and send one request through each, so CPA itself sees the failure."""
    sim.call(lambda s: [scenarios.revoke(s, n, live=True) for n in names])
