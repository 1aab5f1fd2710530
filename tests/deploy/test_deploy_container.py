"""Container pieces: the Dockerfile's commands work in this venv, compose and Kubernetes agree with the config."""

from __future__ import annotations

import asyncio
import json
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from starlette.applications import Starlette
from starlette.types import ASGIApp

from reauthd.config import Settings, load_config
from reauthd.ops.health import Health, health_routes
from reauthd.ops.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
CONTAINER = ROOT / "deploy" / "container"
DOCKERFILE = CONTAINER / "Dockerfile"
COMPOSE = CONTAINER / "compose.yaml"
KUBERNETES = CONTAINER / "kubernetes.yaml"
EXAMPLE_CONFIG = ROOT / "deploy" / "config" / "container.toml"
VENV_BIN = Path(sys.executable).parent


# ------------------------------------------------------------------------------------------ helpers


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        instruction, _, args = line.partition(" ")
        result.append((instruction.upper(), args.strip()))
    assert pending == "", "Dockerfile ends inside a continuation"
    return result


def instruction(name: str) -> list[str]:
    return [args for ins, args in dockerfile_instructions() if ins == name]


def last_stage(name: str) -> str:
    """The value of `name` in the final stage (what the image runs with)."""
    stages: list[list[tuple[str, str]]] = []
    for ins, args in dockerfile_instructions():
        if ins == "FROM":
            stages.append([])
        stages[-1].append((ins, args))
    values = [args for ins, args in stages[-1] if ins == name]
    assert values, f"{name} missing from the final stage"
    return values[-1]


def exec_form(args: str) -> list[str]:
    parsed = json.loads(args)
    assert isinstance(parsed, list)
    return [str(part) for part in parsed]


def healthcheck_command() -> list[str]:
    args = last_stage("HEALTHCHECK")
    _options, _, command = args.partition("CMD ")
    return exec_form(command)


def load_example(path: Path, tmp_path: Path, text: str | None = None) -> Settings:
    """Load a shipped config with the key file redirected to a temp file (the container mounts the real one)."""
    key = tmp_path / "cpa-main-management-key"
    key.write_text("example-key\n")
    config = path
    if text is not None:
        config = tmp_path / "config.toml"
        config.write_text(text)
    return load_config(config, environ={"REAUTHD_CPA__main__MANAGEMENT_KEY_FILE": str(key)})


def example_settings_raw() -> dict[str, Any]:
    return tomllib.loads(EXAMPLE_CONFIG.read_text())


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def kubernetes() -> list[dict[str, Any]]:
    docs = [doc for doc in yaml.safe_load_all(KUBERNETES.read_text()) if doc is not None]
    assert all(isinstance(doc, dict) and "kind" in doc and "apiVersion" in doc for doc in docs)
    return docs


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in kubernetes() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}"
    return found[0]


