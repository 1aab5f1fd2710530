"""The fake upstream providers: accounts, token validity and the bodies their APIs answer with.

Token validity lives here, keyed by the token string, so a file's tokens stay dead after a re-login
while the new file's tokens work; `/api-call` probes and simulated requests both ask this module.
Bodies are the ones quoted in shared/cpa-contract.md §2.3 and §9 (seen in the wild, not CPA code).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

# Revocation kinds the control API accepts, and the provider each one is native to.
REVOCATION_KINDS: dict[str, str] = {
    "token_invalidated": "codex",
    "refresh_token_reused": "codex",
    "claude_revoked": "claude",
    "invalid_grant": "antigravity",
    "xai_bad_credentials": "xai",
    "unauthorized": "",  # any provider: access token expired and the refresh answers 401
    "vertex_key_deleted": "vertex",
}

DEFAULT_REVOCATION: dict[str, str] = {
    "codex": "token_invalidated",
    "claude": "claude_revoked",
    "antigravity": "invalid_grant",
    "kimi": "invalid_grant",
    "xai": "xai_bad_credentials",
    "vertex": "vertex_key_deleted",
}

PROVIDER_MODELS: dict[str, tuple[str, ...]] = {
    "codex": ("gpt-5", "gpt-5-codex"),
    "claude": ("claude-sonnet-4-5-20250929", "claude-opus-4-1-20250805"),
    "antigravity": ("gemini-3-pro-preview", "gemini-2.5-flash"),
    "kimi": ("kimi-k2",),
    "xai": ("grok-4",),
    "vertex": ("gemini-2.5-pro", "gemini-2.5-flash"),
}


def dumps(value: Any) -> str:
    """Compact JSON like Go's encoding/json (no spaces, HTML-safe escapes not needed here)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@dataclass(slots=True)
class TokenRecord:
    """What the provider knows about one access or refresh token."""

    account: str  # UpstreamAccount.key
    provider: str
    expires_at: datetime | None = None
    dead_kind: str | None = None  # a REVOCATION_KINDS key once revoked
    probe_override: tuple[int, str] | None = None


@dataclass(slots=True)
class UpstreamAccount:
    """A person's account at a provider; `condition` is ok, quota or deactivated."""

    key: str
    provider: str
    email: str
    account_id: str = ""
    plan: str = ""
    project_id: str = ""
    condition: str = "ok"
    quota_resets_at: datetime | None = None


@dataclass(slots=True)
class UpstreamAnswer:
    status: int
    body: str
    retry_after_s: float | None = None
    headers: dict[str, str] = field(default_factory=dict)


class Upstream:
    """Every provider at once: issues tokens, revokes them, and answers requests and probes."""

    def __init__(self) -> None:
        self.accounts: dict[str, UpstreamAccount] = {}
        self.access: dict[str, TokenRecord] = {}
        self.refresh: dict[str, TokenRecord] = {}

    def account(
        self, provider: str, email: str, *, account_id: str = "", plan: str = "", project_id: str = ""
    ) -> UpstreamAccount:
        key = f"{provider}:{email}:{account_id}"
        found = self.accounts.get(key)
        if found is None:
            found = UpstreamAccount(key, provider, email, account_id, plan, project_id)
            self.accounts[key] = found
        elif plan:
            found.plan = plan
        return found

    def mint(self, acct: UpstreamAccount, expires_at: datetime | None) -> tuple[str, str]:
        """Issue a fresh access/refresh token pair for an account."""
        prefix = {
            "codex": "eyJhbGciOi",
            "claude": "sk-ant-oat01-",
            "antigravity": "ya29.",
            "kimi": "kimi-",
            "xai": "xai-at-",
        }.get(acct.provider, "tok-")
        access = prefix + secrets.token_urlsafe(24)
        refresh = {"claude": "sk-ant-ort01-", "antigravity": "1//"}.get(acct.provider, "rt_") + (
            secrets.token_urlsafe(24)
        )
        self.access[access] = TokenRecord(acct.key, acct.provider, expires_at)
        self.refresh[refresh] = TokenRecord(acct.key, acct.provider)
        return access, refresh

    def kill(self, access: str, refresh: str, kind: str) -> None:
        for table, token in ((self.access, access), (self.refresh, refresh)):
            rec = table.get(token)
            if rec is not None:
                rec.dead_kind = kind

    # -- answers ---------------------------------------------------------------------------------

    def request(self, provider: str, token: str, model: str, now: datetime) -> UpstreamAnswer:
        """A model request with this access token, as the provider answers it (before CPA reshapes)."""
        rec = self.access.get(token)
        if provider == "vertex":
            if rec is not None and rec.dead_kind:
                return UpstreamAnswer(500, vertex_dead_message())
            return UpstreamAnswer(200, "ok")
        dead = self._dead_answer(provider, rec, now)
        if dead is not None:
            return dead
        assert rec is not None
        acct = self.accounts[rec.account]
        if acct.condition == "deactivated":
            return UpstreamAnswer(402, deactivated_body(provider))
        if acct.condition == "transient":
            return UpstreamAnswer(
                503,
                dumps(
                    {
                        "error": {
                            "message": "upstream connect error or disconnect/reset before headers",
                            "type": "server_error",
                        }
                    }
                ),
            )
        if acct.condition == "cloudflare":
            return UpstreamAnswer(
                403,
                "<!DOCTYPE html><html><head><title>Just a moment...</title></head><body>cf-chl</body></html>",
            )
        if acct.condition == "quota":
            resets = acct.quota_resets_at or now + timedelta(hours=5)
            secs = max(1.0, (resets - now).total_seconds())
            return UpstreamAnswer(429, quota_body(provider, acct.plan, resets, secs), retry_after_s=secs)
        return UpstreamAnswer(200, "ok")

    def refresh_with(self, provider: str, refresh_token: str) -> UpstreamAnswer:
        """The token endpoint's answer to a refresh; 200 means a new pair may be minted."""
        rec = self.refresh.get(refresh_token)
        if rec is None:
            return UpstreamAnswer(
                400, dumps({"error": "invalid_grant", "error_description": "Invalid refresh token"})
            )
        if rec.dead_kind is None:
            return UpstreamAnswer(200, "")
        return refresh_failure(provider, rec.dead_kind)

    def probe(self, provider: str, url: str, token: str, now: datetime) -> UpstreamAnswer:
        """A provider's cheap quota/identity endpoint (contract §5 table)."""
        rec = self.access.get(token)
        if rec is not None and rec.probe_override is not None:
            status, body = rec.probe_override
            return UpstreamAnswer(status, body)
        dead = self._dead_answer(provider, rec, now)
        if dead is not None:
            return dead
        assert rec is not None
        acct = self.accounts[rec.account]
        if acct.condition == "deactivated":
            return UpstreamAnswer(402, deactivated_body(provider))
        return UpstreamAnswer(200, probe_ok_body(provider, acct, url, now))

    def _dead_answer(self, provider: str, rec: TokenRecord | None, now: datetime) -> UpstreamAnswer | None:
        if rec is None or rec.provider != provider:
            return unknown_token_answer(provider)
        if rec.dead_kind is not None:
            return revoked_answer(provider, rec.dead_kind)
        if rec.expires_at is not None and rec.expires_at <= now:
            return expired_answer(provider)
        return None


