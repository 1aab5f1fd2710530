"""What a provider login writes: the account identity, the auth file's name and its JSON.

File names follow shared/cpa-contract.md §4.4, contents §8.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from reauthd.sim.upstream import dumps

PROVIDERS = ("codex", "claude", "antigravity", "kimi", "xai", "vertex")

# How long a fresh access token lives at each provider (drives `expired` in the file).
ACCESS_LIFETIME: dict[str, timedelta] = {
    "codex": timedelta(days=10),
    "claude": timedelta(hours=8),
    "antigravity": timedelta(hours=1),
    "kimi": timedelta(hours=1),
    "xai": timedelta(hours=6),
}


@dataclass(slots=True)
class Identity:
    """The account a login signs into."""

    provider: str
    email: str
    account_id: str = ""
    plan: str = ""
    project_id: str = ""
    # Codex: the id_token's chatgpt_subscription_active_until (None: 10 days after the login)
    subscription_until: datetime | None = None

    @classmethod
    def fresh(cls, provider: str, n: int | None = None) -> Identity:
        tag = secrets.token_hex(3) if n is None else f"{n:05d}"
        email = f"user{tag}@example.com"
        return cls(
            provider,
            email,
            account_id=_account_id(provider),
            plan="plus" if provider == "codex" else "",
            project_id=f"proj-{tag}" if provider in ("antigravity", "vertex") else "",
        )


def _account_id(provider: str) -> str:
    if provider == "codex":
        h = secrets.token_hex(16)
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    return "acct-" + secrets.token_hex(6)


def _sanitise(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9@._-]", "_", value)


def xai_file_segment(value: str) -> str:
    """internal/auth/xai/token.go sanitizeFileSegment: trim, any rune outside [A-Za-z0-9@._-] becomes
    `-`, then leading and trailing dashes go."""
    return re.sub(r"[^A-Za-z0-9@._-]", "-", value.strip()).strip("-")


def xai_file_name(email: str, sub: str, now: datetime) -> str:
    """internal/auth/xai/token.go CredentialFileName: `xai-<email>.json`, else `xai-<sub>.json` (the
    token's subject), else `xai-<unixms>.json` (§4.4)."""
    for value in (email, sub):
        segment = xai_file_segment(value)
        if segment:
            return f"xai-{segment}.json"
    return f"xai-{int(now.timestamp() * 1000)}.json"


def file_name_for(ident: Identity, now: datetime) -> str:
    """The name CPA's login saves to (§4.4); kimi gets a new name every time."""
    p = ident.provider
    if p == "codex":
        return codex_file_name(ident.email, ident.account_id, ident.plan)
    if p == "claude":
        return f"claude-{ident.email}.json"
    if p == "antigravity":
        return f"antigravity-{ident.email}.json" if ident.email else "antigravity.json"
    if p == "xai":
        return xai_file_name(ident.email, ident.account_id, now)  # account_id is the token's `sub`
    if p == "kimi":
        return f"kimi-{int(now.timestamp() * 1000)}.json"
    if p == "vertex":
        return vertex_file_name(ident.project_id or "project")
    return f"{p}-{_sanitise(ident.email)}.json"


def file_content(
    ident: Identity, access: str, refresh: str, now: datetime, expires_at: datetime | None
) -> dict[str, Any]:
    """The JSON a login writes for this provider (§8); `disabled:false` is added by FileTokenStore."""
    p = ident.provider
    expired = expires_at.isoformat() if expires_at else ""
    last = now.isoformat()
    ms = int(now.timestamp() * 1000)
    if p == "codex":
        return {
            "type": "codex",
            "id_token": codex_id_token(
                ident.email, ident.account_id, ident.plan, now, active_until=ident.subscription_until
            ),
            "access_token": access,
            "refresh_token": refresh,
            "account_id": ident.account_id,
            "email": ident.email,
            "last_refresh": last,
            "expired": expired,
            "disabled": False,
        }
    if p == "claude":
        return {
            "type": "claude",
            "id_token": "",
            "access_token": access,
            "refresh_token": refresh,
            "last_refresh": last,
            "email": ident.email,
            "account_uuid": ident.account_id,
            "expired": expired,
            "disabled": False,
        }
    if p == "antigravity":
        out: dict[str, Any] = {
            "type": "antigravity",
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": 3599,
            "timestamp": ms,
            "expired": expired,
            "email": ident.email,
            "disabled": False,
        }
        if ident.project_id:
            out["project_id"] = ident.project_id
        return out
    if p == "kimi":
        return {
            "type": "kimi",
            "access_token": access,
            "refresh_token": refresh,
            "token_type": "Bearer",
            "scope": "kimi-code",
            "timestamp": ms,
            "expired": expired,
            "device_id": ident.account_id,
            "disabled": False,
        }
    if p == "xai":
        xai: dict[str, Any] = {
            "type": "xai",
            "access_token": access,
            "refresh_token": refresh,
            "id_token": "",
            "token_type": "Bearer",
            "expires_in": 21600,
            "expired": expired,
            "last_refresh": last,
            "base_url": "https://api.x.ai/v1",
            "token_endpoint": "https://auth.x.ai/oauth2/token",
            "auth_kind": "oauth",
            "disabled": False,
        }
        # auth_files_provider_oauth.go writes `email` and `sub` only when the token carries them.
        if ident.email:
            xai["email"] = ident.email
        if ident.account_id:
            xai["sub"] = ident.account_id
        return xai
    if p == "vertex":
        email = ident.email or f"sa@{ident.project_id}.iam.gserviceaccount.com"
        return {
            "service_account": service_account(ident.project_id, email, access),
            "project_id": ident.project_id,
            "email": email,
            "location": "us-central1",
            "type": "vertex",
            "label": f"{ident.project_id} ({email})",
            "disabled": False,
        }
    return {
        "type": p,
        "access_token": access,
        "refresh_token": refresh,
        "email": ident.email,
        "disabled": False,
    }


# A PEM-shaped placeholder ("SIMULATOR" in base64), assembled so no scanner mistakes it for a real key.
_PEM = "PRIVATE KEY-----"
FAKE_PRIVATE_KEY = f"-----BEGIN {_PEM}\nU0lNVUxBVE9S\n-----END {_PEM}\n"


def service_account(project_id: str, email: str, key_id: str) -> dict[str, Any]:
    """A service-account JSON as Google issues it; `private_key_id` doubles as the upstream key id."""
    return {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": key_id,
        "private_key": FAKE_PRIVATE_KEY,
        "client_email": email,
        "client_id": "1" + "0" * 20,
        "token_uri": "https://oauth2.googleapis.com/token",
    }


def merge_relogin(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """mergeExistingAuthFileMetadata + FileTokenStore.Save (§4.4): keep the old file's non-token keys
    the new record lacks, never its token-lifecycle keys, and force `disabled` to false."""
    from reauthd.sim.auths import TOKEN_LIFECYCLE_KEYS

    merged = dict(new)
    for key, value in old.items():
        if key not in merged and key not in TOKEN_LIFECYCLE_KEYS:
            merged[key] = value
    merged["disabled"] = False
    return merged


# -- identities and files --------------------------------------------------------------------------


def codex_id_token(
    email: str, account_id: str, plan: str, now: datetime, *, active_until: datetime | None = None
) -> str:
    """An unsigned JWT with the claims CPA parses (contract §8: the signature is not verified). The
    subscription dates are RFC 3339 strings, as OpenAI's id_token carries them."""
    until = active_until if active_until is not None else now + timedelta(days=10)

    def b64(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(dumps(obj).encode()).rstrip(b"=").decode()

    claims = {
        "email": email,
        "iat": int(now.timestamp()),
        "exp": int(now.timestamp()) + 3600,
        "https://api.openai.com/auth": {
            "chatgpt_account_id": account_id,
            "chatgpt_plan_type": plan,
            "chatgpt_subscription_active_start": (now - timedelta(days=20)).isoformat(),
            "chatgpt_subscription_active_until": until.isoformat(),
        },
    }
    return b64({"alg": "RS256", "typ": "JWT"}) + "." + b64(claims) + "." + "c2lt"


def codex_claims(id_token: str) -> dict[str, Any] | None:
    """The `id_token` object of a codex listing entry, as internal/api/handlers/management/auth_files.go
    `extractCodexIDTokenClaims` builds it: `codex.ParseJWTToken` wants exactly three dot-separated parts
    and a JSON payload; the account id and plan type are trimmed and left out when empty, the
    subscription dates (Go `any`) are passed through as decoded and left out when null; no claim at all
    means no `id_token` key in the entry."""
    parts = id_token.strip().split(".")
    if len(parts) != 3:
        return None
    try:
        raw = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    auth = raw.get("https://api.openai.com/auth") if isinstance(raw, dict) else None
    if not isinstance(auth, dict):
        auth = {}
    result: dict[str, Any] = {}
    for listed, claim in (("chatgpt_account_id", "chatgpt_account_id"), ("plan_type", "chatgpt_plan_type")):
        value = auth.get(claim)
        if isinstance(value, str) and value.strip():
            result[listed] = value.strip()
    for key in ("chatgpt_subscription_active_start", "chatgpt_subscription_active_until"):
        if auth.get(key) is not None:
            result[key] = auth[key]
    return result or None


def codex_file_name(email: str, account_id: str, plan: str) -> str:
    """internal/auth/codex/filename.go: codex-<sha256(account_id)[:8]>-<email>-<plan>.json."""
    plan_part = "-".join(plan.lower().split())
    parts = ["codex"]
    if account_id:
        parts.append(hashlib.sha256(account_id.encode()).hexdigest()[:8])
    parts.append(email)
    if plan_part:
        parts.append(plan_part)
    return "-".join(parts) + ".json"


def vertex_file_name(project_id: str) -> str:
    safe = project_id.replace("/", "_").replace("\\", "_").replace(":", "_").replace(" ", "-")
    return f"vertex-{safe}.json"
