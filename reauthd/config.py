"""Configuration: one TOML file, environment overrides, secrets from files — validated into typed settings.

Key names here are reauthd's public interface (operators script against them): add keys, never rename.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from datetime import time
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

DEFAULT_CONFIG_PATH = Path("/etc/reauthd/config.toml")
ENV_PREFIX = "REAUTHD_"


class ConfigError(Exception):
    """A configuration problem, worded as one sentence naming the file, the key and the problem."""


class _Section(BaseModel):
    # A typo'd key is an error, not silently ignored: operators must learn their setting did nothing.
    model_config = ConfigDict(extra="forbid", frozen=True)


def _read_secret_file(path: Path, what: str) -> SecretStr:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"cannot read {what} file {path}: {exc.strerror or exc}") from None
    if not value:
        raise ValueError(f"{what} file {path} is empty")
    return SecretStr(value)


def _credentials_dir_secret(*names: str) -> SecretStr | None:
    """systemd's LoadCredential= puts secrets in $CREDENTIALS_DIRECTORY; look there by conventional name."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return None
    for name in names:
        candidate = Path(directory) / name
        if candidate.is_file():
            return _read_secret_file(candidate, "credential")
    return None


def _check_http_url(value: str, key: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{key} must be an http:// or https:// URL with a host")
    if "@" in parts.netloc:
        # httpx would send user:password as Basic auth in place of the management Bearer (CPA counts a failed
        # key), and the URL is printed by check-config and daemon.started. Never echo it.
        raise ValueError(f"{key} must not contain a user name or password (user:password@host)")
    return value.rstrip("/")


class StateConfig(_Section):
    path: Path = Path("/var/lib/reauthd/state.db")


class CPAConfig(_Section):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    base_url: str
    management_key: SecretStr | None = None
    management_key_file: Path | None = None
    # A key for CPA's public /v1 API, only needed to verify credentials that have no management-side probe
    # (Vertex always: contract §12).
    proxy_api_key: SecretStr | None = None
    proxy_api_key_file: Path | None = None
    # provider -> model used for the public-API verification of that provider (e.g. vertex = "gemini-2.5-flash").
    verify_models: dict[str, str] = Field(default_factory=dict)
    # After CPA refused the key (401), 0 (the default) means never try again until the key changes
    # (design: "reported, never retried"); an operator may set a pause instead, at least 60 s. CPA bans an
    # IP for 30 minutes after 5 failures and forgets failures only after 2 h without one (purged hourly,
    # contract §1): 3 h or more between tries never adds up to a ban. A ban answer always pauses for the
    # ban time CPA reported.
    key_rejected_pause_s: Annotated[float, Field(ge=0)] = 0.0
    # Verify CPA's TLS certificate (https base_url): true, false, or the path of a CA bundle.
    tls_verify: bool | Path = True
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 30.0
    # The largest `GET /auth-files` body reauthd reads, MiB (50,000 credentials are ~85 MiB, contract §12).
    max_listing_mib: Annotated[int, Field(ge=1, le=4096)] = 256
    # Ask CPA for OAuth URLs in web-UI mode (CPA forwards the localhost callback itself): only when the
    # browser runs on the same machine as CPA (contract §4.1).
    is_webui: bool = False
    # What answers at base_url (shared/home-contract.md §8): "auto" tells a plain CPA from a CLIProxyAPIHome
    # by the headers of its first keyed answer; "cpa"/"home" are checked against those answers. A CPA node
    # started with -home-jwt is always refused (it has no management): point reauthd at its Home.
    kind: Literal["auto", "cpa", "home"] = "auto"

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        return _check_http_url(value, "base_url")

    @model_validator(mode="after")
    def _resolve_secrets(self) -> CPAConfig:
        key = self.management_key
        if key is None and self.management_key_file is not None:
            key = _read_secret_file(self.management_key_file, "management_key")
        if key is None:
            key = _credentials_dir_secret(f"cpa-{self.name}-management-key", "management-key")
        if key is None:
            raise ValueError("needs management_key or management_key_file")
        if key.get_secret_value() != key.get_secret_value().strip():
            # CPA compares the key exactly; a stray space would be one failed attempt toward a ban.
            raise ValueError("management_key starts or ends with a space or line break")
        proxy = self.proxy_api_key
        if proxy is None and self.proxy_api_key_file is not None:
            proxy = _read_secret_file(self.proxy_api_key_file, "proxy_api_key")
        if proxy is None:
            proxy = _credentials_dir_secret(f"cpa-{self.name}-proxy-api-key")
        object.__setattr__(self, "management_key", key)
        object.__setattr__(self, "proxy_api_key", proxy)
        return self

    @property
    def key(self) -> SecretStr:
        assert self.management_key is not None  # guaranteed by _resolve_secrets
        return self.management_key


class ProbeConfig(_Section):
    """A cheap request sent through CPA's /api-call with the credential's own token ($TOKEN$ in headers)."""

    method: Literal["GET", "POST", "HEAD"] = "GET"
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    data: str = ""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_http_url(value, "url")


class DetectConfig(_Section):
    poll_interval_s: Annotated[float, Field(ge=5, le=86400)] = 60.0
    # Subscribe to CPA's RESP `errors` channel for real-time revocations (contract §7).
    error_stream: bool = True
    # Idle credentials are probed on this slow schedule, spread evenly with jitter.
    probe_interval_s: Annotated[float, Field(ge=60)] = 6 * 3600.0
    probe_concurrency: Annotated[int, Field(ge=1, le=64)] = 4
    probe_rate_per_s: Annotated[float, Field(gt=0, le=100)] = 2.0
    # Raise tasks for credentials a person disabled on purpose (default: leave them alone).
    include_disabled: bool = False
    # A listing with more entries than this is refused whole (memory stays bounded; issue 11: 1,000,000
    # entries took the daemon to 1.5 GB). Twice the 50,000 of contract §12 by default.
    max_listing_entries: Annotated[int, Field(ge=100, le=10_000_000)] = 100_000
    # Extra or overriding probes by provider (antigravity, plugin providers): provider -> probe.
    probes: dict[str, ProbeConfig] = Field(default_factory=dict)
    # Codex: tell the operator this many days before id_token.chatgpt_subscription_active_until (0: never).
    subscription_warning_days: Annotated[float, Field(ge=0, le=60)] = 3.0


class CPAMPConfig(_Section):
    name: Annotated[str, Field(min_length=1)]
    base_url: str
    admin_key: SecretStr | None = None
    admin_key_file: Path | None = None
    cpa: str  # the [[cpa]] name whose accounts this CPAMP watches
    poll_interval_s: Annotated[float, Field(ge=10)] = 300.0

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        return _check_http_url(value, "base_url")

    @model_validator(mode="after")
    def _resolve_secrets(self) -> CPAMPConfig:
        key = self.admin_key
        if key is None and self.admin_key_file is not None:
            key = _read_secret_file(self.admin_key_file, "admin_key")
        if key is None:
            key = _credentials_dir_secret(f"cpamp-{self.name}-admin-key")
        if key is None:
            raise ValueError("needs admin_key or admin_key_file")
        object.__setattr__(self, "admin_key", key)
        return self


def _parse_hhmm(value: str) -> time:
    match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", value.strip())
    if not match:
        raise ValueError(f"{value!r} is not a HH:MM time")
    return time(int(match.group(1)), int(match.group(2)))


class QuietHoursConfig(_Section):
    start: str = "22:00"
    end: str = "07:00"
    timezone: str = "UTC"

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        _parse_hhmm(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @property
    def start_time(self) -> time:
        return _parse_hhmm(self.start)

    @property
    def end_time(self) -> time:
        return _parse_hhmm(self.end)


class NotifyRouteConfig(_Section):
    """Extra recipients for tasks matching a provider and/or CPA name (empty list = any)."""

    name: str = ""
    providers: list[str] = Field(default_factory=list)
    cpas: list[str] = Field(default_factory=list)
    urls: list[SecretStr] = Field(min_length=1)


class EscalationConfig(_Section):
    after_reminders: Annotated[int, Field(ge=1)] = 2
    urls: list[SecretStr] = Field(min_length=1)


class NotifyConfig(_Section):
    # Apprise URLs carry their own tokens: they are secrets and are masked everywhere.
    urls: list[SecretStr] = Field(default_factory=list)
    routes: list[NotifyRouteConfig] = Field(default_factory=list)
    escalation: EscalationConfig | None = None
    group_window_s: Annotated[float, Field(ge=0, le=3600)] = 30.0
    reminder_interval_s: Annotated[float, Field(ge=60)] = 4 * 3600.0
    max_reminders: Annotated[int, Field(ge=0, le=50)] = 3
    quiet_hours: QuietHoursConfig | None = None
    retry_max_attempts: Annotated[int, Field(ge=1, le=100)] = 12


#: The shortest `web.operator_token` accepted (issue 11): `secrets.token_urlsafe(32)` gives 43 characters.
MIN_OPERATOR_TOKEN = 32


class WebConfig(_Section):
    listen: str = "127.0.0.1:8390"
    public_url: str = "http://127.0.0.1:8390"
    operator_token: SecretStr | None = None
    operator_token_file: Path | None = None
    # Who runs this reauthd and how to reach them: shown on every recipient page, so the person asked for a
    # sign-in address can tell who is asking (empty: not shown).
    operator_name: Annotated[str, Field(max_length=100)] = ""
    operator_contact: Annotated[str, Field(max_length=200)] = ""
    # Reverse proxies (IPs or CIDR networks) whose X-Forwarded-For names the real client. Empty: trust none,
    # and every request counts as coming from its socket peer (behind a proxy, all share one rate limit).
    trusted_proxies: list[str] = Field(default_factory=list)
    # Open connections the page accepts; beyond it the oldest one still sending its headers is dropped.
    max_connections: Annotated[int, Field(ge=16, le=60000)] = 256
    # A client must send a request's headers within this many seconds (slow clients hold a connection).
    header_timeout_s: Annotated[float, Field(ge=1, le=300)] = 10.0

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError('must be "host:port", e.g. "127.0.0.1:8390"')
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        return _check_http_url(value, "public_url")

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, value: list[str]) -> list[str]:
        networks = []
        for entry in value:
            try:
                networks.append(str(ipaddress.ip_network(entry.strip(), strict=False)))
            except ValueError:
                # Never echo the entry: config errors do not repeat what the operator typed.
                raise ValueError(
                    'each entry must be an IP address or a CIDR network, e.g. "10.0.0.0/8"'
                ) from None
        return networks

    @model_validator(mode="after")
    def _resolve_secrets(self) -> WebConfig:
        token = self.operator_token
        if token is None and self.operator_token_file is not None:
            token = _read_secret_file(self.operator_token_file, "operator_token")
        if token is None:
            token = _credentials_dir_secret("operator-token")
        if token is not None and len(token.get_secret_value()) < MIN_OPERATOR_TOKEN:
            # The operator view can change nothing, but it lists every task: a short token is guessable.
            raise ValueError(
                f"operator_token must be at least {MIN_OPERATOR_TOKEN} characters; generate one with "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        object.__setattr__(self, "operator_token", token)
        return self

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class RetireConfig(_Section):
    policy: Literal["delete", "disable", "keep"] = "delete"


class TasksConfig(_Section):
    expire_after_s: Annotated[float, Field(ge=600)] = 7 * 86400.0


class LogConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"
    # Account e-mails in log lines are masked (`a***@example.com`); false logs them whole, for debugging.
    mask_emails: bool = True


class Settings(BaseSettings):
    """The whole configuration. Build it with `load_config`, which gives clear errors."""

    model_config = SettingsConfigDict(extra="forbid", frozen=True, env_prefix=ENV_PREFIX)

    state: StateConfig = StateConfig()
    cpa: list[CPAConfig] = Field(min_length=1)
    cpamp: list[CPAMPConfig] = Field(default_factory=list)
    detect: DetectConfig = DetectConfig()
    notify: NotifyConfig = NotifyConfig()
    web: WebConfig = WebConfig()
    retire: RetireConfig = RetireConfig()
    tasks: TasksConfig = TasksConfig()
    log: LogConfig = LogConfig()

    @model_validator(mode="after")
    def _unique_names(self) -> Settings:
        first: dict[str, int] = {}
        for index, cpa in enumerate(self.cpa):
            # Entries are named by position, never by value: a secret pasted into the wrong key stays unsaid.
            if cpa.name in first:
                raise ValueError(f"[[cpa]] #{index + 1} has the same name as [[cpa]] #{first[cpa.name] + 1}")
            first[cpa.name] = index
        for index, cpamp in enumerate(self.cpamp):
            if cpamp.cpa not in first:
                raise ValueError(f"[[cpamp]] #{index + 1}: its cpa is not the name of a configured [[cpa]]")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_config merges the TOML file and the environment itself (it must report a missing file, and
        # `[[cpa]]` lists need overrides by name); the merged dict arrives as init arguments.
        return (init_settings,)

    def cpa_by_name(self, name: str) -> CPAConfig:
        for cpa in self.cpa:
            if cpa.name == name:
                return cpa
        raise KeyError(name)


# ---------------------------------------------------------------------------------------------- loading


def resolve_config_path(explicit: str | os.PathLike[str] | None) -> Path:
    if explicit:
        return Path(explicit)
    from_env = os.environ.get("REAUTHD_CONFIG")
    return Path(from_env) if from_env else DEFAULT_CONFIG_PATH


def _env_overrides(environ: Mapping[str, str]) -> list[tuple[list[str], str]]:
    """REAUTHD_<SECTION>__<KEY>=value (and REAUTHD_CPA__<name>__<KEY> for a [[cpa]] entry)."""
    result: list[tuple[list[str], str]] = []
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name or name == "REAUTHD_CONFIG":
            continue
        parts = [p for p in name[len(ENV_PREFIX) :].split("__")]
        if any(not p for p in parts):
            continue
        result.append((parts, value))
    return sorted(result)


def _coerce_env_value(raw: str) -> Any:
    # Values are TOML fragments when they parse as one (numbers, booleans, arrays), else plain strings.
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


EnvOrigins = list[tuple[tuple[int | str, ...], str]]


def _apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> EnvOrigins:
    """Merge the overrides into `data`; returns where each one landed (a pydantic-style location) and the
    variable that set it, so an error about that value can name the variable rather than the file."""
    origins: EnvOrigins = []
    for parts, raw in _env_overrides(environ):
        variable = f"{ENV_PREFIX}{'__'.join(parts)}"
        where: tuple[int | str, ...] = ()
        section = parts[0].lower()
        keys = [p.lower() for p in parts[1:]]
        value = _coerce_env_value(raw)
        if section in ("cpa", "cpamp") and len(keys) >= 2:
            entries = data.setdefault(section, [])
            selector = parts[1]
            target = None
            if isinstance(entries, list):
                for entry in entries:
                    if isinstance(entry, dict) and str(entry.get("name", "")).lower() == selector.lower():
                        target = entry
                if target is None and selector.isdigit() and int(selector) < len(entries):
                    target = entries[int(selector)]
            if not isinstance(target, dict):
                raise ConfigError(
                    f"environment variable {ENV_PREFIX}{'__'.join(parts)} names [[{section}]] "
                    f"{selector!r}, which is not in the configuration file"
                )
            node: dict[str, Any] = target
            keys = keys[1:]
            where = (section, next(i for i, entry in enumerate(entries) if entry is target))
        else:
            where = (section,)
            node = data.setdefault(section, {})
            if not isinstance(node, dict):
                raise ConfigError(
                    f"environment variable {ENV_PREFIX}{'__'.join(parts)} cannot override [{section}]"
                )
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(
                    f"environment variable {ENV_PREFIX}{'__'.join(parts)} sets a key below {key!r}, "
                    "which is a value, not a table"
                )
            node = child
        node[keys[-1]] = value
        origins.append(((*where, *keys), variable))
    return origins


def _env_origin(loc: tuple[int | str, ...], origins: EnvOrigins) -> str | None:
    """The environment variable that set the value at `loc` (or a table above it), if any."""
    for where, variable in reversed(origins):
        if loc[: len(where)] == where:
            return variable
    return None


def _location(loc: tuple[int | str, ...], data: Mapping[str, Any]) -> str:
    """Render a pydantic error location as the operator wrote it: [cpa] "main" base_url."""
    parts: list[str] = []
    node: Any = data
    for item in loc:
        if isinstance(item, int) and isinstance(node, list):
            entry = node[item] if item < len(node) else None
            # By position, not by its `name`: that value may be anything the operator (mis)typed.
            parts[-1] = f"[[{parts[-1]}]] #{item + 1}"
            node = entry
            continue
        parts.append(str(item))
        node = node.get(item) if isinstance(node, dict) else None
    if not parts:
        return "the file"
    if len(parts) == 1:
        return f"[{parts[0]}]" if not parts[0].startswith("[[") else parts[0]
    head = parts[0] if parts[0].startswith("[[") else f"[{parts[0]}]"
    return f"{head} {'.'.join(parts[1:])}"


def _known_keys(loc: tuple[int | str, ...]) -> list[str]:
    model: Any = Settings
    for item in loc[:-1]:
        if isinstance(item, int):
            continue
        field = getattr(model, "model_fields", {}).get(item)
        if field is None:
            return []
        annotation = field.annotation
        for candidate in (annotation, *getattr(annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                model = candidate
                break
            for inner in getattr(candidate, "__args__", ()):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    model = inner
                    break
    return list(getattr(model, "model_fields", {}))


def _describe(error: Mapping[str, Any], data: Mapping[str, Any]) -> str:
    loc = tuple(error.get("loc", ()))
    kind = error.get("type", "")
    where = _location(loc, data)
    if kind == "extra_forbidden":
        key = str(loc[-1]) if loc else "?"
        parent = _location(loc[:-1], data) if len(loc) > 1 else "the top level"
        hint = difflib.get_close_matches(key, _known_keys(loc), n=1)
        suffix = f" (did you mean {hint[0]!r}?)" if hint else ""
        return f"unknown key {key!r} in {parent}{suffix}"
    if loc == ("cpa",) and kind in ("missing", "too_short"):
        return "at least one [[cpa]] table (name, base_url, management_key) is required"
    if kind == "missing":
        return f"{where} is required but missing"
    message = str(error.get("msg", "is invalid"))
    message = message.removeprefix("Value error, ")
    # Never echo the offending value: it may be a secret typed into the wrong key.
    return f"{where}: {message}"


def _one_line(text: str) -> str:
    # Keys and values the operator typed may hold control characters; the sentence must stay one line.
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: repr(m.group())[1:-1], text)


def load_config(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read, merge and validate the configuration. Raises ConfigError with one clear sentence."""
    try:
        return _load_config(path, environ)
    except ConfigError as exc:
        raise ConfigError(_one_line(str(exc))) from None


def _load_config(path: str | os.PathLike[str] | None, environ: Mapping[str, str] | None) -> Settings:
    env = os.environ if environ is None else environ
    config_path = resolve_config_path(path)
    # pydantic-settings silently ignores a missing TOML file; an operator must hear about it.
    try:
        raw = config_path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{config_path}: configuration file not found") from None
    except OSError as exc:
        raise ConfigError(f"{config_path}: cannot read configuration file ({exc.strerror or exc})") from None
    try:
        data: dict[str, Any] = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{config_path}: not a UTF-8 text file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{config_path}: not valid TOML ({exc})") from None
    try:
        origins = _apply_env(data, env)
    except ConfigError as exc:
        raise ConfigError(f"{config_path}: {exc}") from None
    try:
        return Settings(**data)
    except ValidationError as exc:
        errors = exc.errors(include_input=False, include_url=False)
        first = _describe(errors[0], data)
        variable = _env_origin(tuple(errors[0].get("loc", ())), origins)
        if variable is not None:
            first += f" (set by the environment variable {variable})"
        more = (
            f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
            if len(errors) > 1
            else ""
        )
        raise ConfigError(f"{config_path}: {first}{more}") from None
    except TypeError as exc:  # e.g. a section given as a value instead of a table
        raise ConfigError(f"{config_path}: {exc}") from None


def _mask(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return "********" if value.get_secret_value() else ""
    if isinstance(value, BaseModel):
        return {name: _mask(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, dict):
        return {k: _mask(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def effective_config(settings: Settings) -> dict[str, Any]:
    """The configuration as reauthd will use it, with every secret masked (for `check-config`)."""
    masked = _mask(settings)
    assert isinstance(masked, dict)
    return masked


def _apprise_url_secrets(url: str) -> list[str]:
    """An Apprise URL and the parts of it that may be tokens: a library logging only its path (urllib3
    logs `POST /<token>`), host (`tgram://<bot token>/...`) or credentials must not leak them either."""
    parts = urlsplit(url)
    found = [url]
    try:
        candidates = [parts.username or "", parts.password or "", parts.hostname or ""]
    except ValueError:
        candidates = []
    candidates += [segment for segment in parts.path.split("/") if segment]
    candidates += [value for pair in parts.query.split("&") for value in pair.split("=")[1:]]
    # Short parts ("hook", "json", an IP's octets) are not secrets and would blank out ordinary words.
    found += [c for c in candidates if len(c) >= 12 and c not in ("localhost", "127.0.0.1")]
    return found


def secret_values(settings: Settings) -> list[str]:
    """Every configured secret value, for the log redactor (never logged themselves)."""
    values: list[str] = []
    for cpa in settings.cpa:
        values.append(cpa.key.get_secret_value())
        if cpa.proxy_api_key is not None:
            values.append(cpa.proxy_api_key.get_secret_value())
    for cpamp in settings.cpamp:
        if cpamp.admin_key is not None:
            values.append(cpamp.admin_key.get_secret_value())
    urls = [*settings.notify.urls]
    for route in settings.notify.routes:
        urls.extend(route.urls)
    if settings.notify.escalation is not None:
        urls.extend(settings.notify.escalation.urls)
    for url in urls:
        values.extend(_apprise_url_secrets(url.get_secret_value()))
    if settings.web.operator_token is not None:
        values.append(settings.web.operator_token.get_secret_value())
    return [v for v in values if len(v) >= 4]
