"""Configuration: the public key names, environment overrides, secrets from files, one-sentence errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from reauthd.config import ConfigError, effective_config, load_config, secret_values

ROOT = Path(__file__).resolve().parents[1]

MINIMAL = """
[[cpa]]
name = "main"
base_url = "http://127.0.0.1:8317"
management_key = "KEY-CANARY-7f3a"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_example_config_is_valid_and_documents_every_public_key(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("example-key\n")
    text = (
        (ROOT / "config.example.toml")
        .read_text()
        .replace("/etc/reauthd/cpa-main-management-key", str(key_file))
    )
    settings = load_config(write(tmp_path, text), environ={})
    assert settings.cpa[0].name == "main"
    assert settings.cpa[0].key.get_secret_value() == "example-key"
    for key in (
        "[state]",
        "path",
        "[[cpa]]",
        "base_url",
        "management_key",
        "management_key_file",
        "poll_interval_s",
        "[notify]",
        "urls",
        "group_window_s",
        "listen",
        "public_url",
        "policy",
    ):
        assert key in text


def test_defaults(tmp_path: Path) -> None:
    settings = load_config(write(tmp_path, MINIMAL), environ={})
    assert settings.detect.poll_interval_s == 60
    assert settings.retire.policy == "delete"
    assert settings.notify.group_window_s == 30
    assert settings.state.path == Path("/var/lib/reauthd/state.db")
    assert settings.web.listen == "127.0.0.1:8390"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            MINIMAL + "[detect]\npol_interval_s = 5\n",
            "unknown key 'pol_interval_s' in [detect] (did you mean 'poll_interval_s'?)",
        ),
        (MINIMAL + "[detect]\npoll_interval_s = 'soon'\n", "[detect] poll_interval_s"),
        (MINIMAL + MINIMAL, "[[cpa]] #2 has the same name as [[cpa]] #1"),
        (
            MINIMAL.replace("http://127.0.0.1:8317", "ftp://cpa"),
            "[[cpa]] #1 base_url: base_url must be an http:// or https:// URL",
        ),
        (
            MINIMAL.replace('management_key = "KEY-CANARY-7f3a"', ""),
            "needs management_key or management_key_file",
        ),
        (MINIMAL + "[retire]\npolicy = 'shred'\n", "[retire] policy"),
        (MINIMAL + "[web]\nlisten = 'nowhere'\n", '[web] listen: must be "host:port"'),
        ("[state]\npath = '/x'\n", "at least one [[cpa]] table"),
        ("[[cpa]\nname=", "not valid TOML"),
    ],
)
def test_bad_config_gives_one_sentence_naming_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    message = str(info.value)
    assert message.startswith(str(path))
    assert expected in message
    assert "\n" not in message
    assert "KEY-CANARY" not in message


def test_missing_file_is_an_error_not_silently_defaults(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_config(tmp_path / "absent.toml", environ={})


def test_environment_overrides_sections_and_cpa_by_name(tmp_path: Path) -> None:
    env = {
        "REAUTHD_DETECT__POLL_INTERVAL_S": "30",
        "REAUTHD_CPA__main__MANAGEMENT_KEY": "from-env",
        "REAUTHD_RETIRE__POLICY": "keep",
        "REAUTHD_NOTIFY__URLS": '["json://127.0.0.1:1/x"]',
    }
    settings = load_config(write(tmp_path, MINIMAL), environ=env)
    assert settings.detect.poll_interval_s == 30
    assert settings.cpa[0].key.get_secret_value() == "from-env"
    assert settings.retire.policy == "keep"
    assert [u.get_secret_value() for u in settings.notify.urls] == ["json://127.0.0.1:1/x"]


def test_environment_naming_an_unknown_cpa_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="names \\[\\[cpa\\]\\] 'other'"):
        load_config(write(tmp_path, MINIMAL), environ={"REAUTHD_CPA__other__MANAGEMENT_KEY": "x"})


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("REAUTHD_DETECT__POLL_INTERVALL_S", "30", "unknown key 'poll_intervall_s' in [detect]"),
        ("REAUTHD_DETECT__POLL_INTERVAL_S", "1", "[detect] poll_interval_s: Input should be greater"),
        ("REAUTHD_CPA__main__TIMEOUT_S", "-1", "[[cpa]] #1 timeout_s: Input should be greater than 0"),
    ],
)
def test_a_bad_environment_override_is_named_by_its_variable(
    tmp_path: Path, variable: str, value: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, MINIMAL), environ={variable: value})
    message = str(caught.value)
    assert expected in message and f"(set by the environment variable {variable})" in message


def test_a_file_error_is_not_blamed_on_an_unrelated_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(
            write(tmp_path, MINIMAL + "[detect]\npoll_interval_s = 1\n"),
            environ={"REAUTHD_RETIRE__POLICY": "keep"},
        )
    assert "environment variable" not in str(caught.value)


@pytest.mark.parametrize("key", [" KEY-CANARY-7f3a", "KEY-CANARY-7f3a ", "KEY-CANARY-7f3a\n"])
def test_a_management_key_with_surrounding_whitespace_is_refused_without_echoing_it(
    tmp_path: Path, key: str
) -> None:
    # CPA compares the key exactly: sending it would be one failed attempt toward a ban.
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, MINIMAL), environ={"REAUTHD_CPA__main__MANAGEMENT_KEY": key})
    assert "starts or ends with a space or line break" in str(caught.value)
    assert "CANARY" not in str(caught.value)


