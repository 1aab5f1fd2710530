"""The version CPA reports (X-CPA-VERSION on every management answer, handler.go Middleware): a major
version reauthd was not checked against is said once in the log and in /readyz, and reauthd carries on."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from reauthd.cpa.client import CPAClient
from reauthd.cpa.wire import CPAVersion
from reauthd.ops.health import Health
from reauthd.sim import SimServer

KEY = "sim-key-version-0123"


@pytest.mark.parametrize(
    ("version", "major", "noted"),
    [("v7.2.140", 7, False), ("7.3.0", 7, False), ("v8.0.1", 8, True), ("dev", None, False)],
)
def test_major_and_note(version: str, major: int | None, noted: bool) -> None:
    v = CPAVersion(version)
    assert v.major == major
    note = v.unchecked_note("main")
    assert (note is not None) is noted
    if note is not None:
        assert "v8.0.1" in note and "not checked" in note and "v7" in note


@pytest.mark.parametrize(("version", "noted"), [("v8.0.1", True), ("v7.2.140-sim", False)])
async def test_unchecked_major_is_said_once_and_readiness_holds(version: str, noted: bool) -> None:
    async with (
        SimServer(KEY, version=version) as sim,
        CPAClient("main", sim.base_url, KEY, timeout=10) as client,
    ):
        with capture_logs() as logs:
            for _ in range(3):
                await client.list_auth_files()
        warnings = [e for e in logs if e["event"] == "cpa.version.unchecked"]
        assert len(warnings) == (1 if noted else 0)
        health = Health(cpas=["main"], store_check=lambda: True)
        health.cpa_snapshot(client.health)
        report = await health.ready()
        assert report.ok
        if noted:
            assert report.text.startswith("ok\nnote: CPA 'main' reports version v8.0.1")
            assert (await health.summary())["notes"] == list(report.notes)
        else:
            assert report.text == "ok" and report.notes == ()
