"""OAuth login flows as CPA runs them: auth URLs, callbacks, code exchange, saving, timeouts, devices.

Mirrors auth_files_provider_oauth.go (contract §4): the callback file the waiter picks up, the code
exchange, saving with the re-login merge, the 5-minute timeout and device-code polling.
"""

from __future__ import annotations

import itertools
import secrets
from datetime import timedelta
from urllib.parse import urlencode, urlsplit

from reauthd.sim.auths import TOKEN_LIFECYCLE_KEYS
from reauthd.sim.credentials import Identity, file_content, file_name_for, merge_relogin
from reauthd.sim.oauth import (
    CALLBACK_PROVIDERS,
    CALLBACK_WAIT,
    DEVICE_PROVIDERS,
    FORWARDER_PORTS,
    PENDING_TTL,
    OAuthSession,
)
from reauthd.sim.state import LoginPlan, SimState

# Per provider: (bad request, exchange failed, save failed) messages of §4.2.
MESSAGES = {
    "anthropic": (
        "Bad request",
        "Failed to exchange authorization code for tokens",
        "Failed to save authentication tokens",
    ),
    "codex": (
        "Bad Request",
        "Failed to exchange authorization code for tokens: invalid_grant: Invalid authorization code",
        "Failed to save authentication tokens",
    ),
    "antigravity": ("Authentication failed", "Failed to exchange token", "Failed to save token to file"),
}
_NANO_TIEBREAK = itertools.count()
TIMEOUT = {
    "anthropic": "Timeout waiting for OAuth callback",
    "codex": "Timeout waiting for OAuth callback",
    "antigravity": "OAuth flow timed out",
}


# The authorize URLs CPA builds, query parameter for query parameter. The host and path are the simulated
# provider's page (a real browser must reach it); the query is exactly CPA's:
# - anthropic: internal/auth/claude/anthropic_auth.go GenerateAuthURL (note `code=true`, a Claude marker,
#   not an OAuth code) with ClientID, RedirectURI, ClaudeOAuthScope of the same file;
# - codex: internal/auth/codex/openai_auth.go GenerateAuthURL (prompt=login, id_token_add_organizations,
#   codex_cli_simplified_flow);
# - antigravity: internal/auth/antigravity/auth.go BuildAuthURL with constants.go ClientID and Scopes, and the
#   redirect_uri auth_files_provider_oauth.go passes (http://localhost:51121/oauth-callback).
CLAUDE_SCOPE = "user:profile user:inference user:sessions:claude_code user:mcp_servers user:file_upload"
ANTIGRAVITY_SCOPES = (
    "https://www.googleapis.com/auth/cloud-platform",
    "https://www.googleapis.com/auth/userinfo.email",
    "https://www.googleapis.com/auth/userinfo.profile",
    "https://www.googleapis.com/auth/cclog",
    "https://www.googleapis.com/auth/experimentsandconfigs",
)
CLIENT_IDS = {
    "anthropic": "9d1c250a-e61b-44d9-88ed-5944d1962f5e",
    "codex": "app_EMoamEEZ73f0CkXaXp7hrann",
    "antigravity": "1071006060591-tmhssin2h21lcre235vtolojh4g403ep.apps.googleusercontent.com",
}


def go_encode(query: dict[str, str]) -> str:
    """Go's url.Values.Encode: keys sorted, QueryEscape (space as `+`, only [A-Za-z0-9-_.~] left as is)."""
    return urlencode(sorted(query.items()))


def authorize_query(provider: str, st: str) -> dict[str, str]:
    """The query of CPA's authorize URL for a built-in callback provider (sources above)."""
    _, redirect, _ = CALLBACK_PROVIDERS[provider]
    challenge = secrets.token_urlsafe(32)
    if provider == "anthropic":
        return {
            "code": "true",
            "client_id": CLIENT_IDS[provider],
            "response_type": "code",
            "redirect_uri": redirect,
            "scope": CLAUDE_SCOPE,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": st,
        }
    if provider == "codex":
        return {
            "client_id": CLIENT_IDS[provider],
            "response_type": "code",
            "redirect_uri": redirect,
            "scope": "openid email profile offline_access",
            "state": st,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "prompt": "login",
            "id_token_add_organizations": "true",
            "codex_cli_simplified_flow": "true",
        }
    # antigravity: BuildAuthURL has no PKCE
    return {
        "access_type": "offline",
        "client_id": CLIENT_IDS[provider],
        "prompt": "consent",
        "redirect_uri": redirect,
        "response_type": "code",
        "scope": " ".join(ANTIGRAVITY_SCOPES),
        "state": st,
    }


