"""The task commands: `reauthd tasks list|show|cancel` and `reauthd reauth --cpa NAME AUTH_NAME`.

They open the state without the daemon's lock (WAL lets them read and write next to a running daemon, which
picks up changes on its next tick: the database is the truth).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reauthd.cli.common import EXIT_CONFIG, add_config_option, fail, load_settings_or_exit
from reauthd.config import Settings
from reauthd.core.model import TaskState
from reauthd.core.tasks import IllegalTransition
from reauthd.store import Store, StoreError, TaskNotFound
from reauthd.tasks.service import TaskService


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tasks = subparsers.add_parser("tasks", help="list, show or cancel reauth tasks")
    tasks_sub = tasks.add_subparsers(dest="tasks_command", metavar="ACTION")
    tasks_sub.required = True

    listing = tasks_sub.add_parser("list", help="list tasks (newest last)")
    add_config_option(listing)
    listing.add_argument("--json", action="store_true", help="print JSON (one array)")
    listing.add_argument(
        "--state",
        action="append",
        choices=[s.value for s in TaskState],
        help="only tasks in this state (repeatable)",
    )
    listing.add_argument("--open", action="store_true", help="only tasks that have not ended")
    listing.set_defaults(handler=_list)

    show = tasks_sub.add_parser("show", help="one task with its history, deliveries and audit trail")
    add_config_option(show)
    show.add_argument("id")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=_show)

    cancel = tasks_sub.add_parser("cancel", help="cancel a task (its links stop working)")
    add_config_option(cancel)
    cancel.add_argument("id")
    cancel.add_argument("--reason", default="cancelled by an operator")
    cancel.set_defaults(handler=_cancel)

    reauth = subparsers.add_parser(
        "reauth", help="ask for a new login by hand (e.g. after a password or organisation change)"
    )
    add_config_option(reauth)
    reauth.add_argument("--cpa", required=True, metavar="NAME", help="the [[cpa]] name")
    reauth.add_argument("auth_name", metavar="AUTH_NAME", help="the auth file name in CPA")
    reauth.add_argument("--reason", default="an operator asked for a new login")
    reauth.add_argument("--link", action="store_true", help="also print a link to the re-login page")
    reauth.add_argument("--json", action="store_true", help="print the task as JSON")
    reauth.set_defaults(handler=_reauth)


def _now() -> datetime:
    return datetime.now(UTC)


def _open(settings: Settings, *, create: bool = False) -> TaskService:
    """The state, next to a running daemon. Only `reauth` (which raises a task) may create it: a command that
    reads or changes existing tasks never invents an empty state (a config missing `[state]` would otherwise
    make `tasks list` create one at the default path and report "no tasks")."""
    path = Path(settings.state.path)
    if not create and not path.exists():
        fail(
            f"there is no state file at {path} (setting [state] path): point --config at the daemon's "
            "configuration, or start the daemon once to create it",
            EXIT_CONFIG,
        )
    try:
        store = Store.open(path, lock=False)
    except StoreError as exc:
        fail(str(exc), EXIT_CONFIG)
    return TaskService(store, settings)


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def _list(args: argparse.Namespace) -> int:
    settings = load_settings_or_exit(args, quiet=True)
    service = _open(settings)
    try:
        states: list[TaskState] | None = [TaskState(s) for s in args.state] if args.state else None
        if args.open:
            states = [s for s in (states or list(TaskState)) if not s.terminal]
        rows = service.list_tasks(states)
    finally:
        service.store.close()
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print("no tasks")
        return 0
    header = ("ID", "STATE", "CPA", "AUTH_NAME", "PROVIDER", "UPDATED", "REASON")
    table = [header] + [
        (
            r["id"],
            r["state"],
            r["cpa"],
            r["auth_name"],
            r["provider"],
            r["updated_at"][:16],
            shorten(r["reason"]),
        )
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header) - 1)]
    for row in table:
        print(
            "  ".join(str(cell).ljust(width) for cell, width in zip(row[:-1], widths, strict=True))
            + "  "
            + row[-1]
        )
    return 0


def shorten(text: str, width: int = 60) -> str:
    """`text` in at most `width` characters, cut at a word boundary with "…" (never mid-word, unless a single
    word is longer than the width)."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    cut = text[: width - 1]
    space = cut.rfind(" ")
    if space > width // 3:
        cut = cut[:space]
    return cut.rstrip(" ,;:") + "…"


