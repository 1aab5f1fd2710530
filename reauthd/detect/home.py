"""Detection against a CLIProxyAPIHome, which has no `errors` channel (shared/home-contract.md §4).

The listing side needs nothing new: `HomeClient` (reauthd/cpa/home.py) hands the engine a CPA-shaped listing
in which Home's own auto-disable (`disabled` + `"unauthorized"`, a dead refresh token) reads as CPA's fixed
`"unauthorized"` after a failed refresh, i.e. a revocation, and each poll diffs it against the last one as for
CPA. This module adds the real-time side: `HomeEventPoller` polls Home's persisted failed request events
(`GET /request-events?status=failed&from=<cursor>&sort=timestamp_asc`, §4.2, §9.2) and hands each new one to
`DetectionEngine.on_error_event`, exactly as the CPA error stream does, so the same evidence rules, probes
and confirmation apply.

The cursor starts at the poller's creation (history is not replayed) and moves to the newest event seen;
events at the cursor's instant are asked again and deduplicated by their id. The daemon saves the cursor
(`export_position`) and a restart resumes from it (`restore_position`), at most `MAX_REPLAY` back: older
failures would count as fresh evidence, and the listing shows every credential Home disabled meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from reauthd.cpa.errors import CPAError, KeyProblem
from reauthd.cpa.home import HomeClient, HomeRequestEvent
from reauthd.cpa.models import ErrorEvent
from reauthd.detect.engine import DetectionEngine

log = structlog.get_logger(__name__)

#: How far back a restart resumes reading Home's failed request events at most.
MAX_REPLAY = timedelta(hours=1)


def as_error_event(event: HomeRequestEvent) -> ErrorEvent:
    """A Home request event in the shape of a CPA `errors` message (CPA error_events.go; contract §7)."""
    return ErrorEvent(
        timestamp=event.at,
        provider=event.provider,
        auth_id=event.credential_id,  # identity by UUID: the adapter's `name` is the id too
        auth_index=event.credential_id,
        status_code=event.status_code or 500,
        body=event.body,
    )


class HomeEventPoller:
    """Feeds one Home's failed request events to the engine, once per `poll_once()` or every interval."""

    def __init__(
        self,
        cpa: str,
        client: HomeClient,
        engine: DetectionEngine,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.cpa = cpa
        self.client = client
        self.engine = engine
        self.clock = clock
        self.cursor = clock()
        self._at_cursor: set[str] = set()  # ids of events at exactly `cursor`, already handed on

    def export_position(self) -> dict[str, Any]:
        """The cursor and the ids already handed on at it, JSON-ready (the daemon stores it in kv)."""
        return {"cursor": self.cursor.isoformat(), "ids": sorted(self._at_cursor)}

    def restore_position(self, saved: object) -> bool:
        """Resume from an `export_position()` value; not earlier than MAX_REPLAY ago, never in the future.
        Anything unreadable is ignored (the poller then starts from now). Returns whether it was used."""
        if not isinstance(saved, dict) or not isinstance(saved.get("cursor"), str):
            return False
        try:
            cursor = datetime.fromisoformat(saved["cursor"])
        except ValueError:
            return False
        now = self.clock()
        if cursor.tzinfo is None or cursor > now:
            return False
        ids = saved.get("ids")
        if cursor < now - MAX_REPLAY:
            self.cursor, self._at_cursor = now - MAX_REPLAY, set()
        else:
            self.cursor = cursor
            self._at_cursor = {i for i in ids if isinstance(i, str)} if isinstance(ids, list) else set()
        return True

    async def poll_once(self) -> int:
        """Hand every new failed event to the engine; returns how many. Raises the client's typed errors."""
        events = await self.client.failed_request_events(self.cursor)
        new = [
            e for e in events if not (e.at <= self.cursor and e.id in self._at_cursor) and e.at >= self.cursor
        ]
        for event in new:
            try:
                await self.engine.on_error_event(self.cpa, as_error_event(event))
            except Exception as exc:  # one bad event must not stop the others (as _consume_errors)
                log.error("detect.home.event_failed", cpa=self.cpa, error=type(exc).__name__)
        if new:
            newest = max(e.at for e in new)
            if newest > self.cursor:
                self.cursor, self._at_cursor = newest, set()
            self._at_cursor |= {e.id for e in new if e.at == newest}
            log.info("detect.home.events", cpa=self.cpa, new=len(new))
        return len(new)

    async def run(self, interval_s: float) -> None:
        """Poll until cancelled. Never fights the key: a key problem waits (the gate refuses locally)."""
        while True:
            try:
                await self.poll_once()
                await asyncio.sleep(interval_s)
            except KeyProblem as exc:
                log.warning("detect.home.paused", cpa=self.cpa, problem=exc.sentence)
                await asyncio.sleep(max(interval_s, 60.0))
            except CPAError as exc:
                log.warning("detect.home.poll_failed", cpa=self.cpa, problem=exc.sentence)
                await asyncio.sleep(interval_s)