class CallbackServerUnavailable(Exception):
    """`is_webui`: CPA could not listen on the provider's fixed localhost port (another program holds it)."""


def start_callback_flow(state: SimState, provider: str, *, webui: bool = False) -> tuple[str, str]:
    """Register a 32-hex state and return (authorize url, state); the waiter times out after 5 min.

    `webui` (the `is_webui` query): CPA starts its callback forwarder after registering the session. If the
    port is taken, the handler answers 500 and returns before starting the waiter, so the session stays
    pending for its 30-minute TTL with no 5-minute timeout (auth_files_provider_oauth.go, contract §4.1).
    """
    now = state.now()
    st = secrets.token_hex(16)
    session = OAuthSession(st, provider, now, now + PENDING_TTL, "callback")
    state.sessions.register(session, now)
    if webui and FORWARDER_PORTS[provider] in state.sessions.forwarder_ports_in_use:
        raise CallbackServerUnavailable
    if webui:
        state.sessions.start_forwarder(FORWARDER_PORTS[provider], st)
    url = f"{state.settings.base_url}/_sim/provider/{provider}/authorize?{go_encode(authorize_query(provider, st))}"

    def timeout() -> None:
        s = state.sessions.get(st, state.now())
        if s is not None and s.pending and s.callback is None:
            state.sessions.set_error(st, TIMEOUT.get(provider, "OAuth flow timed out"), state.now())

    state.schedule(CALLBACK_WAIT.total_seconds(), timeout)
    return url, st


def start_plugin_flow(state: SimState, provider: str) -> tuple[str, str]:
    """A configured plugin provider with a callback flow (plugin-defined; 32-hex state here)."""
    now = state.now()
    st = secrets.token_hex(16)
    state.sessions.register(OAuthSession(st, provider, now, now + PENDING_TTL, "callback"), now)
    # ServePluginAuthURL (auth_files_oauth_callback.go) hands the plugin's StartLogin CPA's own
    # managementCallbackURL("/v0/management/oauth-callback") (http://127.0.0.1:<port>/…) as the base for its
    # redirect; the rest of the URL is the plugin's. This sim plugin asks for a Google-style code grant.
    query = {
        "client_id": "sim-plugin-client",
        "redirect_uri": f"http://127.0.0.1:{urlsplit(state.settings.base_url).port}/v0/management/oauth-callback",
        "response_type": "code",
        "state": st,
    }
    return f"{state.settings.base_url}/_sim/provider/{provider}/authorize?{go_encode(query)}", st


def start_device_flow(state: SimState, provider: str) -> dict[str, object]:
    """kimi/xai device flow: state `kmi-<nanos>`/`xai-<nanos>`, user_code, and `expires_in` when CPA sends it.

    xAI always sends it (the upstream's, else 1800). Kimi sends it only when its upstream gave one
    (`sessions.kimi_expires_in`, none by default) and polls min(that, 15 min) either way.
    """
    now = state.now()
    prefix, poll_limit = DEVICE_PROVIDERS[provider]
    told = state.sessions.kimi_expires_in if provider == "kimi" else poll_limit
    expires_in = min(told, poll_limit) if told is not None and told > 0 else poll_limit
    # `<unix nanos>` from the simulated clock; the counter keeps states unique when it stands still.
    st = f"{prefix}{int(now.timestamp()) * 1_000_000_000 + now.microsecond * 1000 + next(_NANO_TIEBREAK)}"
    user_code = f"{secrets.token_hex(2).upper()}-{secrets.token_hex(2).upper()}"
    session = OAuthSession(
        st,
        provider,
        now,
        now + PENDING_TTL,
        "device",
        user_code=user_code,
        device_expires_at=now + timedelta(seconds=expires_in),
    )
    state.sessions.register(session, now)
    url = f"{state.settings.base_url}/_sim/provider/{provider}/device?user_code={user_code}"
    _poll_device(state, st)
    answer: dict[str, object] = {
        "status": "ok",
        "url": url,
        "state": st,
        "flow": "device",
        "user_code": user_code,
    }
    if told is not None and told > 0:
        answer["expires_in"] = told
    return answer


