"""What answers at a CPA's `base_url`: a plain CPA, a CLIProxyAPIHome ("Home"), or a CPA cluster node.

Detection follows `shared/home-contract.md` §8 and never spends a failed-key attempt:

- It reads the headers of answers reauthd gets anyway, sent with the real key through the key gate. Home sets
  `X-CPA-HOME-VERSION` / `-COMMIT` / `-BUILD-DATE` *first* on every `/v0/management` answer, even 401, 403
  and its no-secret 404 (Home `internal/managementhttp/server.go:657-671`, `withBuildInfoHeaders`). A plain
  CPA sets `X-CPA-VERSION` and no `X-CPA-HOME-*` (CPA `internal/api/handlers/management/handler.go`
  Middleware). So the first answer tells them apart: no extra request, no wrong key ever sent.
- A CPA node started with `-home-jwt` answers every `/v0/management/*` with an empty 404 before its key
  middleware, so with no `X-CPA-*` header (CPA `internal/api/server_management.go:24-28,195-209`), exactly
  like a CPA with management turned off. Only in that branch (contract §8.3: on a CPA with management *on*
  a RESP command before `AUTH` counts as a failed attempt) one RESP `PING` goes to the same port: a node
  answers `-ERR redis usage output disabled in home mode` before it parses anything (CPA
  `internal/api/redis_queue_protocol.go:61-65`, `protocol_multiplexer.go:104-107`); a CPA with management
  off closes without a word (`redis_queue_protocol.go:67-70`, contract [inferred]).

The plain-CPA client pointed at Home would misread nearly everything (UUID ids, duplicate names, deletes by
name hitting the new credential: home-contract §3), so it refuses a Home answer with one sentence asking for
`kind = "home"`, which selects the Home adapter (reauthd/cpa/home.py, reauthd/cpa/factory.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal
from urllib.parse import urlsplit

import httpx
import structlog

from reauthd.cpa.errors import ManagementNotEnabled, ManagementUnavailable

log = structlog.get_logger(__name__)

ConfiguredKind = Literal["auto", "cpa", "home"]

#: What a node writes on its RESP side (CPA internal/api/redis_queue_protocol.go:61-65).
NODE_RESP_ANSWER = b"-ERR redis usage output disabled in home mode"
#: One RESP PING as an array of bulk strings (contract §8.3).
RESP_PING = b"*1\r\n$4\r\nPING\r\n"
NODE_SENTENCE = "this is a cluster node; point reauthd at its Home"


class FoundKind(StrEnum):
    UNKNOWN = "unknown"  # no answer with headers yet
    CPA = "cpa"  # plain CLIProxyAPI
    HOME = "home"  # CLIProxyAPIHome
    NODE = "node"  # a CPA node in Home mode (-home-jwt)


@dataclass(frozen=True, slots=True)
class HomeVersion:
    """From Home's `X-CPA-HOME-VERSION` / `-COMMIT` / `-BUILD-DATE` (Home server.go:657-671)."""

    version: str
    commit: str | None = None
    build_date: str | None = None


def home_version_of(headers: httpx.Headers) -> HomeVersion | None:
    version = headers.get("x-cpa-home-version")
    if version is None:
        return None
    return HomeVersion(
        version=version.strip()[:64] or "unknown",
        commit=headers.get("x-cpa-home-commit"),
        build_date=headers.get("x-cpa-home-build-date"),
    )


def kind_from_headers(headers: httpx.Headers) -> FoundKind:
    """Home if any `X-CPA-HOME-*` header is set (Home also sends the CPA library's `X-CPA-VERSION`), a plain
    CPA if only `X-CPA-VERSION` is, else UNKNOWN (an empty 404 from a node or a management-off CPA)."""
    if "x-cpa-home-version" in headers:
        return FoundKind.HOME
    if "x-cpa-version" in headers:
        return FoundKind.CPA
    return FoundKind.UNKNOWN


def describe(kind: FoundKind, home: HomeVersion | None, cpa_version: str | None) -> str:
    """How /healthz, /readyz notes and `reauthd scan` name what answers, e.g. "CLIProxyAPIHome v1.0.67"."""
    if kind is FoundKind.HOME:
        return f"CLIProxyAPIHome {home.version}" if home else "CLIProxyAPIHome"
    if kind is FoundKind.CPA:
        return f"plain CPA {cpa_version}" if cpa_version else "plain CPA"
    if kind is FoundKind.NODE:
        return "CPA cluster node (-home-jwt)"
    return "not identified yet"


