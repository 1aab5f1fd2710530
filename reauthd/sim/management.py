"""The auth-file routes of `/v0/management` and the route table, answering exactly as CPA does.

Status codes, error strings and the order of checks follow shared/cpa-contract.md §2-§3.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from reauthd.sim.api_tools import api_call, ensure_vertex_key, usage_queue, vertex_import
from reauthd.sim.auths import SimAuth, parse_last_refresh
from reauthd.sim.oauth_routes import auth_url_handler, cancel_session, get_auth_status, oauth_callback
from reauthd.sim.responses import Handler, err, gin_json, read_form, read_json
from reauthd.sim.state import SimState
from reauthd.sim.upstream import PROVIDER_MODELS

# -- auth files ------------------------------------------------------------------------------------


async def list_auth_files(request: Request, state: SimState) -> Response:
    state.counters.list_requests += 1
    q = request.query_params
    body = state.listing(q.get("name", "").strip(), q.get("auth_index", "").strip())
    return Response(body, 200, media_type="application/json; charset=utf-8")


def _check_name(name: str) -> Response | None:
    if not name or "/" in name or "\\" in name or (len(name) > 1 and name[1] == ":"):
        return err(400, "invalid name")
    if not name.lower().endswith(".json"):
        return err(400, "name must end with .json")
    return None


async def download(request: Request, state: SimState) -> Response:
    name = request.query_params.get("name", "").strip()
    bad = _check_name(name)
    if bad is not None:
        return bad
    disk = state.disk.get(name)
    if disk is None:
        return err(404, "file not found")
    return Response(
        disk.raw,
        200,
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def _store_upload(state: SimState, name: str, raw: bytes) -> str | None:
    """Validate then write (invalid JSON never overwrites), and register or update at once."""
    if not name.lower().endswith(".json"):
        return "file must be .json"
    try:
        content = json.loads(raw)
        if not isinstance(content, dict):
            raise ValueError("json: cannot unmarshal non-object into auth file")
        if "weight" in content and content["weight"] is not None and not isinstance(content["weight"], int):
            raise ValueError("weight must be an integer")
    except ValueError as exc:
        return f"invalid auth file: {exc}"
    state.write_file(name, content, reload=False)
    auth = state.auths.get(name)
    kept = auth.last_refreshed_at if auth is not None else None
    if auth is None:
        auth = state.register(name, content)
    else:
        auth.load(content, state.now())
    # auth_files_crud.go: the uploaded JSON's last-refresh key (extractLastRefreshTimestamp), else the
    # existing auth's LastRefreshedAt; the upload is the only place the file's own key reaches the listing.
    auth.last_refreshed_at = parse_last_refresh(content) or kept
    auth.touch()
    if content.get("type") == "vertex" and isinstance(content.get("service_account"), dict):
        ensure_vertex_key(state, content)
    return None


async def upload(request: Request, state: SimState) -> Response:
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        try:
            _, parts = await read_form(request)
        except Exception as exc:  # any parse failure is CPA's "invalid multipart form"
            return err(400, f"invalid multipart form: {exc}")
        if not parts:
            return err(400, "no files uploaded")
        results: list[tuple[str, str | None]] = []
        for _, filename, data in sorted(parts, key=lambda p: p[0]):
            name = filename.rsplit("/", 1)[-1]
            results.append((name, _store_upload(state, name, data)))
        if len(results) == 1:
            name, problem = results[0]
            if problem is None:
                return gin_json(200, {"status": "ok"})
            return err(400 if problem == "file must be .json" else 500, problem)
        ok = [n for n, p in results if p is None]
        failed = [{"name": n, "error": p} for n, p in results if p is not None]
        if failed:
            return gin_json(207, {"status": "partial", "uploaded": len(ok), "files": ok, "failed": failed})
        return gin_json(200, {"status": "ok", "uploaded": len(ok), "files": ok})
    name = request.query_params.get("name", "").strip()
    bad = _check_name(name)
    if bad is not None:
        return bad
    problem = _store_upload(state, name, await request.body())
    if problem is not None:
        return err(500, problem)
    return gin_json(200, {"status": "ok"})


PLUGIN_VIRTUAL = "plugin virtual auth cannot be modified directly; edit or delete the source auth file"


def is_virtual_child(auth: SimAuth, name: str) -> bool:
    """A plugin's virtual auth addressed by any name but its source file's (isPluginVirtualSourceDelete)."""
    if auth.virtual_source is None:
        return False
    return name.strip().rsplit("/", 1)[-1].casefold() != auth.virtual_source.casefold()


async def delete(request: Request, state: SimState) -> Response:
    q = request.query_params
    if q.get("all", "").lower() in ("true", "1", "*"):
        names = list(state.disk)
        for name in names:
            del state.disk[name]
            state.remove_auth(name)
        return gin_json(200, {"status": "ok", "deleted": len(names)})
    names = [n.strip() for n in q.getlist("name")]
    if not names:
        try:
            body = await read_json(request)
        except ValueError:
            return err(400, "invalid request body")
        if isinstance(body, dict):
            names = [body["name"]] if isinstance(body.get("name"), str) else list(body.get("names") or [])
        elif isinstance(body, list):
            names = body
        if not all(isinstance(n, str) for n in names):
            return err(400, "invalid request body")
    if not names:
        return err(400, "invalid name")
    done, failed = [], []
    for raw in names:
        name = raw.strip()
        if not name or "/" in name or "\\" in name:
            problem: tuple[int, str] | None = (400, "invalid name")
        else:
            auth = state.auth_by_name(name)
            file_name = auth.name if auth is not None else name
            if auth is not None and is_virtual_child(auth, name):
                problem = (409, PLUGIN_VIRTUAL)
            elif file_name not in state.disk:
                problem = (404, "auth file not found")
            else:
                del state.disk[file_name]
                state.remove_auth(file_name)
                problem = None
        if problem is None:
            done.append(name)
        else:
            failed.append((name, problem))
    if len(names) == 1:
        return gin_json(200, {"status": "ok"}) if done else err(*failed[0][1])
    if failed:
        return gin_json(
            207,
            {
                "status": "partial",
                "deleted": len(done),
                "files": done,
                "failed": [{"name": n, "error": p[1]} for n, p in failed],
            },
        )
    return gin_json(200, {"status": "ok", "deleted": len(done), "files": done})


async def patch_status(request: Request, state: SimState) -> Response:
    try:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise ValueError
        # gin's ShouldBindJSON: a wrongly typed field is a bind error, not a missing one.
        typed = {"name": str, "auth_index": str, "disabled": bool}
        if any(body.get(k) is not None and not isinstance(body[k], t) for k, t in typed.items()):
            raise ValueError
    except ValueError:
        return err(400, "invalid request body")
    name = str(body.get("name") or "").strip()
    if not name:
        return err(400, "name is required")
    if body.get("disabled") is None:
        return err(400, "disabled is required")
    auth = state.auth_by_name(name)
    index = str(body.get("auth_index") or "").strip()
    if auth is None or (index and auth.auth_index != index):
        return err(404, "auth file not found")
    if is_virtual_child(auth, name):
        return err(409, PLUGIN_VIRTUAL)
    disabled = bool(body["disabled"])
    auth.disabled = disabled
    auth.clear_failures()
    auth.status = "disabled" if disabled else "active"
    auth.status_message = "disabled via management API" if disabled else ""
    auth.updated_at = state.now()
    auth.touch()
    state.persist_runtime(auth)
    return gin_json(200, {"status": "ok", "disabled": disabled})


KEBAB: dict[str, str] = {
    "proxy-url": "proxy_url",
    "excluded-models": "excluded_models",
    "model-aliases": "model_aliases",
    "request-retry": "request_retry",
    "disable-cooling": "disable_cooling",
    "fingerprint-profile": "fingerprint_profile",
    "refresh-interval-seconds": "refresh_interval_seconds",
}


def _normalise_field_keys(body: dict[str, Any]) -> dict[str, Any]:
    """normalizeAuthFilePatchFields: canonical (snake_case) root keys; when an alias and the canonical
    spelling collide the canonical one wins silently, two equal spellings are an error."""
    out: dict[str, Any] = {}
    original: dict[str, str] = {}
    canonical: dict[str, bool] = {}
    for key, value in body.items():
        parts = [p.strip() for p in key.strip().split(".")]
        root = parts[0]
        parts[0] = KEBAB.get(root, root)
        path = ".".join(parts)
        is_canonical = root == parts[0]
        if path in original:
            if canonical[path] != is_canonical:
                if is_canonical:
                    out[path], original[path], canonical[path] = value, key, True
                continue
            raise ValueError(f'auth file fields "{original[path]}" and "{key}" refer to the same field')
        out[path], original[path], canonical[path] = value, key, is_canonical
    return out


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


async def patch_fields(request: Request, state: SimState) -> Response:
    """auth_files_fields.go PatchAuthFileFields, in its order of checks. Only `name` is taken out of
    the body: every other key (even `auth_index`) is written into the file's metadata, as CPA does."""
    try:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise ValueError
    except ValueError:
        return err(400, "invalid request body")
    raw_name = body.pop("name", None)
    if not isinstance(raw_name, str) or not raw_name.strip():
        return err(400, "name is required")
    try:
        fields = _normalise_field_keys(body)
    except ValueError as exc:
        return err(400, str(exc))
    for path, value in fields.items():
        root = path.split(".", 1)[0].strip()
        if root == "request_retry" and path != root:
            return err(400, "request_retry does not support nested fields")
        if path == "request_retry" and value is not None and not _is_int(value):
            return err(400, "request_retry must be an integer or null")
    auth = state.auth_by_name(raw_name.strip())
    if auth is None:
        return err(404, "auth file not found")
    if auth.virtual_source is not None:  # fields of a plugin's virtual auth never change directly
        return err(409, PLUGIN_VIRTUAL)
    # CPA edits a clone (Manager.GetByID returns auth.Clone(), which copies the top-level metadata map)
    # and calls authManager.Update only at the end: a 400 on any key leaves the auth and its file as they
    # were, whatever keys came before it. Like Clone, nested maps are shared (a dot path may still reach
    # the live metadata); only the top level is copied.
    md = dict(auth.metadata)
    for path, value in fields.items():
        if not path.strip():
            return err(400, "field name is required")
        root = path.split(".", 1)[0].strip()
        if path == "weight":
            if value is None:
                md.pop("weight", None)
            elif not _is_int(value):
                return err(400, "weight must be an integer")
            else:
                md["weight"] = value
        elif root == "weight":
            return err(400, "weight does not support nested fields")
        elif path == "request_retry":
            if value is None or value < 0:
                md.pop("request_retry", None)
            else:
                md["request_retry"] = value
        elif (
            path == "headers" and isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        ):
            headers = {k: v for k, v in (md.get("headers") or {}).items()}
            for hk, hv in value.items():
                if not hk.strip():
                    continue
                if not hv.strip():
                    headers.pop(hk.strip(), None)
                else:
                    headers[hk.strip()] = hv.strip()
            if headers:
                md["headers"] = headers
            else:
                md.pop("headers", None)
        else:
            parts = [p.strip() for p in path.split(".")]
            if any(not p for p in parts):
                # setAuthFileMetadataValue's own error (auth_files_fields.go); "invalid field <k>" is only
                # for a value that does not decode, which cannot happen once the whole body parsed.
                return err(400, f"invalid field path: {path}")
            node = md
            for part in parts[:-1]:
                nxt = node.get(part)
                if not isinstance(nxt, dict):
                    nxt = {}
                    node[part] = nxt
                node = nxt
            node[parts[-1]] = value
    if not fields:
        return err(400, "no fields to update")
    auth.metadata = md
    if isinstance(fields.get("disabled"), bool):
        auth.disabled = fields["disabled"]
        auth.status = "disabled" if auth.disabled else "active"
        auth.status_message = "disabled via management API" if auth.disabled else ""
    auth.updated_at = state.now()
    auth.touch()
    # authManager.Update persists the whole in-memory record; the watcher then reloads it (§3, §12 trap).
    content = dict(md)
    content["disabled"] = auth.disabled
    state.write_file(auth.name, content)
    return gin_json(200, {"status": "ok"})


