"""The systemd unit: `systemd-analyze verify` and offline security scoring, plus its agreement with reauthd."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reauthd.cli.common import EXIT_CONFIG, EXIT_LOCKED
from reauthd.config import DEFAULT_CONFIG_PATH, StateConfig, load_config
from reauthd.ops.sdnotify import watchdog_interval_s

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "systemd" / "reauthd.service"
SYSUSERS = ROOT / "deploy" / "systemd" / "reauthd.sysusers.conf"

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (apt-get install systemd)",
)


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every assignment in order (systemd allows repeated keys)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"assignment outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"not an assignment: {line}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    return parse_unit(UNIT.read_text())


def one(unit: dict[str, dict[str, list[str]]], key: str) -> str:
    values = unit["Service"][key]
    assert len(values) == 1, f"{key} set {len(values)} times"
    return values[0]


def _installable_copy(tmp_path: Path, text: str | None = None) -> Path:
    """The unit with ExecStart pointing at an executable that exists here (verify checks it does)."""
    reauthd_bin = Path(sys.executable).parent / "reauthd"
    assert reauthd_bin.exists(), "the reauthd console script is not installed in this environment"
    body = (text if text is not None else UNIT.read_text()).replace("/usr/bin/reauthd ", f"{reauthd_bin} ")
    assert str(reauthd_bin) in body
    copy = tmp_path / "reauthd.service"
    copy.write_text(body)
    return copy


def _verify(path: Path) -> tuple[int, list[str]]:
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    # Only lines about our unit count: a CI image may have unrelated broken units installed.
    ours = [ln for ln in (done.stdout + done.stderr).splitlines() if path.name in ln or str(path) in ln]
    return done.returncode, ours


@needs_systemd_analyze
def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    code, complaints = _verify(_installable_copy(tmp_path))
    assert complaints == []
    assert code == 0


@needs_systemd_analyze
@pytest.mark.parametrize(
    ("broken", "complaint"),
    [
        ("ProtectSystem=strict", "ProtectSystem=strcit"),
        ("WatchdogSec=60s", "WatchdogSec=60s\nWatchDogSecs=60s"),
    ],
)
def test_verify_would_catch_a_broken_unit(tmp_path: Path, broken: str, complaint: str) -> None:
    # Proves the check above can fail: the same verify run on a unit with a typo reports it.
    text = UNIT.read_text()
    assert broken in text
    _code, complaints = _verify(_installable_copy(tmp_path, text.replace(broken, complaint, 1)))
    assert complaints != []


@needs_systemd_analyze
def test_offline_security_exposure_is_low(tmp_path: Path) -> None:
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(_installable_copy(tmp_path))],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    match = re.search(r"Overall exposure level for reauthd\.service: ([0-9.]+)", done.stdout)
    assert match, done.stdout + done.stderr
    assert float(match.group(1)) <= 2.0


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Restart", "on-failure"),
        ("StateDirectory", "reauthd"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("SystemCallArchitectures", "native"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("RestrictNamespaces", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("UMask", "0077"),
        ("KillSignal", "SIGTERM"),
        ("LimitNOFILE", "65536"),  # issue 11: 1,100 slow page clients must not starve detection
    ],
)
def test_unit_settings(unit, key: str, expected: str) -> None:
    assert one(unit, key) == expected


def test_system_call_filter_starts_from_system_service(unit) -> None:
    assert unit["Service"]["SystemCallFilter"][0] == "@system-service"


def test_exec_start_runs_the_daemon_with_the_default_config(unit) -> None:
    assert one(unit, "ExecStart") == f"/usr/bin/reauthd run --config {DEFAULT_CONFIG_PATH}"


def test_state_directory_is_where_the_default_state_lives(unit) -> None:
    assert StateConfig().path.parent == Path("/var/lib") / one(unit, "StateDirectory")


def test_configuration_and_lock_errors_are_not_restarted(unit) -> None:
    prevented = {int(code) for code in one(unit, "RestartPreventExitStatus").split()}
    assert prevented == {EXIT_CONFIG, EXIT_LOCKED}


def test_watchdog_pings_at_half_of_watchdog_sec(unit) -> None:
    seconds = int(one(unit, "WatchdogSec").removesuffix("s"))
    # systemd passes WatchdogSec to the service as WATCHDOG_USEC.
    assert watchdog_interval_s({"WATCHDOG_USEC": str(seconds * 1_000_000)}) == seconds / 2
    # The stop timeout must leave the daemon time to drain; startup waits for every CPA's first answer.
    assert int(one(unit, "TimeoutStopSec").removesuffix("s")) >= 30


def test_load_credential_is_what_the_config_reads(unit, tmp_path: Path, monkeypatch) -> None:
    (credential,) = unit["Service"]["LoadCredential"]
    name, _, source = credential.partition(":")
    assert source.startswith("/etc/reauthd/")
    # systemd copies `source` to $CREDENTIALS_DIRECTORY/<name>; reauthd must find the key there by itself.
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / name).write_text("key-from-systemd-credential\n")
    config = tmp_path / "config.toml"
    config.write_text('[[cpa]]\nname = "main"\nbase_url = "http://127.0.0.1:8317"\n')
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    settings = load_config(config, environ={})
    assert settings.cpa_by_name("main").key.get_secret_value() == "key-from-systemd-credential"


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="systemd-sysusers is not installed")
def test_sysusers_creates_the_unit_user(unit, tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    done = subprocess.run(
        ["systemd-sysusers", f"--root={tmp_path}", "-"],
        input=SYSUSERS.read_text(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    passwd = (tmp_path / "etc" / "passwd").read_text().splitlines()
    users = {line.split(":")[0]: line.split(":") for line in passwd}
    user = one(unit, "User")
    assert user in users
    assert users[user][5] == "/var/lib/reauthd"
    assert users[user][6].endswith("nologin")
    group = (tmp_path / "etc" / "group").read_text()
    assert group.startswith(one(unit, "Group") + ":")
