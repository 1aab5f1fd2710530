"""A container HEALTHCHECK command: GET a health URL, exit 0 on 2xx and 1 otherwise (standard library only).

    python -m reauthd.ops.healthcheck http://127.0.0.1:8390/livez

It imports nothing from the rest of reauthd so it starts fast (Docker runs it every interval) and
works even when the daemon's own imports are what is broken. The one-line outcome goes to stdout,
where `docker inspect` shows it; it never prints a response body beyond the first line.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from urllib.parse import urlsplit

DEFAULT_URL = "http://127.0.0.1:8390/livez"
DEFAULT_TIMEOUT_S = 3.0
_BODY_MAX = 200


def _first_line(raw: bytes) -> str:
    text = raw[:_BODY_MAX].decode("utf-8", "replace").strip()
    return text.splitlines()[0] if text else ""


def main(url: str = DEFAULT_URL, timeout_s: float = DEFAULT_TIMEOUT_S) -> int:
    """0 when `url` answers 2xx within `timeout_s`, 1 when it answers otherwise or not at all, 2 on a bad URL."""
    if urlsplit(url).scheme not in ("http", "https"):
        print(f"unhealthy: {url!r} is not an http:// or https:// URL")
        return 2
    # Health endpoints are local; a proxy from the environment must not answer for the daemon.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, method="GET", headers={"User-Agent": "reauthd-healthcheck"})  # noqa: S310
    try:
        with opener.open(request, timeout=timeout_s) as response:
            status = int(response.status)
            line = _first_line(response.read(_BODY_MAX))
    except urllib.error.HTTPError as exc:
        status = exc.code
        line = _first_line(exc.read(_BODY_MAX))
        exc.close()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"unhealthy: no answer from {url} ({reason})")
        return 1
    if 200 <= status < 300:
        print(f"healthy: {status} {line}".rstrip())
        return 0
    print(f"unhealthy: {status} {line}".rstrip())
    return 1


def _cli(argv: Sequence[str]) -> int:
    if len(argv) > 2 or any(a in ("-h", "--help") for a in argv):
        print("usage: python -m reauthd.ops.healthcheck [URL] [TIMEOUT_SECONDS]")
        return 2
    url = argv[0] if argv else DEFAULT_URL
    try:
        timeout = float(argv[1]) if len(argv) > 1 else DEFAULT_TIMEOUT_S
    except ValueError:
        print(f"unhealthy: timeout {argv[1]!r} is not a number of seconds")
        return 2
    return main(url, timeout)


if __name__ == "__main__":
    sys.exit(_cli(sys.argv[1:]))
