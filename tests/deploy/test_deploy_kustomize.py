"""The kustomize overlays rendered by `kubectl kustomize` and checked like the chart."""

from __future__ import annotations

import base64
import functools
import shutil
import subprocess

import pytest

from tests.deploy.manifests import (
    PRODUCER_PATHS,
    REPO,
    SERVICES,
    Manifest,
    check_grace_covers_shutdown,
    check_selectors_and_ports,
    check_service_deployment,
    ingress_routes,
    load_documents,
    named,
    of_kind,
    tocsin_deployments,
    validate_all,
)

OVERLAYS = REPO / "deploy" / "k8s" / "overlays"
KUBECTL = shutil.which("kubectl")

pytestmark = pytest.mark.skipif(
    KUBECTL is None, reason="kubectl is not on PATH: `kubectl kustomize` renders the overlays"
)


@functools.cache
def render(overlay: str) -> list[Manifest]:
    assert KUBECTL is not None
    result = subprocess.run(
        [KUBECTL, "kustomize", str(OVERLAYS / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return load_documents(result.stdout)


def env_config(objects: list[Manifest]) -> dict[str, str]:
    (config,) = [
        cm
        for cm in of_kind(objects, "ConfigMap")
        if cm["metadata"]["name"].startswith("tocsin-env-")
    ]
    data: dict[str, str] = config["data"]
    return data


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_overlay_renders_objects_valid_for_kubernetes_1_29_to_1_32(overlay: str) -> None:
    validate_all(render(overlay))


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_overlay_runs_every_service_hardened_with_probes_and_its_command(overlay: str) -> None:
    objects = render(overlay)
    for service, deployment in tocsin_deployments(objects).items():
        check_service_deployment(service, deployment)
        check_grace_covers_shutdown(deployment)
        # The generated ConfigMap's hashed name is what the pod must reference.
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        ref = container["envFrom"][0]["configMapRef"]["name"]
        assert ref in {cm["metadata"]["name"] for cm in of_kind(objects, "ConfigMap")}, service


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_overlay_selectors_and_ports_line_up_and_ingress_routes_ws_to_gateway(overlay: str) -> None:
    objects = render(overlay)
    check_selectors_and_ports(objects)
    routes = ingress_routes(objects)
    assert routes[("tocsin.example.com", "/ws")] == "gateway"
    assert routes[("tocsin.example.com", "/")] == "gateway"
    producer_host = "tocsin.example.com" if overlay == "dev" else "alerts.example.com"
    for path in PRODUCER_PATHS:
        assert routes[(producer_host, path)] == "ingest"


def test_dev_overlay_runs_one_replica_each_with_debug_logs_and_its_own_redis() -> None:
    objects = render("dev")
    for deployment in of_kind(objects, "Deployment"):
        assert deployment["spec"]["replicas"] == 1
    assert env_config(objects)["TOCSIN_LOG_LEVEL"] == "DEBUG"
    redis = named(objects, "StatefulSet", "redis")
    assert "--appendonly" in redis["spec"]["template"]["spec"]["containers"][0]["args"]
    assert of_kind(objects, "HorizontalPodAutoscaler") == []


def test_dev_redis_requires_the_password_every_service_connects_with() -> None:
    objects = render("dev")
    (container,) = named(objects, "StatefulSet", "redis")["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    env = {e["name"]: e for e in container["env"]}
    # The readiness probe's valkey-cli authenticates with the same password.
    assert env["REDISCLI_AUTH"]["value"] == "$(REDIS_PASSWORD)"
    ref = env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    (secret,) = [s for s in of_kind(objects, "Secret") if s["metadata"]["name"] == ref["name"]]
    password = base64.b64decode(secret["data"][ref["key"]]).decode()
    assert len(password) >= 16
    url = base64.b64decode(secret["data"]["url"]).decode()
    assert url == f"redis://:{password}@redis:6379/0"
    # No password-less URL is left where a service could pick it up.
    assert "REDIS_URL" not in env_config(objects)
    for service, deployment in tocsin_deployments(objects).items():
        (service_container,) = deployment["spec"]["template"]["spec"]["containers"]
        (redis_url,) = [e for e in service_container["env"] if e["name"] == "REDIS_URL"]
        assert redis_url["valueFrom"]["secretKeyRef"] == {"name": ref["name"], "key": "url"}, (
            service
        )


def test_prod_overlay_scales_protects_and_uses_an_external_redis() -> None:
    objects = render("prod")
    assert of_kind(objects, "StatefulSet") == []
    assert all(svc["metadata"]["name"] != "redis" for svc in of_kind(objects, "Service"))
    hpas = {
        hpa["spec"]["scaleTargetRef"]["name"] for hpa in of_kind(objects, "HorizontalPodAutoscaler")
    }
    assert hpas == {"gateway", "ingest", "processor", "notifier"}
    pdbs = {pdb["metadata"]["name"] for pdb in of_kind(objects, "PodDisruptionBudget")}
    assert pdbs == set(SERVICES)
    deployments = tocsin_deployments(objects)
    assert deployments["gateway"]["spec"]["replicas"] >= 2
    assert deployments["gateway"]["spec"]["template"]["spec"]["topologySpreadConstraints"]
    for deployment in deployments.values():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        (redis_url,) = [e for e in container["env"] if e["name"] == "REDIS_URL"]
        assert redis_url["valueFrom"]["secretKeyRef"] == {"name": "tocsin-redis", "key": "url"}
        assert container["resources"]["requests"]["cpu"] != "25m"  # sized, not the base's
    assert of_kind(objects, "Secret") == []  # the operator creates tocsin-auth
