"""Retire rules (pure): which settings to carry over, which steps a policy takes, and the re-check before each.

Make before break: none of this runs before the new credential answered a test request. The steps are
idempotent so a crash between any two of them resumes safely; each change is preceded by a re-check of
the old file against the live listing, because people and other tools act on CPA meanwhile.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from reauthd.core.identity import OldCredential
from reauthd.core.model import Credential

RetirePolicy = Literal["delete", "disable", "keep"]

# User keys CPA honours in an auth file (contract §8, internal/watcher/synthesizer/file.go,
# sdk/cliproxy/auth/metadata_keys.go). A same-name re-login keeps them (metadata_merge.go); a login that
# lands under a new name does not, so reauthd copies them. Token and identity fields are never copied,
# and neither is `disabled`: that is the retire policy's business, not a setting.
USER_SETTING_KEYS: tuple[str, ...] = (
    "prefix",
    "proxy_url",
    "priority",
    "weight",
    "note",
    "headers",
    "excluded_models",
    "model_aliases",
    "models",
    "thinking",
    "websockets",
    "request_retry",
    "disable_cooling",
    "fingerprint_profile",
    "refresh_interval_seconds",
    "request_scoped_errors",
    "tool_prefix_disabled",
)

# Legacy kebab-case spellings CPA still reads and rewrites (metadata_keys.go CanonicalCredentialMetadataKey).
_KEBAB = {
    "disable-cooling": "disable_cooling",
    "excluded-models": "excluded_models",
    "fingerprint-profile": "fingerprint_profile",
    "model-aliases": "model_aliases",
    "proxy-url": "proxy_url",
    "request-retry": "request_retry",
    "request-scoped-errors": "request_scoped_errors",
    "tool-prefix-disabled": "tool_prefix_disabled",
}

# Temporary prefixes reauthd sets to verify through CPA's public API start with this; never copy one.
VERIFY_PREFIX_STEM = "reauthd-verify-"


class AuthFileUnreadable(ValueError):
    """A downloaded auth file is not a JSON object. The message never quotes the content (it holds tokens)."""


def parse_auth_file(raw: bytes) -> dict[str, Any]:
    """Parse a downloaded auth file into its metadata with CPA's canonical key names."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise AuthFileUnreadable("the auth file is not valid JSON") from None
    if not isinstance(data, dict):
        raise AuthFileUnreadable("the auth file is not a JSON object")
    out: dict[str, Any] = {}
    for key, value in data.items():
        canonical: str = _KEBAB.get(str(key), str(key))
        # An explicitly present canonical key wins over its alias (NormalizeCredentialMetadata).
        if canonical != key and canonical in data:
            continue
        out[canonical] = value
    return out


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def settings_to_copy(old_file: Mapping[str, Any], new_file: Mapping[str, Any]) -> dict[str, Any]:
    """The `PATCH /auth-files/fields` body (without `name`) that gives the new file the old file's settings.

    Like CPA's own same-name merge, a key the new file already has wins: only missing keys are copied, so
    running this again after a crash copies nothing twice. Values CPA's PATCH would reject or misread are
    skipped (contract §3): `weight` must be an integer, `request_retry` a non-negative integer (negative
    deletes), and `null` would be stored as JSON null rather than meaning "unset". `headers` is merged by
    CPA, so only header names the new file lacks are sent, and an empty header value (which deletes) never.
    """
    body: dict[str, Any] = {}
    for key in USER_SETTING_KEYS:
        if key not in old_file:
            continue
        value = old_file[key]
        if value is None:
            continue
        if key == "headers":
            if not isinstance(value, Mapping):
                continue
            have = new_file.get("headers")
            have_names = {str(k).lower() for k in have} if isinstance(have, Mapping) else set()
            missing = {
                str(k): v
                for k, v in value.items()
                if isinstance(v, str) and v != "" and str(k).lower() not in have_names
            }
            if missing:
                body["headers"] = missing
            continue
        have = new_file.get(key)
        if key == "prefix" and isinstance(have, str) and not have.strip():
            # "" is how a prefix is taken away: PATCH /auth-files/fields never deletes a key (contract §3),
            # so the public-API check restores "no prefix" as "" (verify/checking.py). It is not a setting.
            have = None
        if have is not None:
            continue
        if key == "weight" and not _is_int(value):
            continue
        if key == "request_retry" and not (_is_int(value) and value >= 0):
            continue
        if key == "prefix" and (not isinstance(value, str) or not value.strip() or _is_verify_prefix(value)):
            continue
        body[key] = value
    return body


def _is_verify_prefix(value: str) -> bool:
    return value.strip().strip("/").startswith(VERIFY_PREFIX_STEM)


# ------------------------------------------------------------------------------------------- the plan


class RetireStep(StrEnum):
    COPY_SETTINGS = "copy_settings"  # PATCH /auth-files/fields on the NEW file
    DISABLE_OLD = "disable_old"  # PATCH /auth-files/status {disabled:true} with name + auth_index
    DELETE_OLD = "delete_old"  # DELETE /auth-files?name=