# ------------------------------------------------------------------------------------------ errors


class ClusterNodeRefused(ManagementNotEnabled):
    """The base_url is a CPA node in Home mode: it has no management and holds no credentials. A special
    case of "management turned off", so every caller that handles that one handles this one alike."""

    def __init__(self, cpa: str, endpoint: str) -> None:
        ManagementUnavailable.__init__(self, cpa, endpoint, f"CPA {cpa!r}: {NODE_SENTENCE}")


class HomeNotSupported(ManagementUnavailable):
    """The base_url is a CLIProxyAPIHome, which the plain-CPA client would misread (home-contract §3)."""

    def __init__(self, cpa: str, endpoint: str, home: HomeVersion | None) -> None:
        what = describe(FoundKind.HOME, home, None)
        super().__init__(
            cpa,
            endpoint,
            f'CPA {cpa!r} is a {what}: set kind = "home" in its [[cpa]] section for reauthd to watch it; '
            "until then it does not act on it (see the README, 'CPA clusters (Home)')",
        )


class KindMismatch(ManagementUnavailable):
    """`kind` in the configuration says one thing, the answers another."""

    def __init__(self, cpa: str, endpoint: str, configured: str, found: str) -> None:
        super().__init__(
            cpa,
            endpoint,
            f"CPA {cpa!r} is configured with kind = {configured!r} but answers as a {found}; "
            'fix kind (or set kind = "auto")',
        )


def refusal(
    cpa: str,
    endpoint: str,
    configured: ConfiguredKind,
    headers: httpx.Headers,
    cpa_version: str | None,
    serves: FoundKind = FoundKind.CPA,
) -> ManagementUnavailable | None:
    """The error a non-key answer with these headers must end in for a client that `serves` one kind (the
    plain-CPA client, or the Home adapter of reauthd/cpa/home.py), or None to go on.

    Key answers (401/403) are not judged here: Home's key middleware is CPA's (home-contract §2), so the
    key gate must close on them exactly as for CPA.
    """
    found = kind_from_headers(headers)
    if found is FoundKind.UNKNOWN:
        return None
    if found is not serves:
        if found is FoundKind.HOME:
            return HomeNotSupported(cpa, endpoint, home_version_of(headers))
        return KindMismatch(
            cpa, endpoint, configured if configured != "auto" else "home", describe(found, None, cpa_version)
        )
    if configured != "auto" and configured != found.value:
        what = describe(found, home_version_of(headers), cpa_version)
        return KindMismatch(cpa, endpoint, configured, what)
    return None


# ------------------------------------------------------------------------------------- RESP probe

NodeProbe = Callable[[], Awaitable[bool]]


def resp_node_probe(base_url: str, tls: Callable[[], ssl.SSLContext], *, timeout_s: float = 3.0) -> NodeProbe:
    """A probe answering "is the thing at base_url's port a CPA node in Home mode?" with one RESP PING.

    Only ever called after an empty 404 without `X-CPA-*` headers (see the module docstring). The node
    writes its refusal on seeing the first RESP byte, so nothing is sent that could be a key. Any failure
    (refused, timeout, TLS, a proxy answering HTTP) reads as "not a node": the caller then keeps its
    "management API turned off" sentence, which is what a plain CPA in that state deserves.
    `tls` builds the TLS context (only for https, only when probing); it must carry no ALPN: a TLS
    connection that negotiated `h2`/`http/1.1` is handed to HTTP, not RESP.
    """
    parts = urlsplit(base_url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "https" else 80)

    async def probe() -> bool:
        writer: asyncio.StreamWriter | None = None
        use_tls = tls() if parts.scheme == "https" else None
        try:
            async with asyncio.timeout(timeout_s):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=use_tls, server_hostname=host if use_tls else None
                )
                writer.write(RESP_PING)
                await writer.drain()
                data = await reader.read(len(NODE_RESP_ANSWER) + 64)
        except (OSError, TimeoutError, ssl.SSLError, asyncio.IncompleteReadError):
            return False
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
                    await asyncio.wait_for(writer.wait_closed(), 1.0)
        is_node = data.startswith(NODE_RESP_ANSWER)
        log.info("cpa.kind.resp_probe", host=host, port=port, node=is_node)
        return is_node

    return probe
