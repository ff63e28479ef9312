"""The Helm chart (deploy/helm/faceproof), checked without a cluster.

With ``helm-python-sdk`` installed (Helm's own Go template engine and linter, no helm binary), the chart
is rendered and linted like ``helm template`` / ``helm lint`` would, and the rendered objects are checked.
Without it those tests are skipped with the reason, and the static checks below still run.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from contracts.routing import ALL_ROUTES, INGRESS_ROUTES

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "faceproof"
SERVICES = {"gateway", "matcher", "call-agent", "liveness", "notifier", "ingress"}
SECRETS = {"FACEPROOF_API_TOKEN": "a-token", "FACEPROOF_CALLBACK_SECRET": "a-callback-secret"}
BASE = {
    "externalPostgres": {"url": "postgresql+asyncpg://faceproof:pw@postgres:5432/faceproof"},
    "externalRabbitmq": {"url": "amqp://faceproof:pw@rabbitmq:5672/"},
    "externalS3": {"url": "s3://key:secret@s3:9000/faceproof?secure=false"},
    "secretSettings": SECRETS,
}
ALL_ON: dict[str, Any] = {
    **BASE,
    "ingress": {"enabled": True, "className": "nginx"},
    "services": {
        "notifier": {"enabled": True},
        "matcher": {
            "keda": {"enabled": True},
            "gpu": {"enabled": True},
            "nodeSelector": {"nvidia.com/gpu.present": "true"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
        "liveness": {"keda": {"enabled": True}},
    },
}


def values() -> dict[str, Any]:
    loaded = yaml.safe_load((CHART / "values.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


# ---------------------------------------------------------------- static (always run)


def test_chart_metadata_and_values_parse() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "faceproof"
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart["version"])
    services = values()["services"]
    assert {re.sub(r"(?<!^)([A-Z])", r"-\1", key).lower() for key in services} == SERVICES
    for key, svc in services.items():
        assert {"replicas", "resources", "autoscaling", "keda", "pdb", "command"} <= set(svc), key
        assert svc["command"][0] in {"gateway", "worker"}


def test_keda_queues_are_real_queues() -> None:
    """A ScaledObject on a queue nobody declares would never scale: the names come from contracts."""
    queues = {route.queue for route in (*ALL_ROUTES, *INGRESS_ROUTES)}
    for key, svc in values()["services"].items():
        for queue in svc["keda"].get("queues", []):
            assert queue["name"] in queues, f"{key}: unknown queue {queue['name']}"


def test_templates_declare_every_required_kind() -> None:
    text = "\n".join(path.read_text() for path in (CHART / "templates").glob("*.yaml"))
    for kind in (
        "Deployment",
        "HorizontalPodAutoscaler",
        "ScaledObject",
        "Job",
        "ConfigMap",
        "Secret",
        "Service",
        "Ingress",
        "PodDisruptionBudget",
    ):
        assert re.search(rf"^kind: {kind}$", text, re.MULTILINE), kind
    assert "helm.sh/hook: pre-install,pre-upgrade" in text


# ---------------------------------------------------------------- rendered by Helm's engine


def render(overrides: dict[str, Any]) -> list[dict[str, Any]]:
    helm = pytest.importorskip(
        "helm_python", reason="helm-python-sdk (Helm's template engine for Python) is not installed"
    )
    with helm.Chart.load(str(CHART)) as chart:
        manifests = chart.render(overrides, name="fp", namespace="faceproof")
    objects = []
    for name, text in manifests.items():
        if name.endswith(".yaml"):
            objects += [doc for doc in yaml.safe_load_all(text) if doc]
    return objects


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def test_helm_lint_finds_no_error() -> None:
    helm = pytest.importorskip(
        "helm_python", reason="helm-python-sdk (Helm's linter for Python) is not installed"
    )
    result = helm.lint(str(CHART), values=BASE)
    assert result["errors"] == []
    assert [m for m in result["messages"] if m["severity"] >= 2] == []  # warnings and errors


def test_default_render_runs_each_service_with_its_command() -> None:
    objects = render(BASE)
    deployments = by_kind(objects, "Deployment")
    assert set(deployments) == {f"fp-faceproof-{name}" for name in SERVICES}
    args = {name: container(d)["args"] for name, d in deployments.items()}
    assert args["fp-faceproof-gateway"] == ["gateway"]
    assert args["fp-faceproof-matcher"] == ["worker", "matcher"]
    assert args["fp-faceproof-call-agent"] == ["worker", "call-agent"]
    assert args["fp-faceproof-liveness"] == ["worker", "liveness"]
    assert args["fp-faceproof-notifier"] == ["worker", "notifier"]
    assert args["fp-faceproof-ingress"] == ["worker", "ingress"]  # the public broker API's consumer
    for deployment in deployments.values():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container(deployment)["resources"]["requests"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    # CPU HPAs by default, one per autoscaled service (the notifier and the ingress run a fixed
    # count); no KEDA objects unless asked for
    hpas = by_kind(objects, "HorizontalPodAutoscaler")
    assert set(hpas) == set(deployments) - {"fp-faceproof-notifier", "fp-faceproof-ingress"}
    assert by_kind(objects, "ScaledObject") == {}
    assert set(by_kind(objects, "PodDisruptionBudget")) == set(deployments)


def test_gateway_probes_service_and_settings() -> None:
    objects = render(ALL_ON)
    gateway = container(by_kind(objects, "Deployment")["fp-faceproof-gateway"])
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert gateway["ports"][0]["containerPort"] == 8000
    service = by_kind(objects, "Service")["fp-faceproof-gateway"]
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "gateway"
    ingress = by_kind(objects, "Ingress")["fp-faceproof-gateway"]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == "fp-faceproof-gateway"
    config = by_kind(objects, "ConfigMap")["fp-faceproof-settings"]["data"]
    assert config["FACEPROOF_HOST"] == "0.0.0.0" and config["FACEPROOF_PORT"] == "8000"
    secret = by_kind(objects, "Secret")["fp-faceproof-settings"]["stringData"]
    assert secret["FACEPROOF_BROKER_URL"] == BASE["externalRabbitmq"]["url"]
    assert secret["FACEPROOF_API_TOKEN"] == "a-token"
    env_from = {next(iter(ref.values()))["name"] for ref in gateway["envFrom"]}
    assert env_from == {"fp-faceproof-settings"}  # the ConfigMap and the Secret share the name


def test_gateway_probes_use_https_when_the_gateway_serves_tls() -> None:
    def schemes(overrides: dict[str, Any]) -> set[str]:
        gateway = container(by_kind(render(overrides), "Deployment")["fp-faceproof-gateway"])
        probes = ("startupProbe", "livenessProbe", "readinessProbe")
        return {gateway[probe]["httpGet"]["scheme"] for probe in probes}

    assert schemes(BASE) == {"HTTP"}  # proxy: the Ingress terminates TLS
    assert schemes({**BASE, "settings": {"FACEPROOF_TLS_TERMINATION": "native"}}) == {"HTTPS"}
    # set by hand, e.g. for native TLS set through services.gateway.extraEnv
    assert schemes({**BASE, "probes": {"gateway": {"scheme": "https"}}}) == {"HTTPS"}


def test_the_ingress_worker_runs_without_models() -> None:
    """The public broker API's consumer (`faceproof worker ingress`), as in compose: no models, so no
    fetch init container and no models volume."""
    ingress = by_kind(render(BASE), "Deployment")["fp-faceproof-ingress"]
    pod = ingress["spec"]["template"]["spec"]
    assert container(ingress)["args"] == ["worker", "ingress"]
    assert "initContainers" not in pod
    assert "models" not in {volume["name"] for volume in pod["volumes"]}
    assert container(ingress)["readinessProbe"]["exec"]["command"] == ["faceproof-healthcheck"]


def test_workers_use_exec_probes_not_http() -> None:
    deployments = by_kind(render(ALL_ON), "Deployment")
    for name in ("matcher", "call-agent", "liveness", "notifier", "ingress"):
        worker = container(deployments[f"fp-faceproof-{name}"])
        assert [port["name"] for port in worker["ports"]] == ["metrics"]  # no HTTP API on a worker
        assert worker["readinessProbe"]["exec"]["command"] == ["faceproof-healthcheck"]


def test_metrics_ports_scrape_annotations_and_pod_monitor() -> None:
    """Every pod serves /metrics on its own metrics port, the gateway too: never on the API port
    (the Service and the Ingress expose only `http`)."""
    objects = render({**BASE, "metrics": {"podMonitor": {"enabled": True}}})
    deployments = by_kind(objects, "Deployment")
    for name in sorted(SERVICES):
        deployment = deployments[f"fp-faceproof-{name}"]
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == "9100"
        env = {item["name"]: item["value"] for item in container(deployment)["env"]}
        assert env["FACEPROOF_METRICS_PORT"] == "9100"
        ports = {port["name"]: port["containerPort"] for port in container(deployment)["ports"]}
        assert ports["metrics"] == 9100
    service = by_kind(objects, "Service")["fp-faceproof-gateway"]
    assert [port["targetPort"] for port in service["spec"]["ports"]] == ["http"]
    monitor = by_kind(objects, "PodMonitor")["fp-faceproof"]
    assert {endpoint["port"] for endpoint in monitor["spec"]["podMetricsEndpoints"]} == {"metrics"}
    off = by_kind(render({**BASE, "metrics": {"enabled": False}}), "Deployment")
    assert "ports" not in container(off["fp-faceproof-matcher"])
    for name in ("fp-faceproof-matcher", "fp-faceproof-gateway"):
        assert {item["name"]: item["value"] for item in container(off[name])["env"]}[
            "FACEPROOF_METRICS_PORT"
        ] == "0"


def test_gpu_matcher_keda_and_notifier_when_enabled() -> None:
    objects = render(ALL_ON)
    deployments = by_kind(objects, "Deployment")
    matcher = deployments["fp-faceproof-matcher"]
    pod = matcher["spec"]["template"]["spec"]
    assert container(matcher)["image"] == "faceproof:0.1.0-gpu"
    assert container(matcher)["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"name": "FACEPROOF_PREFER_GPU", "value": "true"} in container(matcher)["env"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert "replicas" not in matcher["spec"]  # the autoscaler owns it
    scaled = by_kind(objects, "ScaledObject")
    assert set(scaled) == {"fp-faceproof-matcher", "fp-faceproof-liveness"}
    queues = {t["metadata"]["queueName"] for t in scaled["fp-faceproof-matcher"]["spec"]["triggers"]}
    assert queues == {"matcher.compare-faces", "matcher.match-references"}
    assert by_kind(objects, "TriggerAuthentication")
    hpas = by_kind(objects, "HorizontalPodAutoscaler")
    assert "fp-faceproof-matcher" not in hpas and "fp-faceproof-gateway" in hpas  # KEDA or HPA, not both
    assert container(deployments["fp-faceproof-notifier"])["args"] == ["worker", "notifier"]


def test_migration_job_is_a_hook_that_runs_db_upgrade() -> None:
    objects = render(BASE)
    job = by_kind(objects, "Job")["fp-faceproof-migrate"]
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    migrate = job["spec"]["template"]["spec"]["containers"][0]
    assert migrate["args"] == ["db", "upgrade"]
    url = next(e for e in migrate["env"] if e["name"] == "FACEPROOF_DATABASE_URL")
    hook_secret = by_kind(objects, "Secret")[url["valueFrom"]["secretKeyRef"]["name"]]
    # the Job's Secret exists before the Job (hooks run before the release's own Secret)
    assert "pre-install" in hook_secret["metadata"]["annotations"]["helm.sh/hook"]
    assert int(hook_secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        annotations["helm.sh/hook-weight"]
    )


def test_external_services_can_come_from_an_existing_secret() -> None:
    objects = render({"existingSecret": "faceproof-prod"})
    assert by_kind(objects, "Secret") == {}
    gateway = container(by_kind(objects, "Deployment")["fp-faceproof-gateway"])
    assert {"secretRef": {"name": "faceproof-prod"}} in gateway["envFrom"]
    migrate = by_kind(objects, "Job")["fp-faceproof-migrate"]["spec"]["template"]["spec"]["containers"][0]
    assert migrate["env"][-1]["valueFrom"]["secretKeyRef"]["name"] == "faceproof-prod"


def test_missing_connection_urls_are_refused() -> None:
    helm = pytest.importorskip("helm_python", reason="helm-python-sdk is not installed")
    with pytest.raises(helm.HelmError, match=r"externalPostgres\.url is required"):
        render({})


@pytest.mark.parametrize(
    ("value", "url"),
    [
        ("externalPostgres", "postgresql+asyncpg://faceproof:faceproof@postgres:5432/faceproof"),
        ("externalRabbitmq", "amqp://guest:guest@rabbitmq:5672/"),
        ("externalS3", "s3://faceproof:faceproof-secret@s3:9000/faceproof?secure=false"),
    ],
)
def test_well_known_passwords_are_refused(value: str, url: str) -> None:
    helm = pytest.importorskip("helm_python", reason="helm-python-sdk is not installed")
    with pytest.raises(helm.HelmError, match=rf"{value}\.url uses a well-known default password"):
        render({**BASE, value: {"url": url}})


def test_the_development_token_is_refused() -> None:
    helm = pytest.importorskip("helm_python", reason="helm-python-sdk is not installed")
    with pytest.raises(helm.HelmError, match=r"FACEPROOF_API_TOKEN is the public development token"):
        render({**BASE, "secretSettings": {**SECRETS, "FACEPROOF_API_TOKEN": "faceproof-dev-token"}})
    secret = by_kind(render({**BASE, "secretSettings": {**SECRETS, "FACEPROOF_API_TOKEN": ""}}), "Secret")
    assert secret["fp-faceproof-settings"]["stringData"]["FACEPROOF_API_TOKEN"] == ""  # API keys only


def test_the_callback_secret_is_required_and_reaches_every_pod() -> None:
    """As compose's FACEPROOF_CALLBACK_SECRET: the notifier signs callbacks with it, and
    `faceproof keys callback-key NAME` (in any pod) derives a client's key from it."""
    helm = pytest.importorskip("helm_python", reason="helm-python-sdk is not installed")
    with pytest.raises(helm.HelmError, match=r"secretSettings\.FACEPROOF_CALLBACK_SECRET is required"):
        render({**BASE, "secretSettings": {"FACEPROOF_API_TOKEN": ""}})
    objects = render(BASE)
    secret = by_kind(objects, "Secret")["fp-faceproof-settings"]["stringData"]
    assert secret["FACEPROOF_CALLBACK_SECRET"] == "a-callback-secret"
    notifier = container(by_kind(objects, "Deployment")["fp-faceproof-notifier"])
    assert {"secretRef": {"name": "fp-faceproof-settings"}} in notifier["envFrom"]