# -- bodies ----------------------------------------------------------------------------------------

CODEX_INVALIDATED = "Your authentication token has been invalidated. Please try signing in again."
CLAUDE_REVOKED = "OAuth token has been revoked. Please obtain a new token."


def _req_id() -> str:
    return "req_" + secrets.token_hex(12)


def revoked_answer(provider: str, kind: str) -> UpstreamAnswer:
    if kind == "claude_revoked" or (provider == "claude" and kind not in ("unauthorized", "invalid_grant")):
        return UpstreamAnswer(
            403,
            dumps(
                {
                    "type": "error",
                    "error": {"type": "permission_error", "message": CLAUDE_REVOKED},
                    "request_id": _req_id(),
                }
            ),
        )
    if provider == "codex" and kind == "token_invalidated":
        return UpstreamAnswer(
            401,
            dumps(
                {
                    "error": {
                        "message": CODEX_INVALIDATED,
                        "type": "invalid_request_error",
                        "code": "token_invalidated",
                        "param": None,
                    },
                    "status": 401,
                }
            ),
        )
    if provider == "xai" and kind == "xai_bad_credentials":
        return UpstreamAnswer(
            403, dumps({"code": "bad-credentials", "error": "The access token could not be validated"})
        )
    return expired_answer(provider)


def expired_answer(provider: str) -> UpstreamAnswer:
    """What a provider answers for an access token past its expiry (refreshable)."""
    bodies = {
        "codex": {
            "error": {
                "message": "Provided authentication token is expired. Please try signing in again.",
                "type": "invalid_request_error",
                "code": "token_expired",
                "param": None,
            },
            "status": 401,
        },
        "claude": {
            "type": "error",
            "error": {
                "type": "authentication_error",
                "message": "OAuth token has expired. Please obtain a new "
                "token or refresh your existing token.",
            },
            "request_id": _req_id(),
        },
        "antigravity": {
            "error": {
                "code": 401,
                "message": "Request had invalid authentication credentials. "
                "Expected OAuth 2 access token, login cookie or other valid "
                "authentication credential.",
                "status": "UNAUTHENTICATED",
            }
        },
        "kimi": {
            "error": {
                "message": "The API Key appears to be invalid or may have expired. Please verify "
                "your credentials and try again.",
                "type": "invalid_authentication_error",
            }
        },
        "xai": {
            "code": "Client specified an invalid argument",
            "error": "Incorrect API key provided: xa***. You can obtain an API key from "
            "https://console.x.ai.",
        },
    }
    return UpstreamAnswer(401, dumps(bodies.get(provider, {"error": "unauthorized"})))


