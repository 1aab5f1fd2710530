"""`reauthd retire --cpa NAME AUTH_NAME [--yes]`: the operator's confirmation for a credential a new login
will not fix (a deactivated, banned or deleted account; issue 14). reauthd never retires such a file by
itself: a notice suggests it, and this command applies `[retire] policy` (disable, then delete; or only
disable; or keep) once the operator confirms with `--yes`. Without `--yes` it only says what it would do.

Every change is written to the audit trail (`reauthd tasks show` lists a task's; these have none). The
file is addressed by name and `auth_index`, so a file replaced meanwhile under the same name is refused by
CPA (404) rather than retired.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import Any

from reauthd.cli.common import EXIT_CONFIG, add_config_option, fail, load_settings_or_exit
from reauthd.config import Settings
from reauthd.core.causes import explain
from reauthd.core.classify import classify
from reauthd.core.model import Credential, Evidence, EvidenceSource
from reauthd.core.sanitize import mask_email, sanitize_text


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    retire = subparsers.add_parser(
        "retire",
        help="retire a credential a new login will not fix (deactivated account), per [retire] policy",
    )
    add_config_option(retire)
    retire.add_argument("--cpa", required=True, metavar="NAME", help="the [[cpa]] name")
    retire.add_argument("auth_name", metavar="AUTH_NAME", help="the auth file name in CPA")
    retire.add_argument("--yes", action="store_true", help="confirm: apply [retire] policy now")
    retire.add_argument("--json", action="store_true", help="print the outcome as JSON")
    retire.set_defaults(handler=_retire)


def _steps(policy: str) -> list[str]:
    return {"delete": ["disable", "delete"], "disable": ["disable"]}.get(policy, [])


async def _run(settings: Settings, cpa_name: str, auth_name: str, confirmed: bool) -> dict[str, Any]:
    from reauthd.cpa import CPAError
    from reauthd.cpa.factory import one_shot_client
    from reauthd.store import Store, StoreError

    policy = settings.retire.policy
    now = datetime.now(UTC)
    try:
        async with one_shot_client(settings, cpa_name) as client:
            files = [f for f in await client.list_auth_files(name=auth_name) if f.name == auth_name]
            if not files:
                fail(f"CPA {cpa_name} has no auth file named {auth_name}")
            found = files[0]
            credential = Credential(
                cpa=cpa_name,
                name=found.name,
                auth_index=found.auth_index,
                provider=found.provider,
                status=found.status,
                status_message=found.status_message,
                disabled=found.disabled,
            )
            evidence = Evidence(
                EvidenceSource.LISTING, now, text=sanitize_text(found.status_message), code=found.status
            )
            advice = explain(classify(credential, [evidence], now), found.provider)
            result: dict[str, Any] = {
                "cpa": cpa_name,
                "auth_name": found.name,
                "auth_index": found.auth_index,
                "provider": found.provider,
                "account": mask_email(found.email),
                "status": found.status,
                "cause": advice.cause.value,
                "policy": policy,
                "steps": _steps(policy),
                "done": [],
                "confirmed": confirmed,
            }
            if not confirmed or not result["steps"]:
                return result
            try:
                store: Store | None = Store.open(settings.state.path, lock=False)
            except StoreError:
                store = None  # the audit trail is best effort here; CPA's own answer is printed
            try:
                for step in result["steps"]:
                    try:
                        if step == "disable":
                            await client.set_disabled(found.name, True, auth_index=found.auth_index)
                        else:
                            await client.delete_auth_file(found.name)
                        outcome = "ok"
                    except CPAError as exc:
                        outcome = f"refused: {exc}"
                    if store is not None:
                        with store.transaction():
                            store.record_audit(
                                task_id=None,
                                cpa=cpa_name,
                                action="retire-confirmed "
                                + ("patch-status disabled" if step == "disable" else "delete"),
                                target_name=found.name,
                                target_auth_index=found.auth_index,
                                outcome=outcome,
                                at=datetime.now(UTC),
                            )
                    if outcome != "ok":
                        result["error"] = outcome
                        break
                    result["done"].append(step)
            finally:
                if store is not None:
                    store.close()
            return result
    except CPAError as exc:
        fail(f"cannot reach {auth_name} in CPA {cpa_name}: {exc}")
    raise AssertionError("unreachable")  # pragma: no cover


def _retire(args: argparse.Namespace) -> int:
    settings = load_settings_or_exit(args, quiet=True)
    try:
        settings.cpa_by_name(args.cpa)
    except KeyError:
        fail(f"no [[cpa]] named {args.cpa!r} in the configuration", EXIT_CONFIG)
    result = asyncio.run(_run(settings, args.cpa, args.auth_name, bool(args.yes)))
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 1 if "error" in result else 0
    what = f"{result['auth_name']} on CPA {result['cpa']} ({result['provider']}, {result['status']}, cause {result['cause']})"
    if not result["steps"]:
        print(f"[retire] policy is {result['policy']}: {what} is left as it is.")
        return 0
    plan = " then ".join(result["steps"])
    if not result["confirmed"]:
        print(f"Would {plan} {what} ([retire] policy {result['policy']}). Run again with --yes to confirm.")
        return 0
    if "error" in result:
        print(
            f"reauthd: {what}: {result['error']}; done so far: {', '.join(result['done']) or 'nothing'}",
            file=sys.stderr,
        )
        return 1
    print(f"Retired {what}: {', '.join(result['done'])}.")
    return 0