def _poll_device(state: SimState, st: str) -> None:
    def poll() -> None:
        now = state.now()
        s = state.sessions.get(st, now)
        if s is None or not s.pending:
            return
        if s.denied:
            state.sessions.set_error(st, "Authentication failed: access_denied", now)
        elif s.approved is not None:
            _save(state, s, s.approved)
        elif s.device_expires_at is not None and now > s.device_expires_at:
            state.sessions.set_error(st, "Authentication failed: device code expired", now)
        else:
            _poll_device(state, st)

    state.schedule(state.settings.device_poll_interval, poll)


def issue_code(state: SimState, provider: str, st: str, ident: Identity | None) -> str:
    """The fake provider page's sign-in: mint a code bound to the identity chosen."""
    plan = state.next_login.pop(provider, None) or state.next_login.pop("*", None) or LoginPlan(None)
    file_type = CALLBACK_PROVIDERS[provider][0] if provider in CALLBACK_PROVIDERS else provider
    chosen = ident or plan.identity or Identity.fresh(file_type)
    chosen.provider = file_type
    code = secrets.token_urlsafe(24)
    state.codes[code] = (st, chosen, plan.exchange_fails)
    return code


def device_identity(state: SimState, provider: str, ident: Identity | None) -> tuple[Identity, bool]:
    plan = state.next_login.pop(provider, None) or state.next_login.pop("*", None) or LoginPlan(None)
    chosen = ident or plan.identity or Identity.fresh(provider)
    chosen.provider = provider
    return chosen, plan.exchange_fails


def write_callback(state: SimState, session: OAuthSession, code: str, error: str) -> None:
    """The `.oauth-<provider>-<state>.oauth` file; the waiter polls every 500 ms, then exchanges."""
    session.callback = {"code": code, "state": session.state, "error": error}
    st = session.state

    def pick_up() -> None:
        now = state.now()
        s = state.sessions.get(st, now)
        if s is None or not s.pending or s.callback is None:
            return
        cb, s.callback = s.callback, None
        bad, exchange_failed, _ = MESSAGES.get(s.provider, MESSAGES["antigravity"])
        if cb["error"]:
            state.sessions.set_error(st, bad, now)
            return
        grant = state.codes.pop(cb["code"].split("#", 1)[0], None)
        if grant is None or grant[0] != st or grant[2]:
            state.sessions.set_error(st, exchange_failed, now)
            return
        _save(state, s, grant[1])

    state.schedule(state.settings.exchange_delay, pick_up)


def raw_record_metadata(provider: str, content: dict[str, object]) -> dict[str, object]:
    """The Metadata of the record saveTokenRecord hands to runtimeAuthSyncHook (auth_files_provider_oauth.go).

    Claude, Codex, xAI and Kimi save through a TokenStorage: the tokens go to the file, the record's
    Metadata holds only the account keys (plus the user keys merged from an existing file, never token
    keys: MergeExistingAuthMetadata). Until the watcher reloads the file, a `$TOKEN$` request with that
    record finds no token. Antigravity's record carries the whole token map as Metadata.
    """
    if provider == "antigravity":
        return dict(content)
    return {k: v for k, v in content.items() if k not in TOKEN_LIFECYCLE_KEYS}


def _save(state: SimState, session: OAuthSession, ident: Identity) -> None:
    """saveTokenRecord: merge into a same-name file, write, complete; the watcher loads it later."""
    now = state.now()
    if not state.sessions.is_pending(session.state, now):
        return  # cancelled while exchanging: never write (guardOAuthSessionPendingForSave)
    from reauthd.sim.credentials import ACCESS_LIFETIME

    acct = state.upstream.account(
        ident.provider, ident.email, account_id=ident.account_id, plan=ident.plan, project_id=ident.project_id
    )
    expires = now + ACCESS_LIFETIME.get(ident.provider, timedelta(hours=1))
    access, rt = state.upstream.mint(acct, expires)
    content = file_content(ident, access, rt, now, expires)
    name = file_name_for(ident, now)
    while ident.provider == "kimi" and name in state.disk:
        name = name.replace(".json", "1.json")
    old = state.disk.get(name)
    if old is not None:
        content = merge_relogin(old.content, content)
    state.write_file(name, content)
    state.register_raw_login(name, raw_record_metadata(ident.provider, content))
    session.saved_file = name
    state.sessions.complete(session.state, now)