async def models(request: Request, state: SimState) -> Response:
    name = request.query_params.get("name", "").strip()
    if not name:
        return err(400, "name is required")
    auth = state.auth_by_name(name)
    if auth is None:
        return gin_json(200, {"models": []})
    return gin_json(
        200,
        {
            "models": [
                {"id": m, "display_name": m, "type": auth.provider, "owned_by": auth.provider}
                for m in PROVIDER_MODELS.get(auth.provider, ())
            ]
        },
    )


async def reset_quota(request: Request, state: SimState) -> Response:
    try:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise ValueError
    except ValueError:
        return err(400, "invalid request body")
    index = str(body.get("auth_index") or "").strip()
    if not index:
        return err(400, "auth_index is required")
    auth = state.by_index.get(index)
    if auth is None:
        return err(404, "auth not found")
    reset = sorted(auth.model_states)
    auth.clear_failures()
    if not auth.disabled:
        auth.status, auth.status_message = "active", ""
    auth.touch()
    return gin_json(200, {"status": "ok", "auth_index": index, "models": reset})


ROUTES: dict[tuple[str, str], Handler] = {
    ("GET", "/auth-files"): list_auth_files,
    ("GET", "/auth-files/download"): download,
    ("POST", "/auth-files"): upload,
    ("DELETE", "/auth-files"): delete,
    ("PATCH", "/auth-files/status"): patch_status,
    ("PATCH", "/auth-files/fields"): patch_fields,
    ("GET", "/auth-files/models"): models,
    ("POST", "/reset-quota"): reset_quota,
    ("GET", "/get-auth-status"): get_auth_status,
    ("DELETE", "/oauth-session"): cancel_session,
    ("POST", "/api-call"): api_call,
    ("POST", "/vertex/import"): vertex_import,
    ("GET", "/usage-queue"): usage_queue,
}
for _p in ("anthropic", "codex", "antigravity", "kimi", "xai"):
    ROUTES[("GET", f"/{_p}-auth-url")] = auth_url_handler(_p)
UNAUTHENTICATED: dict[tuple[str, str], Handler] = {
    ("GET", "/oauth-callback"): oauth_callback,
    ("POST", "/oauth-callback"): oauth_callback,
}


def route_for(method: str, sub: str, state: SimState) -> Handler | None:
    found = ROUTES.get((method, sub))
    if found is None and method == "GET" and sub.endswith("-auth-url"):
        plugin = sub[1:].removesuffix("-auth-url")
        if plugin in state.settings.plugin_providers:
            return auth_url_handler(plugin)
    return found
