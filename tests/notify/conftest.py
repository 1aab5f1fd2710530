"""Fixtures for notification tests: a real loopback HTTP endpoint for Apprise's json://."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.inbox import Inbox, serve_inbox


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    with serve_inbox() as box:
        yield box
