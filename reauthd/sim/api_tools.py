"""POST /api-call against offline fake providers, POST /vertex/import and GET /usage-queue (api_tools.go).

Mirrors api_tools.go (§5), vertex_import.go (§6) and usage.go (§7); the sim has no internet, so
only the providers' probe URLs answer.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from reauthd.sim.auths import AUTH_DIR
from reauthd.sim.credentials import merge_relogin, vertex_file_name
from reauthd.sim.responses import err, gin_json, read_form, read_json
from reauthd.sim.scenarios import refresh
from reauthd.sim.state import SimState
from reauthd.sim.upstream import TokenRecord

PROBE_HOSTS = {
    "chatgpt.com": "codex",
    "api.anthropic.com": "claude",
    "api.kimi.com": "kimi",
    "api.x.ai": "xai",
    "grok.com": "xai",
    "cloudcode-pa.googleapis.com": "antigravity",
    "daily-cloudcode-pa.googleapis.com": "antigravity",
}


def _expires_soon(expired: Any, now: datetime) -> bool:
    if not isinstance(expired, str) or not expired:
        return False
    try:
        when = datetime.fromisoformat(expired.replace("Z", "+00:00"))
    except ValueError:
        return False
    return when - now < timedelta(seconds=30)


async def api_call(request: Request, state: SimState) -> Response:
    """api_tools.go APICall; the sim is offline, so only the providers' probe URLs answer (§5)."""
    state.counters.api_calls += 1
    try:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise ValueError
        header = body.get("header") or {}
        if not isinstance(header, dict) or not all(isinstance(v, str) for v in header.values()):
            raise ValueError
    except ValueError:
        return err(400, "invalid body")
    method = str(body.get("method") or "").strip().upper()
    if not method:
        return err(400, "missing method")
    url = str(body.get("url") or "").strip()
    if not url:
        return err(400, "missing url")
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return err(400, "invalid url")
    proxy = str(body.get("proxy_url") or "").strip()
    if (
        proxy
        and proxy not in ("direct", "none")
        and urlsplit(proxy).scheme not in ("http", "https", "socks5", "socks5h")
    ):
        return err(400, "invalid proxy_url")
    index = next(
        (
            str(body[k]).strip()
            for k in ("auth_index", "authIndex", "AuthIndex")
            if isinstance(body.get(k), str) and body[k].strip()
        ),
        "",
    )
    auth = state.by_index.get(index) if index else None
    headers = dict(header)
    token = ""
    resolved = False
    for key, value in headers.items():
        if "$TOKEN$" not in value:
            continue
        if not resolved:
            resolved = True
            if auth is not None:
                soon = auth.provider == "antigravity" and _expires_soon(
                    auth.metadata.get("expired"), state.now()
                )
                if soon and refresh(state, auth).status != 200:
                    return err(400, "auth token refresh failed")
                token = "" if auth.provider == "vertex" else auth.access_token
        if auth is not None and not token:
            return err(400, "auth token not found")
        if token:
            headers[key] = value.replace("$TOKEN$", token)
    host = (parts.hostname or "").lower()
    provider = PROBE_HOSTS.get(host)
    if provider is None:
        return err(502, "request failed")
    sent = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    sent = sent[7:] if sent.lower().startswith("bearer ") else sent
    ans = state.upstream.probe(provider, url, sent.strip(), state.now())
    resp_headers = {
        "Content-Type": ["application/json"],
        "Date": [state.now().astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")],
    }
    if provider == "antigravity" and auth is not None:
        auth.touch()
    # For the operation log: what the provider answered and whose token was actually sent.
    sent_token = sent.strip()
    request.state.oplog_extra = {
        "upstream_status": ans.status,
        "probed_auth_indexes": [
            a.auth_index for a in state.auths.values() if sent_token and a.access_token == sent_token
        ],
    }
    return gin_json(200, {"status_code": ans.status, "header": resp_headers, "body": ans.body})


def ensure_vertex_key(state: SimState, content: dict[str, Any]) -> None:
    sa = content["service_account"]
    key_id = str(sa.get("private_key_id", ""))
    if key_id and key_id not in state.upstream.access:
        acct = state.upstream.account(
            "vertex", str(sa.get("client_email", "")), project_id=str(content.get("project_id", ""))
        )
        state.upstream.access[key_id] = TokenRecord(acct.key, "vertex")


async def vertex_import(request: Request, state: SimState) -> Response:
    try:
        fields, parts = await read_form(request)
    except Exception:  # not multipart: CPA reports the missing file
        return err(400, "file required")
    raw = next((data for key, _, data in parts if key == "file"), None)
    if raw is None:
        return err(400, "file required")
    try:
        sa = json.loads(raw)
        if not isinstance(sa, dict):
            raise ValueError("service account must be a JSON object")
    except ValueError as exc:
        return err(400, "invalid json", message=str(exc))
    if not sa.get("private_key") or not sa.get("client_email"):
        return err(400, "invalid service account", message="private_key and client_email are required")
    project = str(sa.get("project_id") or "").strip()
    if not project:
        return err(400, "project_id missing")
    location = str(fields.get("location") or request.query_params.get("location") or "us-central1").strip()
    email = str(sa["client_email"])
    name = vertex_file_name(project)
    normalised = dict(sa)
    normalised["private_key"] = str(sa["private_key"]).replace("\\n", "\n")
    content = {
        "service_account": normalised,
        "project_id": project,
        "email": email,
        "location": location,
        "type": "vertex",
        "label": f"{project} ({email})",
        "disabled": False,
    }
    # The import is saved like a login (saveTokenRecord → mergeExistingAuthFileMetadata, vertex_import.go):
    # a re-import of the same project keeps the old file's keys the new record lacks (prefix, note, ...),
    # read from disk, else from the registered auth; FileTokenStore.Save then forces disabled to false.
    existing = state.disk.get(name)
    previous = existing.content if existing is not None else None
    if previous is None and (auth := state.auths.get(name)) is not None:
        previous = auth.metadata
    if previous:
        content = merge_relogin(previous, content)
    ensure_vertex_key(state, content)
    state.write_file(name, content)
    return gin_json(
        200,
        {
            "status": "ok",
            "auth-file": f"{AUTH_DIR}/{name}",
            "project_id": project,
            "email": email,
            "location": location,
        },
    )


async def usage_queue(request: Request, state: SimState) -> Response:
    raw = request.query_params.get("count", "1")
    try:
        count = int(raw)
        if count <= 0:
            raise ValueError
    except ValueError:
        return err(400, "count must be a positive integer")
    items: list[Any] = []
    while state.usage_queue and len(items) < count:
        items.append(json.loads(state.usage_queue.popleft()))
    return gin_json(200, items)