def reauthd_container() -> dict[str, Any]:
    pod = k8s_object("Deployment", "cli-proxy-api")["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "reauthd"]
    return container


# ----------------------------------------------------------------------------------- example config


def test_example_config_is_valid_and_listens_for_the_container(tmp_path: Path) -> None:
    settings = load_example(EXAMPLE_CONFIG, tmp_path)
    assert (settings.web.host, settings.web.port) == ("0.0.0.0", 8390)
    # Same network namespace as CPA: local management calls, no allow-remote needed.
    assert urlsplit(settings.cpa[0].base_url).hostname == "127.0.0.1"
    assert settings.log.format == "json"


# --------------------------------------------------------------------------------------- Dockerfile


def test_base_image_and_non_root_user() -> None:
    assert all(args.split()[0] == "python:3.11-slim" for args in instruction("FROM"))
    user = last_stage("USER")
    uid = user.split(":")[0]
    assert uid.isdigit()
    assert int(uid) != 0


def test_copied_sources_exist() -> None:
    for args in instruction("COPY"):
        if args.startswith("--from="):
            continue
        *sources, _dest = args.split()
        for source in sources:
            assert (ROOT / source).exists(), source
    ignore = (CONTAINER / "Dockerfile.dockerignore").read_text().splitlines()
    for needed in ("pyproject.toml", "README.md", "reauthd/", "deploy/config/container.toml"):
        assert f"!{needed}" in ignore


def test_entrypoint_is_the_installed_console_script() -> None:
    assert exec_form(last_stage("ENTRYPOINT")) == ["reauthd"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["reauthd"] == "reauthd.cli:main"
    assert (VENV_BIN / "reauthd").exists()


def test_cmd_is_accepted_by_the_cli() -> None:
    cmd = exec_form(last_stage("CMD"))
    assert cmd[:1] == ["run"]
    # argparse validates every option before acting on --help: unknown options would exit 2.
    done = subprocess.run(
        [str(VENV_BIN / "reauthd"), *cmd, "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "--config" in done.stdout


def test_config_volume_port_and_signal_agree_with_the_example(tmp_path: Path) -> None:
    settings = load_example(EXAMPLE_CONFIG, tmp_path)
    cmd = exec_form(last_stage("CMD"))
    config_path = cmd[cmd.index("--config") + 1]
    assert f"deploy/config/container.toml {config_path}" in instruction("COPY")
    assert last_stage("ENV").count(f"REAUTHD_CONFIG={config_path}") == 1
    assert exec_form(last_stage("VOLUME")) == [str(settings.state.path.parent)]
    assert last_stage("EXPOSE") == str(settings.web.port)
    assert last_stage("STOPSIGNAL") == "SIGTERM"
    url = urlsplit(healthcheck_command()[-1])
    assert (url.hostname, url.port, url.path) == ("127.0.0.1", settings.web.port, "/livez")


def test_healthcheck_has_a_short_timeout() -> None:
    options = shlex.split(last_stage("HEALTHCHECK").partition("CMD ")[0])
    timeout = next(o for o in options if o.startswith("--timeout="))
    assert timeout == "--timeout=5s"
    assert healthcheck_command()[:3] == ["python", "-m", "reauthd.ops.healthcheck"]


async def test_healthcheck_command_against_reauthds_own_routes(
    serve_app: Callable[[ASGIApp], AbstractAsyncContextManager[str]],
) -> None:
    # The Dockerfile's HEALTHCHECK, run as Docker would (a fresh interpreter), against the real routes.
    clock_now = [0.0]
    health = Health(
        cpas=["main"], liveness_timeout_s=60, store_check=lambda: True, clock=lambda: clock_now[0]
    )
    app = Starlette(routes=health_routes(health, Metrics(cpas=["main"])))
    command = [sys.executable, *healthcheck_command()[1:]]

    async def run(url: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            *command[:-1], url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert err == b""
        return proc.returncode or 0, out.decode().strip()

    async with serve_app(app) as base:
        port = urlsplit(base).port
        livez = urlsplit(command[-1])._replace(netloc=f"127.0.0.1:{port}").geturl()
        assert await run(livez) == (0, "healthy: 200 ok")
        code, out = await run(livez.replace("/livez", "/readyz"))
        assert code == 1
        assert out == "unhealthy: 503 not ready: CPA 'main' has not been checked yet"
        clock_now[0] += 120
        code, out = await run(livez)
        assert code == 1
        assert out.startswith("unhealthy: 503 not live: the main loop has not completed a turn")


# ------------------------------------------------------------------------------------------ compose


def test_compose_runs_reauthd_as_a_sidecar_of_cpa(tmp_path: Path) -> None:
    data = compose()
    services = data["services"]
    cpa, sidecar = services["cli-proxy-api"], services["reauthd"]
    assert "cli-proxy-api" in cpa["image"]
    # Shared network namespace: CPA sees reauthd as 127.0.0.1.
    assert sidecar["network_mode"] == "service:cli-proxy-api"
    assert "ports" not in sidecar  # published on the CPA service instead (shared namespace)
    settings = load_example(EXAMPLE_CONFIG, tmp_path)
    assert f"{settings.web.port}:{settings.web.port}" in cpa["ports"]
    assert "8317:8317" in cpa["ports"]


def test_compose_mounts_what_the_config_names(tmp_path: Path) -> None:
    data = compose()
    sidecar = data["services"]["reauthd"]
    # The management key: a secret whose in-container path is the configured key file.
    key_file = example_settings_raw()["cpa"][0]["management_key_file"]
    (secret,) = sidecar["secrets"]
    assert f"/run/secrets/{secret}" == key_file
    assert "file" in data["secrets"][secret]
    # The config file goes where the image's CMD reads it; the state volume where the config keeps state.
    cmd = exec_form(last_stage("CMD"))
    mounts = {m.split(":")[1]: m.split(":")[0] for m in sidecar["volumes"]}
    config_source = mounts[cmd[cmd.index("--config") + 1]]
    assert (COMPOSE.parent / config_source).resolve() == EXAMPLE_CONFIG
    settings = load_example(EXAMPLE_CONFIG, tmp_path)
    assert mounts[str(settings.state.path.parent)] in data["volumes"]
    # Build from the repository root with this Dockerfile.
    assert (COMPOSE.parent / sidecar["build"]["context"]).resolve() == ROOT
    assert (ROOT / sidecar["build"]["dockerfile"]).resolve() == DOCKERFILE
    assert sidecar["read_only"] is True
    assert sidecar["cap_drop"] == ["ALL"]
    assert sidecar["healthcheck"]["test"] == ["CMD", *healthcheck_command()]


# --------------------------------------------------------------------------------------- Kubernetes


def test_kubernetes_sidecar_probes_match_the_config(tmp_path: Path) -> None:
    config_secret = k8s_object("Secret", "reauthd-config")
    settings = load_example(EXAMPLE_CONFIG, tmp_path, config_secret["stringData"]["config.toml"])
    container = reauthd_container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert settings.web.host == "0.0.0.0"
    for probe, path in (
        ("livenessProbe", "/livez"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/livez"),
    ):
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert ports[get["port"]] == settings.web.port
    assert container["livenessProbe"]["timeoutSeconds"] <= 5
    # The two containers share the pod's network: CPA on localhost.
    pod = k8s_object("Deployment", "cli-proxy-api")["spec"]["template"]["spec"]
    (cpa,) = [c for c in pod["containers"] if c["name"] == "cli-proxy-api"]
    cpa_port = urlsplit(settings.cpa[0].base_url).port
    assert cpa_port in [p["containerPort"] for p in cpa["ports"]]


def test_kubernetes_sidecar_is_locked_down() -> None:
    container = reauthd_container()
    ctx = container["securityContext"]
    assert ctx["runAsNonRoot"] is True
    assert ctx["runAsUser"] != 0
    assert str(ctx["runAsUser"]) == last_stage("USER").split(":")[0]
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"]["drop"] == ["ALL"]
    deployment = k8s_object("Deployment", "cli-proxy-api")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"  # never two daemons on one state
    assert deployment["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_kubernetes_mounts_secrets_as_files_where_the_config_reads_them(tmp_path: Path) -> None:
    config_secret = k8s_object("Secret", "reauthd-config")
    settings = load_example(EXAMPLE_CONFIG, tmp_path, config_secret["stringData"]["config.toml"])
    raw = tomllib.loads(config_secret["stringData"]["config.toml"])
    key_file = Path(raw["cpa"][0]["management_key_file"])
    container = reauthd_container()
    pod = k8s_object("Deployment", "cli-proxy-api")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}

    key_mount = mounts[str(key_file.parent)]
    key_volume = volumes[key_mount["name"]]["secret"]
    assert key_mount["readOnly"] is True
    assert key_volume["defaultMode"] == 0o440
    assert key_file.name in k8s_object("Secret", key_volume["secretName"])["stringData"]

    args = container["args"]
    config_path = Path(args[args.index("--config") + 1])
    config_mount = mounts[str(config_path.parent)]
    config_volume = volumes[config_mount["name"]]["secret"]
    assert config_volume["secretName"] == "reauthd-config"
    assert config_path.name in config_secret["stringData"]
    assert args == exec_form(last_stage("CMD"))

    state_mount = mounts[str(settings.state.path.parent)]
    claim = volumes[state_mount["name"]]["persistentVolumeClaim"]["claimName"]
    assert k8s_object("PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert "/tmp" in mounts  # read-only root: a writable /tmp for Python's tempfile


def test_kubernetes_service_targets_named_ports() -> None:
    service = k8s_object("Service", "cli-proxy-api")
    template = k8s_object("Deployment", "cli-proxy-api")["spec"]["template"]
    names = {p["name"] for c in template["spec"]["containers"] for p in c["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} == names
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()


@pytest.mark.parametrize("path", [COMPOSE, KUBERNETES])
def test_yaml_files_parse_strictly(path: Path) -> None:
    # Duplicate keys are silently merged by YAML loaders; catch them here.
    class Strict(yaml.SafeLoader):
        pass

    def no_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
        assert len(keys) == len(set(keys)), f"duplicate keys in {path.name}: {keys}"
        return yaml.SafeLoader.construct_mapping(loader, node, deep)

    Strict.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, no_duplicates)
    assert list(yaml.load_all(path.read_text(), Loader=Strict))
