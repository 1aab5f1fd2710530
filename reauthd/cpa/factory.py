"""Build CPA clients from configuration, sharing the daemon's persisted key gate with one-shot commands.

`reauthd scan` or `reauthd reauth` run from cron next to a daemon must not spend CPA's five failed-key
attempts either: they start from the gate the daemon saved in the state database, and save theirs back.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from reauthd.config import CPAConfig, Settings
from reauthd.cpa.client import CPAClient
from reauthd.cpa.gate import GateSnapshot
from reauthd.cpa.home import HomeClient
from reauthd.store.sqlite import Store, StoreError


def _utcnow() -> datetime:
    return datetime.now(UTC)


def client_from_config(
    cpa: CPAConfig,
    *,
    gate_snapshot: GateSnapshot | None = None,
    clock: Callable[[], datetime] = _utcnow,
) -> CPAClient:
    """The plain-CPA client, or the Home adapter for `kind = "home"`. `auto` keeps the plain-CPA client: it
    names a Home from its first answer and refuses it with a sentence asking for `kind = "home"` (switching
    adapters mid-run would mean a second keyed request path; an explicit kind keeps one)."""
    cls = HomeClient if cpa.kind == "home" else CPAClient
    return cls(
        cpa.name,
        cpa.base_url,
        cpa.key,
        timeout=cpa.timeout_s,
        listing_max_bytes=cpa.max_listing_mib * 1024 * 1024,
        pause_after_rejection=(
            timedelta(seconds=cpa.key_rejected_pause_s) if cpa.key_rejected_pause_s > 0 else None
        ),
        gate_snapshot=gate_snapshot,
        tls_verify=cpa.tls_verify if isinstance(cpa.tls_verify, bool) else str(cpa.tls_verify),
        clock=clock,
        kind=cpa.kind,
    )


def load_gate(store: Store, cpa: str) -> GateSnapshot | None:
    saved = store.get_key_gate(cpa)
    if saved is None:
        return None
    with contextlib.suppress(KeyError, TypeError, ValueError):
        return GateSnapshot.from_dict(dict(saved.snapshot))
    return None


def save_gate(store: Store, client: CPAClient, now: datetime) -> None:
    snapshot = client.gate.snapshot()
    store.save_key_gate(client.name, snapshot.key_fingerprint, snapshot.to_dict(), now)


@contextlib.contextmanager
def shared_state(settings: Settings) -> Iterator[Store | None]:
    """The daemon's state database, opened without the daemon lock, if it exists and can be opened."""
    path = Path(settings.state.path)
    if not path.exists():
        yield None
        return
    try:
        store = Store.open(path, lock=False)
    except (StoreError, OSError):
        yield None
        return
    try:
        yield store
    finally:
        store.close()


@contextlib.asynccontextmanager
async def one_shot_client(settings: Settings, cpa_name: str) -> AsyncIterator[CPAClient]:
    """A client for one command (`reauth`, `tasks cancel`): it starts from the key gate the daemon saved and
    saves what it learned back, even when the call failed (a refused key stays refused for everyone)."""
    cpa = settings.cpa_by_name(cpa_name)
    with shared_state(settings) as state:
        gate = load_gate(state, cpa.name) if state is not None else None
        async with client_from_config(cpa, gate_snapshot=gate) as client:
            try:
                yield client
            finally:
                if state is not None:
                    save_gate(state, client, _utcnow())
