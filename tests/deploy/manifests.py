"""Checks shared by the Helm and kustomize tests: they look at rendered objects, not text."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import kubernetes_validate.utils
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "deploy" / "helm" / "tocsin"
SERVICES = ("gateway", "ingest", "processor", "notifier", "scheduler")
PRODUCER_PATHS = ("/v1/alerts", "/v1/integrations/alertmanager", "/api/v2/alerts", "/v2/enqueue")
KUBE_VERSIONS = ("1.29.0", "1.30.0", "1.31.0", "1.32.0")
# Kinds from CRDs: kubernetes-validate ships no schema for them, so they are checked by
# the chart tests' own assertions instead.
CRD_KINDS = frozenset(
    {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ScaledObject", "HTTPRoute"}
)

Manifest = dict[str, Any]

# kubernetes-validate re-reads and re-parses its multi-megabyte definitions file on every
# call; the files never change during a run, so parse each one once. Validation itself is
# still the library's own `validate`.
kubernetes_validate.utils.schema_contents = functools.cache(  # type: ignore[assignment]
    kubernetes_validate.utils.schema_contents
)


def load_documents(text: str) -> list[Manifest]:
    """Every non-empty YAML document of a multi-document stream."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def validate_all(objects: Iterable[Manifest]) -> None:
    """Validate each object against the API schemas of every supported Kubernetes version."""
    failures = []
    for obj in objects:
        if obj["kind"] in CRD_KINDS:
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = ".".join(str(part) for part in exc.path)
                failures.append(
                    f"{version} {obj['kind']}/{obj['metadata']['name']}: {where}: {exc}"
                )
            except kubernetes_validate.SchemaNotFoundError:
                failures.append(f"{version} {obj['kind']}: no schema (unknown kind?)")
    assert not failures, "\n".join(failures)


def of_kind(objects: Iterable[Manifest], kind: str) -> list[Manifest]:
    return [obj for obj in objects if obj["kind"] == kind]


def named(objects: Iterable[Manifest], kind: str, name: str) -> Manifest:
    matches = [obj for obj in of_kind(objects, kind) if obj["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def component(obj: Manifest) -> str:
    labels = obj["spec"]["template"]["metadata"]["labels"]
    return str(labels["app.kubernetes.io/component"])


def workloads(objects: Iterable[Manifest]) -> Iterator[Manifest]:
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet"):
            yield obj


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def tocsin_deployments(objects: Iterable[Manifest]) -> dict[str, Manifest]:
    """The Deployment of each Tocsin service, keyed by service name."""
    found = {component(dep): dep for dep in of_kind(objects, "Deployment")}
    assert sorted(found) == sorted(SERVICES)
    return found


def check_service_deployment(
    service: str, deployment: Manifest, *, read_only_root: bool = True
) -> None:
    """Probes, hardening, resources and the command a Tocsin Deployment must have.

    `read_only_root` is False only for development values, where Tilt syncs sources
    into the container.
    """
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == [service]
    assert "command" not in container, "the image's ENTRYPOINT (tocsin) must stay in charge"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    port_names = {port["name"] for port in container["ports"]}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] in port_names
    security = container["securityContext"]
    pod_security = pod.get("securityContext", {})
    assert security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is True
    assert security["readOnlyRootFilesystem"] is read_only_root
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    seccomp = security.get("seccompProfile") or pod_security.get("seccompProfile")
    assert seccomp == {"type": "RuntimeDefault"}
    assert container["resources"]["requests"]["cpu"]
    assert container["resources"]["requests"]["memory"]
    assert container["resources"]["limits"]["memory"]
    # A read-only root needs a writable scratch volume.
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    assert "/tmp" in mounts
    env = {item["name"]: item for item in container.get("env", [])}
    # Each service gets only the secrets it uses: the signing secret where tokens are verified.
    # (The notifier verifies the token of a template preview the gateway forwards.)
    if service in ("gateway", "ingest", "notifier"):
        assert "secretKeyRef" in env["TOCSIN_JWT_SECRET"]["valueFrom"]
    else:
        assert "TOCSIN_JWT_SECRET" not in env, service
    assert "TOCSIN_API_KEY_PEPPER" not in env, "the pepper is read by no code"


def check_grace_covers_shutdown(deployment: Manifest) -> None:
    """terminationGracePeriodSeconds outlasts the drain window or worker shutdown timeout."""
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {item["name"]: item.get("value") for item in container.get("env", [])}
    window = env.get("TOCSIN_DRAIN_WINDOW") or env.get("TOCSIN_SHUTDOWN_TIMEOUT_SECONDS")
    if window is not None:
        assert pod["terminationGracePeriodSeconds"] > int(window)


def check_selectors_and_ports(objects: list[Manifest]) -> None:
    """Selectors match pod labels; every Service port lands on a container port."""
    pods = []
    for workload in workloads(objects):
        selector = workload["spec"]["selector"]["matchLabels"]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert selects(selector, labels), workload["metadata"]["name"]
        pods.append(workload["spec"]["template"])
    for service in of_kind(objects, "Service"):
        targets = [
            pod for pod in pods if selects(service["spec"]["selector"], pod["metadata"]["labels"])
        ]
        assert len(targets) == 1, f"Service {service['metadata']['name']} selects {len(targets)}"
        container_ports = [
            port for container in targets[0]["spec"]["containers"] for port in container["ports"]
        ]
        names = {port["name"] for port in container_ports}
        numbers = {port["containerPort"] for port in container_ports}
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert target in names or target in numbers, f"{service['metadata']['name']}:{target}"
    deployments = {dep["metadata"]["name"]: dep for dep in of_kind(objects, "Deployment")}
    for hpa in of_kind(objects, "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        assert ref["kind"] == "Deployment"
        assert ref["name"] in deployments
    for pdb in of_kind(objects, "PodDisruptionBudget"):
        selector = pdb["spec"]["selector"]["matchLabels"]
        matching = [
            dep
            for dep in deployments.values()
            if selects(selector, dep["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(matching) == 1, pdb["metadata"]["name"]


def ingress_routes(objects: Iterable[Manifest]) -> dict[tuple[str, str], str]:
    """(host, path) -> backend Service name over every Ingress rule."""
    routes: dict[tuple[str, str], str] = {}
    for ingress in of_kind(objects, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                routes[(rule.get("host", ""), path["path"])] = path["backend"]["service"]["name"]
    return routes