def unknown_token_answer(provider: str) -> UpstreamAnswer:
    if provider == "claude":
        return UpstreamAnswer(
            401,
            dumps(
                {
                    "type": "error",
                    "error": {"type": "authentication_error", "message": "Invalid bearer token"},
                    "request_id": _req_id(),
                }
            ),
        )
    if provider == "codex":
        return UpstreamAnswer(
            401,
            dumps(
                {
                    "error": {
                        "message": "Could not parse your authentication token. Please try signing in again.",
                        "type": "invalid_request_error",
                        "code": "invalid_jwt",
                        "param": None,
                    },
                    "status": 401,
                }
            ),
        )
    return expired_answer(provider)


def refresh_failure(provider: str, kind: str) -> UpstreamAnswer:
    if provider == "codex":
        code = "refresh_token_reused" if kind == "refresh_token_reused" else "refresh_token_invalidated"
        msg = (
            "Your refresh token has already been used to generate a new access token. Please try "
            "signing in again."
            if code == "refresh_token_reused"
            else "Your refresh token has been invalidated. Please try signing in again."
        )
        return UpstreamAnswer(
            401,
            dumps({"error": {"message": msg, "type": "invalid_request_error", "param": None, "code": code}}),
        )
    if kind == "unauthorized" or provider == "xai":
        return UpstreamAnswer(
            401, dumps({"error": "unauthorized", "error_description": "refresh token is not valid"})
        )
    return UpstreamAnswer(
        400, dumps({"error": "invalid_grant", "error_description": "Token has been expired or revoked."})
    )


def deactivated_body(provider: str) -> str:
    if provider == "codex":
        return dumps({"detail": {"code": "deactivated_workspace"}})
    return dumps({"error": {"type": "billing_error", "message": "This account has been deactivated."}})


def quota_body(provider: str, plan: str, resets: datetime, secs: float) -> str:
    if provider == "codex":
        return dumps(
            {
                "error": {
                    "type": "usage_limit_reached",
                    "message": "The usage limit has been reached",
                    "plan_type": plan or "plus",
                    "resets_at": int(resets.timestamp()),
                    "resets_in_seconds": int(secs),
                }
            }
        )
    if provider == "claude":
        return dumps(
            {
                "type": "error",
                "error": {
                    "type": "rate_limit_error",
                    "message": "This request would exceed your account's rate limit. Please try again later.",
                },
                "request_id": _req_id(),
            }
        )
    return dumps(
        {
            "error": {
                "code": 429,
                "message": "Resource has been exhausted (e.g. check quota).",
                "status": "RESOURCE_EXHAUSTED",
            }
        }
    )


def vertex_dead_message() -> str:
    return 'failed to get vertex access token: oauth2: "invalid_grant" "Invalid JWT Signature."'


def probe_ok_body(provider: str, acct: UpstreamAccount, url: str, now: datetime) -> str:
    exhausted = acct.condition == "quota"
    used = 100 if exhausted else 12
    reset5h = (
        int((acct.quota_resets_at or now + timedelta(hours=5)).timestamp())
        if exhausted
        else int((now + timedelta(hours=3)).timestamp())
    )
    if provider == "codex":
        window = {
            "used_percent": used,
            "limit_window_seconds": 18000,
            "reset_after_seconds": max(0, reset5h - int(now.timestamp())),
            "reset_at": reset5h,
        }
        weekly = {
            "used_percent": 100 if exhausted else 31,
            "limit_window_seconds": 604800,
            "reset_after_seconds": 345600,
            "reset_at": int(now.timestamp()) + 345600,
        }
        return dumps(
            {
                "plan_type": acct.plan or "plus",
                "rate_limit": {
                    "allowed": not exhausted,
                    "limit_reached": exhausted,
                    "primary_window": window,
                    "secondary_window": weekly,
                },
                "credits": {"has_credits": False, "unlimited": False, "balance": "0"},
            }
        )
    if provider == "claude":
        iso = (now + timedelta(hours=3)).isoformat()
        return dumps(
            {
                "five_hour": {"utilization": float(used), "resets_at": iso},
                "seven_day": {"utilization": 100.0 if exhausted else 31.0, "resets_at": iso},
                "seven_day_oauth_apps": None,
                "seven_day_opus": None,
            }
        )
    if provider == "kimi":
        return dumps(
            {
                "user": {"userId": acct.account_id or "u-sim", "region": "REGION_CN"},
                "usage": {
                    "limit": "100",
                    "used": str(used),
                    "remaining": str(100 - used),
                    "resetTime": (now + timedelta(hours=3)).isoformat(),
                },
                "limits": [],
            }
        )
    if provider == "xai":
        if "/v1/me" in url:
            return dumps({"id": acct.account_id or "usr-sim", "email": acct.email, "name": acct.email})
        return dumps({"billing": {"remaining_credits": 0 if exhausted else 25, "currency": "USD"}})
    if provider == "antigravity":
        return dumps(
            {
                "models": {
                    m: {"displayName": m, "quotaInfo": {"remainingFraction": 0 if exhausted else 0.88}}
                    for m in PROVIDER_MODELS["antigravity"]
                }
            }
        )
    return "{}"
