"""Which login a credential's provider needs: the CPA auth-url route, the flow kind and what the page shows.

A task carries the provider as CPA lists it (the file `type`, contract §2.1). CPA names some login routes
differently (`claude` files come from `/anthropic-auth-url`, contract §4.1), plugin providers use their
own id, and Vertex is not OAuth at all (`POST /vertex/import`, contract §6).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit


class LoginKind(StrEnum):
    CALLBACK = "callback"  # authorize URL; the browser lands on a localhost redirect the person pastes back
    DEVICE = "device"  # verification URL + user code; CPA polls the provider itself
    VERTEX = "vertex"  # a service-account JSON uploaded through /vertex/import


class UnsupportedProvider(Exception):
    """The provider has no login route reauthd can drive (e.g. a removed built-in such as qwen)."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        super().__init__(f"reauthd cannot start a login for provider {provider!r}")


@dataclass(frozen=True, slots=True)
class ProviderLogin:
    """How to log in again for one provider."""

    provider: str  # the credential's provider as CPA lists it (`claude`, `codex`, plugin id, ...)
    auth_url_provider: str  # the <provider> of GET /<provider>-auth-url ("" for Vertex)
    kind: LoginKind | None  # None: a plugin, CPA's answer decides (`flow: "device"` or a callback URL)
    display_name: str
    # Where the provider sends the browser after sign-in (contract §4.1 table); shown as a hint only.
    redirect_hint: str | None = None
    # CPA accepts `is_webui` only for these three (auth_files_provider_oauth.go, contract §4.1).
    supports_webui: bool = False


_BUILTIN: dict[str, ProviderLogin] = {
    "codex": ProviderLogin(
        "codex", "codex", LoginKind.CALLBACK, "OpenAI Codex", "http://localhost:1455/auth/callback", True
    ),
    "claude": ProviderLogin(
        "claude", "anthropic", LoginKind.CALLBACK, "Claude", "http://localhost:54545/callback", True
    ),
    "antigravity": ProviderLogin(
        "antigravity",
        "antigravity",
        LoginKind.CALLBACK,
        "Antigravity",
        "http://localhost:51121/oauth-callback",
        True,
    ),
    "kimi": ProviderLogin("kimi", "kimi", LoginKind.DEVICE, "Kimi"),
    "xai": ProviderLogin("xai", "xai", LoginKind.DEVICE, "xAI Grok"),
    "vertex": ProviderLogin("vertex", "", LoginKind.VERTEX, "Vertex AI"),
}

# CPA's own aliases for the session provider (oauth_sessions.go NormalizeOAuthCallbackProvider).
_ALIASES = {
    "anthropic": "claude",
    "openai": "codex",
    "anti-gravity": "antigravity",
    "x-ai": "xai",
    "x.ai": "xai",
    "grok": "xai",
}

# Built-ins removed from CPA (contract §4.1): asking for their auth URL would 404.
_REMOVED = frozenset({"qwen", "iflow"})

# Gemini is not among them: its built-in route went away (2026-06-18), but Gemini CLI lives on as a plugin.
# CPA lists a `type:"gemini"` file only when a plugin parses it, and hands it to the plugins as provider
# "gemini-cli" (internal/watcher/synthesizer/file.go), so it logs in through that plugin's
# `/gemini-cli-auth-url`; without the plugin CPA answers an empty 404 and the page says the plugin is missing.
_PLUGIN_ALIASES = {"gemini": "gemini-cli"}
_PLUGIN_NAMES = {"gemini-cli": "Gemini CLI"}

# Plugin ids: CPA routes `/<id>-auth-url` through its NoRoute handler for ids of this shape (contract §4.1).
_PLUGIN_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


def login_for_provider(provider: str) -> ProviderLogin:
    """The login for a credential's provider; plugin ids map to themselves. Raises UnsupportedProvider."""
    key = provider.strip().lower()
    key = _ALIASES.get(key, key)
    if key in _BUILTIN:
        return _BUILTIN[key]
    key = _PLUGIN_ALIASES.get(key, key)
    if key in _REMOVED or not _PLUGIN_ID.fullmatch(key):
        raise UnsupportedProvider(provider)
    return ProviderLogin(key, key, None, _PLUGIN_NAMES.get(key, key))


def resolve_kind(login: ProviderLogin, answered_flow: str | None) -> LoginKind:
    """The flow actually running: built-ins are fixed; plugins say `flow: "device"` or give a callback URL."""
    if login.kind is not None:
        return login.kind
    return LoginKind.DEVICE if answered_flow == "device" else LoginKind.CALLBACK


# Where each built-in provider's sign-in page lives (CPA: codex/openai_auth.go AuthURL auth.openai.com,
# claude/anthropic_auth.go AuthURL claude.ai, antigravity/constants.go AuthEndpoint accounts.google.com,
# kimi/kimi.go auth.kimi.com, xai device verification_uri accounts.x.ai). Registrable domains, so a
# provider moving its page to a sibling host still works.
_PROVIDER_DOMAINS: dict[str, tuple[str, ...]] = {
    "codex": ("openai.com", "chatgpt.com"),
    "claude": ("claude.ai", "claude.com", "anthropic.com"),
    "antigravity": ("google.com",),
    "gemini-cli": ("google.com",),
    "kimi": ("kimi.com", "moonshot.cn", "moonshot.ai"),
    "xai": ("x.ai", "grok.com"),
}
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def trusted_signin_url(provider: str, url: str) -> bool:
    """May the page send a browser to this sign-in URL CPA returned? (issue 11: never `javascript:`.)

    https to a host of the provider (any https host for a plugin, whose provider reauthd cannot know), or
    http(s) on loopback (the simulator, a provider served on the same machine).
    """
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".").lower()
    except ValueError:
        return False
    if not host or parts.username is not None or parts.password is not None:
        return False
    if host in _LOOPBACK_HOSTS and parts.scheme in ("http", "https"):
        return True
    if parts.scheme != "https":
        return False
    key = provider.strip().lower()
    key = _PLUGIN_ALIASES.get(_ALIASES.get(key, key), _ALIASES.get(key, key))
    domains = _PROVIDER_DOMAINS.get(key)
    if domains is None:
        return key not in _BUILTIN  # a plugin: https anywhere; a built-in without a known page: nowhere
    return any(host == domain or host.endswith(f".{domain}") for domain in domains)
