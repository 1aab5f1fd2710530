"""Active probes: one cheap, read-only request with a credential's own token through CPA's `/api-call`.

CPA substitutes `$TOKEN$` in header values (contract §5), so reauthd never sees the token. The probes
are the ones the official management panel uses; none of them spends model quota. `probe()` is the one
public entry point: detection uses it to confirm a suspect and for the slow idle schedule, and the
verification after a re-login reuses it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from reauthd.config import ProbeConfig
from reauthd.core.classify import PROBE_NO_TOKEN, PROBE_REFRESH_FAILED, PROBE_TRANSPORT, PROBE_UNAVAILABLE
from reauthd.core.model import Credential, Evidence, EvidenceSource
from reauthd.core.sanitize import sanitize_text
from reauthd.cpa.client import CPAClient
from reauthd.cpa.errors import CPAError, CPARequestError, KeyProblem, UpstreamRequestFailed

log = structlog.get_logger(__name__)

#: The User-Agent CPAMP's Codex inspection sends (cpamp-signals.md §5.1); chatgpt.com expects a CLI UA.
CODEX_USER_AGENT = "codex_cli_rs/0.76.0 (Debian 13.0.0; x86_64) WindowsTerminal"
#: Claude's OAuth endpoints need this beta header (contract §5, the official panel's constants.ts).
CLAUDE_OAUTH_BETA = "oauth-2025-04-20"
#: Vertex holds a service account, not an access token: `$TOKEN$` resolves to nothing and CPA answers
#: 400 "auth token not found" (contract §12). It is never probed through /api-call, even if configured.
NEVER_VIA_API_CALL = frozenset({"vertex"})
#: Providers whose /api-call refreshes an expiring token itself (contract §12): expiry is not a question.
REFRESHED_BY_API_CALL = frozenset({"antigravity"})


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    data: str = ""


_BEARER = {"Authorization": "Bearer $TOKEN$"}

BUILTIN_PROBES: Mapping[str, ProbeSpec] = {
    "codex": ProbeSpec(
        "GET",
        "https://chatgpt.com/backend-api/wham/usage",
        {**_BEARER, "Content-Type": "application/json", "User-Agent": CODEX_USER_AGENT},
    ),
    "claude": ProbeSpec(
        "GET",
        "https://api.anthropic.com/api/oauth/usage",
        {**_BEARER, "anthropic-beta": CLAUDE_OAUTH_BETA, "Content-Type": "application/json"},
    ),
    "kimi": ProbeSpec("GET", "https://api.kimi.com/coding/v1/usages", dict(_BEARER)),
    "xai": ProbeSpec("GET", "https://api.x.ai/v1/me", dict(_BEARER)),
}


#: Told about every probe sent: (cpa, credential, evidence, seconds). The daemon counts them in /metrics.
ProbeObserver = Callable[[str, Credential, Evidence, float], None]


class ProbeTable:
    """Provider → probe: the built-ins, overridden or extended by `[detect.probes]` (antigravity, plugins)."""

    observer: ProbeObserver | None = None

    def __init__(self, configured: Mapping[str, ProbeConfig] | None = None) -> None:
        table = dict(BUILTIN_PROBES)
        for provider, cfg in (configured or {}).items():
            key = provider.strip().lower()
            if key in NEVER_VIA_API_CALL:
                log.warning(
                    "detect.probe.ignored",
                    provider=key,
                    reason="Vertex credentials cannot be probed through /api-call (no access token)",
                )
                continue
            table[key] = ProbeSpec(cfg.method, cfg.url, dict(cfg.headers), cfg.data)
        self._table = table

    def has_probe(self, provider: str) -> bool:
        return provider.lower() in self._table

    def providers(self) -> list[str]:
        return sorted(self._table)

    def spec_for(self, credential: Credential) -> ProbeSpec | None:
        spec = self._table.get(credential.provider.lower())
        if spec is None:
            return None
        if credential.provider.lower() == "codex" and credential.account_id:
            # wham/usage answers for the workspace named here; the listing carries it from the
            # id_token claims (contract §2.1), so no file download is needed.
            return ProbeSpec(
                spec.method,
                spec.url,
                {**spec.headers, "Chatgpt-Account-Id": credential.account_id},
                spec.data,
            )
        return spec


_DEFAULT_TABLE = ProbeTable()


async def probe(
    client: CPAClient,
    credential: Credential,
    now: datetime,
    *,
    table: ProbeTable | None = None,
    check_expiry: bool = True,
) -> Evidence:
    """Probe one credential and return what was seen, as sanitised PROBE evidence observed at `now`.

    Never raises for what the provider or the network did: a 502 from /api-call, a timeout, a malformed
    answer all become evidence the classifier reads as transient. Raises `KeyProblem` (including
    `ClientPaused`) when CPA refused the management key: callers must stop, not retry.

    On a 401/403 it downloads the auth file once to read `expired`: /api-call never refreshes (except
    antigravity), so a 401 on a token already past expiry is not a revocation yet (contract §5). Only
    the `expired` field is read; the file's tokens are dropped at once.
    """
    table = table or _DEFAULT_TABLE
    spec = table.spec_for(credential)
    if spec is None or credential.provider.lower() in NEVER_VIA_API_CALL:
        return _evidence(now, 400, "this provider has no probe", PROBE_NO_TOKEN)
    started = time.monotonic()
    evidence = await _send(client, credential, now, spec, check_expiry)
    if table.observer is not None:
        try:
            table.observer(client.name, credential, evidence, time.monotonic() - started)
        except Exception as exc:  # an observer (metrics) must never break detection
            log.warning("detect.probe.observer_failed", error=type(exc).__name__)
    return evidence


async def _send(
    client: CPAClient, credential: Credential, now: datetime, spec: ProbeSpec, check_expiry: bool
) -> Evidence:
    try:
        result = await client.api_call(credential.auth_index, spec.method, spec.url, spec.headers, spec.data)
    except KeyProblem:
        raise
    except UpstreamRequestFailed as exc:
        return _evidence(now, 502, exc.error_text or "request failed", PROBE_TRANSPORT)
    except CPARequestError as exc:
        text = exc.error_text.strip().lower()
        if text == "auth token refresh failed":
            return _evidence(now, 400, exc.error_text, PROBE_REFRESH_FAILED)
        if text == "auth token not found":
            return _evidence(now, 400, exc.error_text, PROBE_NO_TOKEN)
        return _evidence(now, None, exc.sentence, PROBE_UNAVAILABLE)
    except CPAError as exc:
        return _evidence(now, None, exc.sentence, PROBE_UNAVAILABLE)

    token_expired: bool | None = None
    if (
        check_expiry
        and result.status_code in (401, 403)
        and credential.provider.lower() not in REFRESHED_BY_API_CALL
    ):
        token_expired = await access_token_expired(client, credential, now)
    return Evidence(
        source=EvidenceSource.PROBE,
        observed_at=now,
        http_status=result.status_code,
        text=sanitize_text(result.body),
        token_expired=token_expired,
    )


async def access_token_expired(client: CPAClient, credential: Credential, now: datetime) -> bool | None:
    """Whether the file's `expired` (RFC 3339, contract §8) is in the past; None when it cannot be told."""
    if credential.runtime_only:
        return None
    try:
        raw = await client.download_auth_file(credential.name)
    except KeyProblem:
        raise
    except CPAError as exc:
        log.info(
            "detect.probe.expiry_unknown", cpa=client.name, auth_index=credential.auth_index, why=exc.sentence
        )
        return None
    try:
        content = json.loads(raw)
    except ValueError:
        return None
    finally:
        del raw
    expired = content.get("expired") if isinstance(content, dict) else None
    del content  # holds tokens: keep nothing but the timestamp
    if not isinstance(expired, str) or not expired.strip():
        return None
    try:
        when = datetime.fromisoformat(expired.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return when <= now


def _evidence(now: datetime, status: int | None, text: str, code: str) -> Evidence:
    return Evidence(
        source=EvidenceSource.PROBE,
        observed_at=now,
        http_status=status,
        text=sanitize_text(text),
        code=code,
    )
