"""Raising the soft open-files limit at start, as far as the hard limit allows (issue 11: slow clients).

systemd's default soft limit is 1,024 (LimitNOFILE= in deploy/systemd/reauthd.service raises it); the page's
connections, CPA polling, notification delivery and the state database all share that budget.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

#: Enough for web.max_connections page clients plus every outbound client many times over.
WANTED_OPEN_FILES = 65536


@dataclass(frozen=True, slots=True)
class OpenFiles:
    before: int
    now: int
    hard: int


def raise_open_files_limit(wanted: int = WANTED_OPEN_FILES) -> OpenFiles:
    """Set the soft RLIMIT_NOFILE to `wanted` (or the hard limit, if lower); never lowers it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return OpenFiles(soft, soft, hard)
        return OpenFiles(soft, target, hard)
    return OpenFiles(soft, soft, hard)
