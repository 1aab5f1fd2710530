"""reauthd's durable state (SQLite): tasks and history, outbox, hashed link tokens, audit, login sessions."""

from reauthd.store.lock import StateLocked
from reauthd.store.records import (
    AuditEntry,
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    KeyGateSnapshot,
    LoginSession,
)
from reauthd.store.sqlite import DuplicateOpenTask, Store, StoreError, TaskNotFound

__all__ = [
    "AuditEntry",
    "Delivery",
    "DeliveryKind",
    "DeliveryStatus",
    "DuplicateOpenTask",
    "KeyGateSnapshot",
    "LoginSession",
    "StateLocked",
    "Store",
    "StoreError",
    "TaskNotFound",
]