def test_a_refused_key_is_never_retried_by_default(tmp_path: Path) -> None:
    from reauthd.cpa.factory import client_from_config

    settings = load_config(write(tmp_path, MINIMAL), environ={})
    assert settings.cpa[0].key_rejected_pause_s == 0
    assert client_from_config(settings.cpa[0]).gate.pause_after_rejection is None
    paused = load_config(write(tmp_path, MINIMAL + "key_rejected_pause_s = 10800\n"), environ={})
    assert client_from_config(paused.cpa[0]).gate.pause_after_rejection is not None


def test_key_from_file_and_from_systemd_credentials(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("file-key\n")
    text = MINIMAL.replace('management_key = "KEY-CANARY-7f3a"', f'management_key_file = "{key_file}"')
    assert load_config(write(tmp_path, text), environ={}).cpa[0].key.get_secret_value() == "file-key"

    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "cpa-main-management-key").write_text("cred-key")
    bare = MINIMAL.replace('management_key = "KEY-CANARY-7f3a"', "")
    monkey_env = {"CREDENTIALS_DIRECTORY": str(creds)}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CREDENTIALS_DIRECTORY", monkey_env["CREDENTIALS_DIRECTORY"])
        assert load_config(write(tmp_path, bare), environ={}).cpa[0].key.get_secret_value() == "cred-key"


def test_unreadable_key_file_is_named(tmp_path: Path) -> None:
    text = MINIMAL.replace('management_key = "KEY-CANARY-7f3a"', f'management_key_file = "{tmp_path}/nope"')
    with pytest.raises(ConfigError, match="cannot read management_key file"):
        load_config(write(tmp_path, text), environ={})


def test_effective_config_masks_every_secret(tmp_path: Path) -> None:
    text = (
        MINIMAL
        + '[notify]\nurls = ["tgram://BOT-CANARY-1/chat"]\n[web]\noperator_token = "OP-CANARY-2-0123456789abcdef0123456789"\n'
    )
    settings = load_config(write(tmp_path, text), environ={})
    rendered = repr(effective_config(settings))
    for canary in ("KEY-CANARY", "BOT-CANARY", "OP-CANARY"):
        assert canary not in rendered
    assert {"KEY-CANARY-7f3a", "tgram://BOT-CANARY-1/chat", "OP-CANARY-2-0123456789abcdef0123456789"} <= set(
        secret_values(settings)
    )


def test_check_config_command(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    ok = subprocess.run(
        [sys.executable, "-m", "reauthd", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert 'name = "main"' in ok.stdout
    assert "KEY-CANARY" not in ok.stdout + ok.stderr

    bad = write(tmp_path, MINIMAL + "[detect]\nbogus = 1\n")
    fail = subprocess.run(
        [sys.executable, "-m", "reauthd", "check-config", "--config", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert fail.returncode == 2
    assert fail.stderr.strip().count("\n") == 0
    assert "unknown key 'bogus' in [detect]" in fail.stderr
    assert "Traceback" not in fail.stderr


@pytest.mark.parametrize("token", ["x", "short-CANARY-token", "y" * 31])
def test_a_short_operator_token_is_refused_with_how_to_make_one(tmp_path: Path, token: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(write(tmp_path, MINIMAL + f'[web]\noperator_token = "{token}"\n'), environ={})
    message = str(refused.value)
    assert "at least 32 characters" in message and "secrets.token_urlsafe(32)" in message
    assert token not in message
    secret = tmp_path / "token"
    secret.write_text("z" * 32 + "\n")
    ok = load_config(write(tmp_path, MINIMAL + f'[web]\noperator_token_file = "{secret}"\n'), environ={})
    assert ok.web.operator_token is not None and ok.web.operator_token.get_secret_value() == "z" * 32


@pytest.mark.parametrize(
    ("section", "url"),
    [
        ("cpa", "http://admin:CANARY-pw@127.0.0.1:8317"),
        ("cpa", "https://CANARY-user@cpa.example.org"),
        ("web", "https://u:CANARY-pw@reauth.example.org/x"),
    ],
)
def test_credentials_in_urls_are_refused_without_echoing_them(tmp_path: Path, section: str, url: str) -> None:
    if section == "cpa":
        text = MINIMAL.replace('base_url = "http://127.0.0.1:8317"', f'base_url = "{url}"')
    else:
        text = MINIMAL + f'[web]\npublic_url = "{url}"\n'
    with pytest.raises(ConfigError) as refused:
        load_config(write(tmp_path, text), environ={})
    assert "must not contain a user name or password" in str(refused.value)
    assert "CANARY" not in str(refused.value)


def test_check_config_warns_when_the_idle_sweep_cannot_keep_its_interval(tmp_path: Path) -> None:
    """Issue 12: 50,000 credentials every 6 h need 2.3 probes/s; the default rate of 2 leaves the sweep
    1.6. check-config says so (and what to change) on stderr, still exits 0; 10,000 fit."""
    path = write(tmp_path, MINIMAL)

    def check(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "reauthd", "check-config", "--config", str(path), *extra],
            capture_output=True,
            text=True,
            check=False,
        )

    fits = check("--credentials", "10000")
    assert fits.returncode == 0 and fits.stderr == "", fits.stderr
    tight = check("--credentials", "50000")
    assert tight.returncode == 0 and 'name = "main"' in tight.stdout
    assert tight.stderr == (
        "reauthd: warning: [detect] probe_interval_s = 21600 cannot be kept for 50,000 credentials: "
        "probe_rate_per_s = 2 leaves the idle sweep 1.6 probes/s, so each credential would be probed about "
        "every 8.7 h (at most 34,560 credentials fit 6.0 h); reauthd stretches the sweep and says so in "
        "/readyz, or raise probe_rate_per_s to 2.9 or probe_interval_s to 31250\n"
    )
    assert check("--credentials", "-1").returncode == 2
