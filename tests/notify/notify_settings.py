"""Settings for the notify tests: a state file in the test's folder, one CPA nobody calls, the given notify."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reauthd.config import Settings


def make_settings(tmp_path: Path, **notify: Any) -> Settings:
    return Settings(
        state={"path": tmp_path / "state.db"},
        cpa=[{"name": "main", "base_url": "http://127.0.0.1:9", "management_key": "mgmt-key-secret-0000"}],
        notify=notify,
        web={"public_url": "https://reauthd.example.org"},
    )
