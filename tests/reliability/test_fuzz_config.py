"""Hypothesis against configuration parsing: any file (TOML-shaped or not) and any REAUTHD_* environment
give `load_config` either Settings or a ConfigError of one line that never echoes a secret."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from reauthd.config import ConfigError, Settings, load_config

CANARY = "cfg-CANARY-3d9a1f77"

KEYS: dict[str, list[str]] = {
    "state": ["path"],
    "detect": ["poll_interval_s", "error_stream", "probe_interval_s", "probe_concurrency", "probe_rate_per_s",
               "include_disabled", "probes"],
    "notify": ["urls", "routes", "escalation", "group_window_s", "reminder_interval_s", "max_reminders",
               "quiet_hours", "retry_max_attempts"],
    "web": ["listen", "public_url", "operator_token", "operator_token_file"],
    "retire": ["policy"],
    "tasks": ["expire_after_s"],
    "log": ["level", "format"],
}  # fmt: skip
CPA_KEYS = ["name", "base_url", "management_key", "management_key_file", "proxy_api_key", "verify_models",
            "key_rejected_pause_s", "timeout_s", "is_webui"]  # fmt: skip

SCALARS = st.one_of(
    st.text(max_size=30),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.sampled_from(
        ["http://127.0.0.1:8317", "https://cpa.example.org/x", "127.0.0.1:8390", "[::1]:80", "delete", "debug",
         "json", "22:00", "25:99", "Europe/Paris", "Mars/Olympus", "/nonexistent/key", "/dev/null", "/",
         "json://hook.example/tok", CANARY, "", "a\nb"]
    ),
)  # fmt: skip
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(st.text(max_size=12), st.sampled_from(["a\nb", "gpt-5"])), inner, max_size=4
        ),
    ),
    max_leaves=8,
)


def toml_key(key: str) -> str:
    bare = key and key.replace("_", "").replace("-", "").isalnum() and key.isascii()
    return key if bare else toml_value(key)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return (
            "nan"
            if math.isnan(value)
            else ("inf" if value > 0 else "-inf")
            if math.isinf(value)
            else repr(value)
        )
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):  # a TOML basic string: JSON's escapes, plus DEL which TOML wants escaped
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


# A sensible value per key: most keys get one, so the odd value elsewhere is what validation trips over.
GOOD: dict[str, Any] = {
    "name": "main", "base_url": "http://127.0.0.1:8317", "management_key": CANARY, "timeout_s": 10,
    "verify_models": {"vertex": "gemini-2.5-flash"}, "is_webui": False, "path": "/tmp/reauthd-fuzz/state.db",
    "poll_interval_s": 60, "probe_interval_s": 3600, "urls": [f"json://127.0.0.1/{CANARY}"], "group_window_s": 30,
    "listen": "127.0.0.1:8390", "public_url": "https://reauthd.example.org", "policy": "delete", "level": "info",
    "format": "json", "operator_token": CANARY, "expire_after_s": 86400, "max_reminders": 3,
}  # fmt: skip


def value_for(draw: st.DrawFn, key: str) -> Any:
    if key in GOOD and draw(st.integers(0, 5)) > 0:
        return GOOD[key]
    return draw(VALUES)


@st.composite
def documents(draw: st.DrawFn) -> str:
    """Mostly well-formed TOML over the real keys (with wrong, odd or secret values), sometimes broken."""
    lines: list[str] = []
    for number in range(draw(st.integers(0, 3))):
        lines.append("[[cpa]]")
        keys = ["name", "base_url", "management_key"] if draw(st.booleans()) else []
        keys += draw(st.lists(st.sampled_from([*CPA_KEYS, "nmae", "x"]), max_size=5, unique=True))
        for key in dict.fromkeys(keys):
            value = value_for(draw, key)
            value = f"cpa{number}" if value == "main" and number else value
            lines.append(f"{toml_key(key)} = {toml_value(value)}")
    for section in draw(st.lists(st.sampled_from([*KEYS, "bogus"]), max_size=5, unique=True)):
        lines.append(f"[{section}]")
        for key in draw(
            st.lists(st.sampled_from([*KEYS.get(section, []), "typo_key"]), max_size=4, unique=True)
        ):
            lines.append(f"{toml_key(key)} = {toml_value(value_for(draw, key))}")
    text = "\n".join(lines) + "\n"
    mangle = draw(st.sampled_from(["none"] * 9 + ["truncate", "insert", "garbage"]))
    if mangle == "truncate" and text:
        text = text[: draw(st.integers(0, len(text)))]
    elif mangle == "insert":
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.text(max_size=10)) + text[at:]
    elif mangle == "garbage":
        text = draw(st.text(max_size=200))
    return text


# Known bug (test_env_override_below_a_scalar_is_a_config_error): an override nested below a key that holds
# a plain value crashes. Until fixed the fuzzer leaves those names out; set False once fixed.
SKIP_NESTED_OVER_SCALAR = True
NESTED = ["REAUTHD_LOG__LEVEL__X", "REAUTHD_DETECT__PROBES__X__URL", "REAUTHD_RETIRE__POLICY__A__B"]
ENV_NAMES = ["REAUTHD_LOG__LEVEL", "REAUTHD_CPA__main__TIMEOUT_S", "REAUTHD_CPA__0__NAME", "REAUTHD_CPA__9__NAME",
             "REAUTHD_WEB__LISTEN", "REAUTHD_NOTIFY__URLS", "REAUTHD_STATE", "REAUTHD___",
             "REAUTHD_CPA__MAIN__MANAGEMENT_KEY", *([] if SKIP_NESTED_OVER_SCALAR else NESTED)]  # fmt: skip
ENVIRON = st.dictionaries(
    st.sampled_from(ENV_NAMES),
    st.one_of(st.text(max_size=20), st.sampled_from(["1", "[1, 2]", "{a = 1}", "true", CANARY, '"x"'])),
    max_size=3,
)  # fmt: skip


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    document=st.one_of(
        documents(), documents(), documents(), st.binary(max_size=300).map(lambda b: b.decode("latin-1"))
    ),
    environ=st.one_of(st.just({}), ENVIRON),
)
def test_load_config_gives_settings_or_one_line_config_error(document: str, environ: dict[str, str]) -> None:
    """Whatever the file and the environment hold: Settings, or a ConfigError whose message is one line
    and does not repeat a secret-looking value; never another exception."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.toml"
        path.write_bytes(document.encode("utf-8", "surrogatepass"))
        try:
            result = load_config(path, environ=environ)
        except ConfigError as exc:
            message = str(exc)
            event("ConfigError: " + message.split(": ", 1)[-1].split(" ", 1)[0])
            assert message and "\n" not in message and "\r" not in message, repr(message)
            assert CANARY not in message, message
            return
    event("Settings")
    assert isinstance(result, Settings)


def test_env_override_below_a_scalar_is_a_config_error(tmp_path: Path) -> None:
    """An environment override that nests below a plain value is refused with one sentence."""
    path = tmp_path / "config.toml"
    path.write_text('[[cpa]]\nname = "main"\nbase_url = "http://127.0.0.1:8317"\nmanagement_key = "k"\n'
                    '[log]\nlevel = "info"\n')  # fmt: skip
    with pytest.raises(ConfigError) as refused:
        load_config(path, environ={"REAUTHD_LOG__LEVEL__X": "1"})
    assert "\n" not in str(refused.value)


def test_error_about_an_odd_dict_key_stays_on_one_line(tmp_path: Path) -> None:
    """A ConfigError is one line even when the offending key itself contains a line break."""
    path = tmp_path / "config.toml"
    path.write_text('[[cpa]]\nname = "main"\nbase_url = "http://127.0.0.1:8317"\nmanagement_key = "k"\n'
                    'verify_models = {"a\\nb" = 1}\n')  # fmt: skip
    with pytest.raises(ConfigError) as refused:
        load_config(path, environ={})
    assert "\n" not in str(refused.value), repr(str(refused.value))
