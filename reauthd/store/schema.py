"""The SQLite schema of reauthd's state and its forward-only migrations, tracked in `schema_version`."""

from __future__ import annotations

# Each entry migrates from version i to i+1. Never edit a released entry: append a new one.
# Timestamps are UTC text "YYYY-MM-DDTHH:MM:SS.ffffffZ" (fixed width, so text order is time order).
# Never stored anywhere: access tokens, refresh tokens, OAuth codes, callback URLs, management keys,
# raw link tokens (only their sha256).
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE tasks (
        id TEXT PRIMARY KEY,
        cpa TEXT NOT NULL,
        auth_name TEXT NOT NULL,
        auth_index TEXT NOT NULL,
        provider TEXT NOT NULL,
        account_masked TEXT NOT NULL,
        state TEXT NOT NULL,
        reason TEXT NOT NULL,
        source TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        deadline TEXT NOT NULL,
        notified_at TEXT,
        opened_at TEXT,
        reminders_sent INTEGER NOT NULL DEFAULT 0,
        reminded_at TEXT,
        escalated_at TEXT,
        closed_at TEXT,
        quiet_until_healthy INTEGER NOT NULL DEFAULT 0,
        new_auth_name TEXT,
        new_auth_index TEXT,
        verification TEXT,
        disabled_by_person INTEGER NOT NULL DEFAULT 0,
        details TEXT NOT NULL DEFAULT '{}'
    );
    -- One open task per credential, enforced by the database itself (CPA + auth_index, else the name).
    CREATE UNIQUE INDEX tasks_one_open_by_index ON tasks(cpa, auth_index)
        WHERE state NOT IN ('done', 'failed', 'expired', 'cancelled') AND auth_index != '';
    CREATE UNIQUE INDEX tasks_one_open_by_name ON tasks(cpa, auth_name)
        WHERE state NOT IN ('done', 'failed', 'expired', 'cancelled') AND auth_index = '';
    CREATE INDEX tasks_state ON tasks(state);

    CREATE TABLE task_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id TEXT NOT NULL REFERENCES tasks(id),
        at TEXT NOT NULL,
        from_state TEXT,
        to_state TEXT NOT NULL,
        reason TEXT NOT NULL
    );
    CREATE INDEX task_events_task ON task_events(task_id, id);

    -- The notification outbox: one row per message per Apprise URL.
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        route TEXT NOT NULL,
        dedupe_key TEXT UNIQUE,
        created_at TEXT NOT NULL,
        due_at TEXT NOT NULL,
        next_attempt_at TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        status TEXT NOT NULL,
        last_error TEXT,
        sent_at TEXT
    );
    CREATE INDEX deliveries_due ON deliveries(status, next_attempt_at);
    CREATE TABLE delivery_tasks (
        delivery_id INTEGER NOT NULL REFERENCES deliveries(id),
        task_id TEXT NOT NULL REFERENCES tasks(id),
        PRIMARY KEY (delivery_id, task_id)
    );
    CREATE INDEX delivery_tasks_task ON delivery_tasks(task_id);

    CREATE TABLE link_tokens (
        token_sha256 TEXT PRIMARY KEY,
        task_id TEXT NOT NULL REFERENCES tasks(id),
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL
    );
    CREATE INDEX link_tokens_task ON link_tokens(task_id);

    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id TEXT,
        cpa TEXT NOT NULL,
        action TEXT NOT NULL,
        target_name TEXT NOT NULL,
        target_auth_index TEXT NOT NULL,
        outcome TEXT NOT NULL,
        at TEXT NOT NULL
    );
    CREATE INDEX audit_task ON audit(task_id, id);

    CREATE TABLE kv (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );

    -- What is needed to resume polling CPA's get-auth-status after a restart, never the callback URL or code.
    CREATE TABLE login_sessions (
        task_id TEXT PRIMARY KEY REFERENCES tasks(id),
        provider TEXT NOT NULL,
        oauth_state TEXT NOT NULL,
        flow TEXT NOT NULL,
        user_code TEXT,
        verification_url TEXT,
        expires_at TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );

    -- Per CPA: the fingerprint of the management key last seen rejected/accepted, never the key.
    CREATE TABLE key_gate (
        cpa TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        snapshot TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    """,
)

LATEST_VERSION = len(MIGRATIONS)