def retire_plan(policy: RetirePolicy, same_name: bool) -> tuple[RetireStep, ...]:
    """The ordered steps after a successful verification.

    Same-name re-login: the old file *is* the new credential (CPA overwrote it in place, §4.4), so there is
    nothing to copy and nothing to retire. Otherwise settings go over first (the new file should serve
    with the old routing before the old one leaves), then the policy: `delete` disables first so the old
    file leaves routing even if the delete then fails, `disable` stops there, `keep` touches nothing.
    """
    if same_name:
        return ()
    steps = [RetireStep.COPY_SETTINGS]
    if policy in ("delete", "disable"):
        steps.append(RetireStep.DISABLE_OLD)
    if policy == "delete":
        steps.append(RetireStep.DELETE_OLD)
    return tuple(steps)


# ------------------------------------------------------------------------------------ the re-check


class OldProbe(StrEnum):
    """What a probe of the OLD credential's own token said, when the listing alone could not tell."""

    DEAD = "dead"  # 401/403: still failing
    WORKS = "works"  # 2xx: healthy again
    UNKNOWN = "unknown"  # transient, or no answer


class RecheckKind(StrEnum):
    PROCEED = "proceed"  # make the change now
    ALREADY_DONE = "already_done"  # the change is already in place (our own, before a crash)
    PROBE_OLD = "probe_old"  # the listing says active: probe the old token, then decide
    WAIT = "wait"  # cannot tell right now; try again on the next tick
    LEAVE = "leave"  # leave the old file alone and say why


@dataclass(frozen=True, slots=True)
class Recheck:
    kind: RecheckKind
    reason: str = ""
    disabled_by_someone: bool = False  # the old file was disabled, and not by this task


def recheck_old(
    step: RetireStep,
    old: OldCredential,
    current: Credential | None,
    new: Credential,
    *,
    sent_before: bool,
    we_disabled: bool,
    old_probe: OldProbe | None,
    probe_available: bool,
    rewritten: bool = False,
) -> Recheck:
    """Decide, right before `step`, whether the old file may still be changed (issue 6, "Retire" 3).

    `current` is the old file's entry in a fresh listing (None when CPA no longer lists it). `sent_before`
    says this step's request was already sent once (a crash or an error may hide its answer). `we_disabled`
    says this task's own disable succeeded. `old_probe` is the result of probing the old token for this
    step, if one was made. `rewritten` says the old file's `modtime` moved since reauthd last looked at it
    (and not by reauthd's own change): somebody wrote it meanwhile.
    """
    name = old.name
    if current is None:
        if step is RetireStep.DELETE_OLD and sent_before:
            return Recheck(RecheckKind.ALREADY_DONE, f"{name} is deleted")
        return Recheck(
            RecheckKind.LEAVE, f"{name} was removed from CPA by someone else meanwhile; nothing to retire"
        )
    if current.name == new.name or current.auth_index == new.auth_index:
        return Recheck(RecheckKind.LEAVE, f"{name} is the new credential itself; it is never retired")
    if current.auth_index != old.auth_index or current.provider != old.provider:
        return Recheck(
            RecheckKind.LEAVE,
            f"{name} has been replaced by a different file meanwhile; reauthd leaves it alone",
        )
    if current.disabled or current.status == "disabled":
        someone = not we_disabled and not (step is RetireStep.DISABLE_OLD and sent_before)
        if step is RetireStep.DISABLE_OLD:
            why = f"{name} was already disabled" + (" by someone else" if someone else "")
            return Recheck(RecheckKind.ALREADY_DONE, why, disabled_by_someone=someone)
        return Recheck(RecheckKind.PROCEED, disabled_by_someone=someone)
    if rewritten:
        # A re-upload, a re-enable or a refresh that worked: somebody changed the file after reauthd
        # last saw it. Whatever they did, it is theirs to keep.
        return Recheck(
            RecheckKind.LEAVE,
            f"{name} was changed by someone else meanwhile (its file was rewritten); reauthd leaves it alone",
        )
    if current.status == "error":
        return Recheck(RecheckKind.PROCEED)
    # Status "active": CPA forgets error states on restart and never marks an idle account (§2.2, §2.3),
    # so "active" alone does not mean healthy. The old token's own answer decides.
    if old_probe is None:
        if probe_available:
            return Recheck(RecheckKind.PROBE_OLD)
        return Recheck(
            RecheckKind.LEAVE,
            f"CPA shows {name} as active again and reauthd has no probe to confirm it still fails; "
            "left alone for the operator to decide",
        )
    if old_probe is OldProbe.DEAD:
        return Recheck(RecheckKind.PROCEED)
    if old_probe is OldProbe.WORKS:
        return Recheck(
            RecheckKind.LEAVE, f"{name} works again (its own token answered a test request); left alone"
        )
    return Recheck(RecheckKind.WAIT, f"could not tell whether {name} still fails; will check again")