def _show(args: argparse.Namespace) -> int:
    settings = load_settings_or_exit(args, quiet=True)
    service = _open(settings)
    try:
        data = service.show(args.id)
    except TaskNotFound as exc:
        fail(str(exc))
    finally:
        service.store.close()
    if args.json:
        _print_json(data)
        return 0
    for key in ("id", "state", "cpa", "auth_name", "auth_index", "provider", "account", "reason", "source"):
        print(f"{key + ':':<12} {data[key]}")
    print(f"{'cause:':<12} {data['cause']}: {data['advice']['why']}")
    print(f"{'next step:':<12} {data['advice']['next_step']}")
    for key in ("created_at", "updated_at", "deadline", "opened_at", "closed_at"):
        if data[key]:
            print(f"{key + ':':<12} {data[key]}")
    if data["new_auth_name"]:
        print(f"{'new file:':<12} {data['new_auth_name']} ({data['new_auth_index'] or '?'})")
    if data["verification"]:
        print(f"{'verified:':<12} {data['verification']}")
    if data["evidence"]:
        print("evidence:")
        for e in data["evidence"]:
            status = f" {e['http_status']}" if "http_status" in e else ""
            print(f"  {e['observed_at']}  {e['source']}{status}  {e['text']}")
    print("history:")
    for event in data["history"]:
        print(f"  {event['at']}  {event['from'] or '-'} -> {event['to']}  {event['reason']}")
    if data["deliveries"]:
        print("notifications:")
        for d in data["deliveries"]:
            print(f"  {d['kind']:<10} {d['channel']:<20} {d['status']:<8} attempts={d['attempts']}")
    if data["audit"]:
        print("changes in CPA:")
        for a in data["audit"]:
            print(f"  {a['at']}  {a['action']} {a['target_name']} ({a['target_auth_index']}): {a['outcome']}")
    return 0


def _cancel(args: argparse.Namespace) -> int:
    settings = load_settings_or_exit(args, quiet=True)
    service = _open(settings)
    try:
        task = service.store.get_task(args.id, with_history=False)
        session = service.store.get_login_session(task.id)
        note = ""
        if session is not None and task.state is TaskState.LOGIN_STARTED and _configured(settings, task.cpa):
            # First at CPA: a device approval after the cancel would otherwise still make CPA save a file
            # (for Kimi a new one) that nothing verifies or retires.
            note = asyncio.run(_cancel_cpa_login(settings, task.cpa, session.oauth_state))
        task = service.cancel(args.id, _now(), args.reason)
    except TaskNotFound as exc:
        fail(str(exc))
    except IllegalTransition as exc:
        fail(f"{exc}; nothing was changed")
    finally:
        service.store.close()
    print(f"task {task.id} cancelled{note}")
    return 0


def _configured(settings: Settings, cpa_name: str) -> bool:
    return any(cpa.name == cpa_name for cpa in settings.cpa)


async def _cancel_cpa_login(settings: Settings, cpa_name: str, oauth_state: str) -> str:
    """Best effort `DELETE /oauth-session` for the task's pending login; returns a note for the operator."""
    from reauthd.cpa import CPAError
    from reauthd.cpa.factory import one_shot_client

    try:
        async with one_shot_client(settings, cpa_name) as client:
            cancelled = await client.cancel_oauth_session(oauth_state)
    except CPAError as exc:
        return f"; CPA {cpa_name} could not cancel its pending sign-in ({exc}); it lapses within 30 minutes"
    return "; its pending sign-in at CPA was cancelled too" if cancelled else ""


async def _look_up(settings: Settings, cpa_name: str, auth_name: str) -> dict[str, str]:
    """Find the auth file in CPA (`GET /auth-files?name=`, contract §2) for its auth_index, provider, e-mail."""
    from reauthd.cpa import CPAError
    from reauthd.cpa.factory import one_shot_client

    try:
        async with one_shot_client(settings, cpa_name) as client:
            files = await client.list_auth_files(name=auth_name)
    except CPAError as exc:
        fail(f"cannot look up {auth_name} in CPA {cpa_name}: {exc}")
    match = [f for f in files if f.name == auth_name]
    if not match:
        fail(f"CPA {cpa_name} has no auth file named {auth_name}")
    found = match[0]
    return {"auth_index": found.auth_index, "provider": found.provider, "email": found.account_email or ""}


def _reauth(args: argparse.Namespace) -> int:
    settings = load_settings_or_exit(args, quiet=True)
    try:
        settings.cpa_by_name(args.cpa)
    except KeyError:
        fail(f"no [[cpa]] named {args.cpa!r} in the configuration", EXIT_CONFIG)
    found = asyncio.run(_look_up(settings, args.cpa, args.auth_name))
    service = _open(settings, create=True)
    try:
        now = _now()
        task, created = service.raise_manual(
            args.cpa,
            args.auth_name,
            args.reason,
            now,
            auth_index=found["auth_index"],
            provider=found["provider"],
            account=found["email"] or None,
        )
        link = service.link_for(task.id, now) if args.link else None
        data = service.show(task.id)
    finally:
        service.store.close()
    if args.json:
        _print_json({**data, "created": created, **({"link": link} if link else {})})
        return 0
    if created:
        print(
            f"task {task.id} raised for {args.auth_name} on {args.cpa} ({task.provider}); the daemon notifies"
        )
    else:
        print(f"{args.auth_name} on {args.cpa} already has an open task: {task.id} ({task.state.value})")
    if link:
        print(f"link: {link}")
    return 0  # idempotent: "make sure a task exists"
