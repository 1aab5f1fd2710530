"""Fixtures for the browser tests: Debian's Chromium via Playwright, a WebSandbox with the real verify runner,
and step screenshots."""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from reauthd.web.sandbox import WebSandbox

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",  # containers often give /dev/shm only 64 MB
]
# Every browser test is bounded inside its own event loop, well under pytest-timeout's 120 s: a stalled step then
# fails with the line it was waiting on, and the fixtures still tear down (a SIGALRM in the middle of the loop
# leaves Chromium and the servers behind).
TEST_BUDGET_S = 75.0
CLOSE_BUDGET_S = 20.0
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("browser") is not None and isinstance(item, pytest.Function):
            item.obj = _within_budget(item.obj)


def _within_budget(
    test: Callable[..., Coroutine[Any, Any, None]],
) -> Callable[..., Coroutine[Any, Any, None]]:
    @functools.wraps(test)
    async def bounded(*args: Any, **kwargs: Any) -> None:
        try:
            async with asyncio.timeout(TEST_BUDGET_S):
                await test(*args, **kwargs)
        except TimeoutError as stalled:
            raise AssertionError(
                f"{test.__name__} stalled for {TEST_BUDGET_S:.0f} s; the traceback shows the step"
            ) from stalled

    return bounded


@pytest.fixture
async def box(tmp_path: Path) -> AsyncIterator[WebSandbox]:
    # The real verify-and-retire runner against the simulator, driven like the daemon's tick.
    async with WebSandbox(tmp_path, verify=True, poll_interval_s=0.5) as sandbox:
        yield sandbox


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    playwright = await async_playwright().start()
    try:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=30000
        )
        try:
            yield chromium
        finally:
            await asyncio.wait_for(chromium.close(), CLOSE_BUDGET_S)
    finally:
        # Stopping the driver ends Chromium with it, even when the close above gave up.
        await asyncio.wait_for(playwright.stop(), CLOSE_BUDGET_S)


Shot = Callable[[Any, str], Coroutine[Any, Any, None]]


@pytest.fixture
def shot(request: pytest.FixtureRequest) -> Shot:
    """`await shot(page, "landing")` saves test-artifacts/browser/<test>/<NN>-landing.png."""
    folder = ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    counter = [0]

    async def take(page: Any, name: str) -> None:
        counter[0] += 1
        await page.screenshot(path=str(folder / f"{counter[0]:02d}-{name}.png"), full_page=True)

    return take