def test_the_chart_defaults_pass_the_production_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every pod gets the ConfigMap and the Secret: with the chart's defaults (production, API keys
    only) and the install command's values, infra/environment.py lets every process start (it used
    to refuse FACEPROOF_TLS_TERMINATION=none)."""
    from infra.environment import check_environment
    from infra.settings import Environment, Settings, TlsTermination

    objects = render({**BASE, "secretSettings": {**SECRETS, "FACEPROOF_API_TOKEN": ""}})
    env = {
        **by_kind(objects, "ConfigMap")["fp-faceproof-settings"]["data"],
        **by_kind(objects, "Secret")["fp-faceproof-settings"]["stringData"],
    }
    for name in [name for name in os.environ if name.startswith("FACEPROOF_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)
    assert settings.environment is Environment.PRODUCTION
    assert settings.tls_termination is TlsTermination.PROXY
    check_environment(settings, bind=env["FACEPROOF_HOST"])  # raises EnvironmentRefused otherwise


# ---------------------------------------------------------------- Kubernetes schemas (kubernetes-validate)

#: The oldest Kubernetes the chart supports (Chart.yaml's kubeVersion) and the newest with bundled schemas.
KUBE_VERSIONS = ("1.25.0", "1.37.0")
#: Custom resources: their schemas come with their operators (KEDA, the Prometheus Operator), not with
#: Kubernetes, so they are checked by the render tests above only (deploy/README.md, "Helm").
CUSTOM_KINDS = {"ScaledObject", "TriggerAuthentication", "PodMonitor"}
SCALED_GPU = CHART / "ci" / "scaled-gpu-values.yaml"


def schema_errors(objects: list[dict[str, Any]], version: str) -> list[str]:
    """Every built-in object checked against Kubernetes ``version``'s strict schema (unknown fields
    refused too); one line per failure."""
    validation = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")
    errors = []
    for obj in objects:
        if obj["kind"] in CUSTOM_KINDS:
            continue
        try:
            validation.validate(obj, version, strict=True)
        except validation.ValidationError as error:
            path = ".".join(str(part) for part in error.path)
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {path}: {error.message}")
        except validation.SchemaNotFoundError as error:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {error.message}")
    return errors


def scaled_gpu_values() -> dict[str, Any]:
    loaded = yaml.safe_load(SCALED_GPU.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("case", ["default", "scaled-gpu", "all-on"])
def test_every_rendered_object_matches_the_kubernetes_schemas(case: str, version: str) -> None:
    overrides = {"default": BASE, "scaled-gpu": scaled_gpu_values(), "all-on": ALL_ON}[case]
    objects = render(overrides)
    kinds = {obj["kind"] for obj in objects}
    assert {"Deployment", "Service", "Secret", "ConfigMap", "Job", "PodDisruptionBudget"} <= kinds
    assert schema_errors(objects, version) == []


def test_schema_validation_catches_a_broken_object() -> None:
    """The check above can fail: a misspelt field and a wrong type are reported."""
    deployment = by_kind(render(BASE), "Deployment")["fp-faceproof-gateway"]
    deployment["spec"]["replica"] = 2
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8000"
    errors = schema_errors([deployment], KUBE_VERSIONS[0])
    assert len(errors) == 1 and "Deployment/fp-faceproof-gateway" in errors[0], errors
    assert "replica" in errors[0] or "containerPort" in errors[0], errors


def test_the_scaled_gpu_values_scale_each_worker_on_its_own() -> None:
    objects = render(scaled_gpu_values())
    deployments = by_kind(objects, "Deployment")
    hpas = by_kind(objects, "HorizontalPodAutoscaler")
    scaled = by_kind(objects, "ScaledObject")
    assert set(deployments) == {f"fp-faceproof-{name}" for name in SERVICES}
    # each worker its own way: KEDA on its queues, a CPU HPA with its own bounds, a fixed count
    assert set(scaled) == {"fp-faceproof-matcher", "fp-faceproof-liveness"}
    assert (
        scaled["fp-faceproof-liveness"]["spec"]["minReplicaCount"],
        scaled["fp-faceproof-liveness"]["spec"]["maxReplicaCount"],
    ) == (2, 20)
    assert (
        scaled["fp-faceproof-matcher"]["spec"]["minReplicaCount"],
        scaled["fp-faceproof-matcher"]["spec"]["maxReplicaCount"],
    ) == (1, 4)
    assert set(hpas) == {"fp-faceproof-gateway", "fp-faceproof-call-agent"}
    assert (
        hpas["fp-faceproof-call-agent"]["spec"]["minReplicas"],
        hpas["fp-faceproof-call-agent"]["spec"]["maxReplicas"],
    ) == (2, 6)
    assert hpas["fp-faceproof-gateway"]["spec"]["minReplicas"] == 3
    assert deployments["fp-faceproof-notifier"]["spec"]["replicas"] == 2
    for name in ("matcher", "liveness", "call-agent", "gateway"):  # the scaler owns the count
        assert "replicas" not in deployments[f"fp-faceproof-{name}"]["spec"], name
    matcher = deployments["fp-faceproof-matcher"]
    assert container(matcher)["image"] == "faceproof:0.1.0-gpu"
    assert container(matcher)["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert matcher["spec"]["template"]["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    agent = deployments["fp-faceproof-call-agent"]["spec"]["template"]["spec"]
    assert agent["hostNetwork"] is True and "podAntiAffinity" in agent["affinity"]
    for name in ("gateway", "call-agent", "liveness", "notifier", "ingress"):
        assert not container(deployments[f"fp-faceproof-{name}"])["image"].endswith("-gpu"), name


def test_a_call_agent_on_the_nodes_network_keeps_its_metrics_off_other_interfaces_and_ports() -> None:
    """With hostNetwork its ports are the node's: /metrics binds the node's own address
    (status.podIP), not 0.0.0.0 (the node may face the internet for WebRTC), on a port of its own
    (9100 is node-exporter's hostPort on most clusters: the pod would never schedule)."""
    objects = render({**BASE, "services": {"callAgent": {"hostNetwork": True}}})
    deployments = by_kind(objects, "Deployment")
    agent = deployments["fp-faceproof-call-agent"]
    assert agent["spec"]["template"]["spec"]["hostNetwork"] is True
    env = {item["name"]: item for item in container(agent)["env"]}
    assert env["FACEPROOF_HOST"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["FACEPROOF_METRICS_PORT"]["value"] == "9109"
    assert {p["name"]: p["containerPort"] for p in container(agent)["ports"]} == {"metrics": 9109}
    assert agent["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == "9109"
    matcher = {item["name"]: item for item in container(deployments["fp-faceproof-matcher"])["env"]}
    assert "FACEPROOF_HOST" not in matcher and matcher["FACEPROOF_METRICS_PORT"]["value"] == "9100"
