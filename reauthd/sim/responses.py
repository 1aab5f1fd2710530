"""gin-like response helpers and body readers shared by the simulator's HTTP handlers."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response

from reauthd.sim.state import SimState
from reauthd.sim.upstream import dumps

Handler = Callable[[Request, SimState], Awaitable[Response]]


def gin_json(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    """gin's c.JSON: compact JSON with a charset."""
    return Response(
        dumps(payload).encode(), status, headers=headers, media_type="application/json; charset=utf-8"
    )


def err(status: int, error: str, **extra: Any) -> Response:
    return gin_json(status, {"error": error, **extra})


async def read_form(request: Request) -> tuple[dict[str, str], list[tuple[str, str, bytes]]]:
    """Read a form fully (text fields, and (field, filename, bytes) per file) and close its temp files."""
    form = await request.form()
    try:
        fields: dict[str, str] = {}
        files: list[tuple[str, str, bytes]] = []
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                files.append((key, value.filename or "", await value.read()))
            else:
                fields.setdefault(key, value)
        return fields, files
    finally:
        await form.close()


async def read_json(request: Request) -> Any:
    raw = await request.body()
    return json.loads(raw)
