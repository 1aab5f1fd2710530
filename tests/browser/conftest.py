"""Fixtures for the browser tests: Debian's Chromium via Playwright, a WebSandbox, and step screenshots."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from reauthd.core.model import TaskState
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


class FinishingRunner:
    """Stands in for the verify package's runner: verifying → retiring → done, slowly enough to watch."""

    def __init__(self, box_ref: list[WebSandbox], step_s: float = 2.5) -> None:
        self.box_ref = box_ref
        self.step_s = step_s
        self.calls: list[str] = []

    async def advance(self, task_id: str, now: datetime) -> None:
        self.calls.append(task_id)
        box = self.box_ref[0]
        await asyncio.sleep(self.step_s)
        box.store.apply_transition(
            task_id, TaskState.RETIRING, "The new login works; removing the old one.", box.clock()
        )
        await asyncio.sleep(self.step_s)
        box.store.apply_transition(
            task_id, TaskState.DONE, "The new login works and the old one was removed.", box.clock()
        )


@pytest.fixture
async def box(tmp_path: Path) -> AsyncIterator[WebSandbox]:
    ref: list[WebSandbox] = []
    async with WebSandbox(tmp_path, completion=FinishingRunner(ref), poll_interval_s=0.5) as sandbox:
        ref.append(sandbox)
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
