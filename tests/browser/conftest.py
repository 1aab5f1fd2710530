"""Fixtures for the browser tests: Debian's Chromium via Playwright, a WebSandbox with the real verify runner,
and step screenshots."""

from __future__ import annotations

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
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"


@pytest.fixture
async def box(tmp_path: Path) -> AsyncIterator[WebSandbox]:
    # The real verify-and-retire runner against the simulator, driven like the daemon's tick.
    async with WebSandbox(tmp_path, verify=True, poll_interval_s=0.5) as sandbox:
        yield sandbox


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


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
