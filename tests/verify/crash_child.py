"""A reauthd process that runs one advance() and SIGKILLs itself right after a chosen step is persisted.

Run by test_crash_sim.py: `python crash_child.py <cpa base url> <state db> <task id> <point>`. The point
names the persisted progress after which the process dies, exactly like a power cut at that moment.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from datetime import UTC, datetime
from typing import Any

from reauthd.core.model import ReauthTask
from reauthd.cpa.client import CPAClient
from reauthd.cpa.wire import RetryPolicy
from reauthd.store.sqlite import Store
from reauthd.verify.runner import CompletionConfig, CompletionRunner

POINTS = {
    "verified": lambda flow: flow.get("verification", {}).get("result") == "ok",
    "disabled": lambda flow: flow.get("steps", {}).get("disable_old") == "done",
    "delete_sent": lambda flow: flow.get("steps", {}).get("delete_old") == "sent",
}


class KillingStore(Store):
    point: str = ""

    def update_task_fields(self, task_id: str, now: datetime, **fields: Any) -> ReauthTask:
        task = super().update_task_fields(task_id, now, **fields)
        flow = task.details.get("completion")
        if isinstance(flow, dict) and POINTS[self.point](flow):
            os.kill(os.getpid(), signal.SIGKILL)
        return task


async def main(base_url: str, db: str, task_id: str, point: str) -> None:
    store = KillingStore.open(db)
    store.point = point
    client = CPAClient(
        "main", base_url, "sim-key", timeout=5, retry=RetryPolicy(attempts=2, base_delay_s=0.01)
    )
    runner = CompletionRunner(
        store, {"main": client}, config=CompletionConfig(find_inline_budget_s=8, find_poll_interval_s=0.2)
    )
    await runner.advance(task_id, datetime.now(UTC), wait=True)
    # Reaching this line means the kill point was never hit: the parent test fails on exit code 3.
    sys.exit(3)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
