"""Fixtures for the ops tests: serve an ASGI app with uvicorn on a free loopback port, inside the test's loop."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import pytest
from starlette.types import ASGIApp

from tests.support.servers import serve_asgi


@pytest.fixture
def serve_app() -> Callable[[ASGIApp], AbstractAsyncContextManager[str]]:
    """`async with serve_app(app) as base_url:` — a real HTTP server that stops when the block ends."""
    return serve_asgi
