"""A stand-in for the verify package's CompletionRunner: records which tasks the login flow handed over."""

from __future__ import annotations

from datetime import datetime


class RecordingRunner:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.remembered: list[str] = []  # tasks whose old file the login flow asked to look at

    async def advance(self, task_id: str, now: datetime) -> None:
        self.calls.append(task_id)

    async def remember_old_file(self, task_id: str, now: datetime) -> None:
        self.remembered.append(task_id)
