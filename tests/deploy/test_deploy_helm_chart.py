"""The Helm chart rendered, linted and schema-checked offline by Helm's own library."""

from __future__ import annotations

import base64
import copy
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.deploy.manifests import (
    CHART_DIR,
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
from tocsin.common import keys
from tocsin.common.broker import ALERTS_QUEUE, NOTIFICATIONS_QUEUE

RELEASE = "tocsin-test"
NAMESPACE = "alerting"
LINT_KUBE_VERSION = "v1.32.0"
PROD_VALUES = CHART_DIR / "ci" / "prod-values.yaml"
DEV_VALUES = CHART_DIR / "ci" / "dev-values.yaml"

ALL_FEATURES: dict[str, Any] = {
    "processor": {"keda": {"enabled": True}},
    "notifier": {"keda": {"enabled": True}},
    "ingress": {"enabled": True, "tlsSecretName": "tocsin-tls"},
    "metrics": {
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "grafanaDashboards": {"enabled": True},
    },
    "networkPolicy": {"enabled": True},
    "auth": {"jwtIssuer": "https://sso.example.com/", "jwtPublicKey": "-----BEGIN PUBLIC KEY-----"},
}


def values_file(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


VALUE_SETS = {
    "defaults": {},
    "prod": values_file(PROD_VALUES),
    "dev": values_file(DEV_VALUES),
    "all-features": ALL_FEATURES,
    "all-features-httproute": {**ALL_FEATURES, "ingress": {"enabled": True, "mode": "httproute"}},
}


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    for linked in ("grafana", "prometheus"):
        target = CHART_DIR / "files" / linked
        assert target.resolve().is_dir(), f"{target} must link to an existing deploy/{linked}/"
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


def render(chart: helm.Chart, values: dict[str, Any]) -> list[Manifest]:
    manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return [
        obj
        for path, text in sorted(manifests.items())
        if path.endswith(".yaml")
        for obj in load_documents(text)
    ]


def container_env(deployment: Manifest) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    return env


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_chart_renders_objects_valid_for_kubernetes_1_29_to_1_32(
    chart: helm.Chart, value_set: str
) -> None:
    objects = render(chart, VALUE_SETS[value_set])
    validate_all(objects)
    for obj in objects:
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
        assert obj["metadata"]["labels"]["app.kubernetes.io/name"] == "tocsin"


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_chart_lints_strict_without_findings(value_set: str) -> None:
    report = helm.lint(
        CHART_DIR, VALUE_SETS[value_set], strict=True, kube_version=LINT_KUBE_VERSION
    )
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_every_service_has_a_hardened_probed_deployment_running_its_command(
    chart: helm.Chart, value_set: str
) -> None:
    objects = render(chart, VALUE_SETS[value_set])
    for service, deployment in tocsin_deployments(objects).items():
        # Only the Tilt values leave the root writable, for live_update's file sync.
        check_service_deployment(service, deployment, read_only_root=value_set != "dev")
        check_grace_covers_shutdown(deployment)


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_selectors_match_labels_and_service_ports_match_container_ports(
    chart: helm.Chart, value_set: str
) -> None:
    check_selectors_and_ports(render(chart, VALUE_SETS[value_set]))


def test_gateway_ingest_and_notifier_services_expose_http_and_metrics_ports(
    chart: helm.Chart,
) -> None:
    objects = render(chart, {})
    for service in SERVICES:
        ports = {
            p["name"] for p in named(objects, "Service", f"{RELEASE}-{service}")["spec"]["ports"]
        }
        expected = (
            {"http", "metrics"} if service in ("gateway", "ingest", "notifier") else {"metrics"}
        )
        assert ports == expected, service


@pytest.mark.parametrize("mode", ["ingress", "httproute"])
def test_metrics_have_a_port_of_their_own_that_no_ingress_route_reaches(
    chart: helm.Chart, mode: str
) -> None:
    objects = render(chart, {"ingress": {"enabled": True, "mode": mode}})
    for service in ("gateway", "ingest"):
        deployment = named(objects, "Deployment", f"{RELEASE}-{service}")
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        env = {e["name"]: e.get("value") for e in container["env"]}
        # The service serves /metrics only on TOCSIN_METRICS_PORT, not on `http`.
        assert env["TOCSIN_METRICS_PORT"] == str(ports["metrics"])
        assert ports["metrics"] != ports["http"]
        metrics = {
            p["name"]: p for p in named(objects, "Service", f"{RELEASE}-{service}")["spec"]["ports"]
        }["metrics"]
        assert metrics["targetPort"] == "metrics"
    backends = [
        path["backend"]["service"]["port"]["name"]
        for ingress in of_kind(objects, "Ingress")
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    ] + [
        ref["port"]
        for route in of_kind(objects, "HTTPRoute")
        for rule in route["spec"]["rules"]
        for ref in rule["backendRefs"]
    ]
    assert backends
    assert all(port in ("http", 8080, 8081) for port in backends), backends


def test_gateway_spreads_across_zones_and_outlasts_its_drain_window(chart: helm.Chart) -> None:
    objects = render(chart, {"gateway": {"drainSeconds": 90}})
    gateway = named(objects, "Deployment", f"{RELEASE}-gateway")
    pod = gateway["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > 90
    keys_spread = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
    assert "topology.kubernetes.io/zone" in keys_spread
    for constraint in pod["topologySpreadConstraints"]:
        assert (
            constraint["labelSelector"]["matchLabels"] == gateway["spec"]["selector"]["matchLabels"]
        )


def test_ingress_routes_ws_and_dashboard_api_to_gateway_and_producer_paths_to_ingest(
    chart: helm.Chart,
) -> None:
    objects = render(chart, ALL_FEATURES)
    host = "tocsin.example.com"
    routes = ingress_routes(objects)
    assert routes[(host, "/ws")] == f"{RELEASE}-gateway"
    assert routes[(host, "/")] == f"{RELEASE}-gateway"
    for path in PRODUCER_PATHS:
        assert routes[(host, path)] == f"{RELEASE}-ingest"
    ws_ingress = named(objects, "Ingress", f"{RELEASE}-ws")
    annotations = ws_ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "3600"
    assert annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"] == "3600"
    # Only the WebSocket Ingress holds connections for an hour.
    api_ingress = named(objects, "Ingress", RELEASE)
    assert "nginx.ingress.kubernetes.io/proxy-read-timeout" not in api_ingress["metadata"].get(
        "annotations", {}
    )


def test_producer_host_keeps_alert_queries_on_the_gateway(chart: helm.Chart) -> None:
    values = {"ingress": {"enabled": True, "producerHost": "alerts.example.com"}}
    routes = ingress_routes(render(chart, values))
    assert routes[("alerts.example.com", "/v1/alerts")] == f"{RELEASE}-ingest"
    assert ("tocsin.example.com", "/v1/alerts") not in routes
    assert routes[("tocsin.example.com", "/")] == f"{RELEASE}-gateway"


def test_httproute_replaces_ingress_and_sends_only_producer_posts_to_ingest(
    chart: helm.Chart,
) -> None:
    objects = render(chart, VALUE_SETS["all-features-httproute"])
    assert of_kind(objects, "Ingress") == []
    (route,) = of_kind(objects, "HTTPRoute")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    by_backend: dict[str, list[dict[str, Any]]] = {}
    ws_timeouts = None
    for rule in route["spec"]["rules"]:
        (backend,) = rule["backendRefs"]
        by_backend.setdefault(backend["name"], []).extend(rule["matches"])
        if any(m["path"]["value"] == "/ws" for m in rule["matches"]):
            ws_timeouts = rule["timeouts"]
            assert backend["name"] == f"{RELEASE}-gateway"
    assert ws_timeouts == {"request": "3600s", "backendRequest": "3600s"}
    ingest_matches = by_backend[f"{RELEASE}-ingest"]
    assert {m["path"]["value"] for m in ingest_matches} == set(PRODUCER_PATHS)
    assert {m["method"] for m in ingest_matches} == {"POST"}


def test_workers_scale_on_cpu_by_default_and_on_queue_length_with_keda(chart: helm.Chart) -> None:
    default = render(chart, {})
    hpas = {
        hpa["spec"]["scaleTargetRef"]["name"] for hpa in of_kind(default, "HorizontalPodAutoscaler")
    }
    assert hpas == {f"{RELEASE}-{s}" for s in ("gateway", "ingest", "processor", "notifier")}
    assert of_kind(default, "ScaledObject") == []
    for deployment in of_kind(default, "Deployment"):
        # The HPA owns the replica count; a fixed one would fight it on every upgrade.
        assert "replicas" not in deployment["spec"] or deployment["metadata"]["name"].endswith(
            "scheduler"
        )

    keda = render(chart, ALL_FEATURES)
    hpas = {
        hpa["spec"]["scaleTargetRef"]["name"] for hpa in of_kind(keda, "HorizontalPodAutoscaler")
    }
    assert hpas == {f"{RELEASE}-gateway", f"{RELEASE}-ingest"}
    scaled = {obj["metadata"]["name"]: obj for obj in of_kind(keda, "ScaledObject")}
    for worker, queue in (("processor", ALERTS_QUEUE), ("notifier", NOTIFICATIONS_QUEUE)):
        obj = scaled[f"{RELEASE}-{worker}"]
        assert obj["spec"]["scaleTargetRef"]["name"] == f"{RELEASE}-{worker}"
        (trigger,) = obj["spec"]["triggers"]
        # The list Dramatiq's Redis broker keeps the queue's pending messages in.
        assert trigger["metadata"]["listName"] == f"{keys.DRAMATIQ_NAMESPACE}:{queue}"
        assert trigger["metadata"]["address"] == f"{RELEASE}-redis:6379"


def test_bundled_redis_is_one_valkey_with_aof_on_a_volume_claim(chart: helm.Chart) -> None:
    objects = render(chart, {})
    (redis,) = of_kind(objects, "StatefulSet")
    assert redis["spec"]["replicas"] == 1
    args = redis["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert [c["metadata"]["name"] for c in redis["spec"]["volumeClaimTemplates"]] == ["data"]


def test_bundled_redis_requires_a_generated_password_every_service_uses(
    chart: helm.Chart,
) -> None:
    objects = render(chart, {"processor": {"keda": {"enabled": True}}})
    secret = named(objects, "Secret", f"{RELEASE}-redis")
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    password = base64.b64decode(secret["data"]["redis-password"]).decode()
    assert len(password) >= 32
    (redis,) = of_kind(objects, "StatefulSet")
    container = redis["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": f"{RELEASE}-redis",
        "key": "redis-password",
    }
    args = container["args"]
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    for deployment in of_kind(objects, "Deployment"):
        env_list = container_env(deployment)
        names = [e["name"] for e in env_list]
        # $(REDIS_PASSWORD) expands only if the variable is defined earlier in the list.
        assert names.index("REDIS_PASSWORD") < names.index("REDIS_URL")
        url = env_list[names.index("REDIS_URL")]["value"]
        assert url == f"redis://:$(REDIS_PASSWORD)@{RELEASE}-redis:6379/0"
    (scaled,) = of_kind(objects, "ScaledObject")
    assert scaled["spec"]["triggers"][0]["metadata"]["passwordFromEnv"] == "REDIS_PASSWORD"
    # The chart can set the password, or take it from an existing Secret.
    given = render(chart, {"redis": {"auth": {"password": "chosen-password-0123456789"}}})
    data = named(given, "Secret", f"{RELEASE}-redis")["data"]["redis-password"]
    assert base64.b64decode(data) == b"chosen-password-0123456789"
    existing = render(chart, {"redis": {"auth": {"existingSecret": "corp-redis"}}})
    assert [s["metadata"]["name"] for s in of_kind(existing, "Secret")] == [f"{RELEASE}-auth"]
    (redis,) = of_kind(existing, "StatefulSet")
    env = {e["name"]: e for e in redis["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "corp-redis"


def test_external_redis_password_comes_from_a_secret_into_the_url(chart: helm.Chart) -> None:
    values = {
        "redis": {"enabled": False},
        "externalRedis": {"url": "rediss://redis.internal:6380/2", "existingSecret": "redis-auth"},
        "processor": {"keda": {"enabled": True}},
    }
    objects = render(chart, values)
    assert of_kind(objects, "StatefulSet") == []
    processor = named(objects, "Deployment", f"{RELEASE}-processor")
    env = container_env(processor)
    names = [e["name"] for e in env]
    # $(REDIS_PASSWORD) expands only if the variable is defined earlier in the list.
    assert names.index("REDIS_PASSWORD") < names.index("REDIS_URL")
    password = env[names.index("REDIS_PASSWORD")]["valueFrom"]["secretKeyRef"]
    assert password == {"name": "redis-auth", "key": "redis-password"}
    assert (
        env[names.index("REDIS_URL")]["value"]
        == "rediss://:$(REDIS_PASSWORD)@redis.internal:6380/2"
    )
    (scaled,) = of_kind(objects, "ScaledObject")
    trigger = scaled["spec"]["triggers"][0]["metadata"]
    assert trigger["address"] == "redis.internal:6380"
    assert trigger["databaseIndex"] == "2"
    assert trigger["enableTLS"] == "true"


SENTINEL = {
    "redis": {"enabled": False},
    "externalRedis": {
        "sentinel": {
            "hosts": [f"sentinel-{i}.data.svc:26379" for i in range(3)],
            "masterName": "tocsin",
        },
        "existingSecret": "redis-auth",
    },
    "processor": {"keda": {"enabled": True}},
}


def test_sentinel_settings_reach_every_service(chart: helm.Chart) -> None:
    objects = render(chart, SENTINEL)
    validate_all(objects)
    (scaled,) = of_kind(objects, "ScaledObject")
    assert scaled["spec"]["triggers"][0]["type"] == "redis-sentinel"
    for deployment in of_kind(objects, "Deployment"):
        env = {e["name"]: e for e in container_env(deployment)}
        assert env["TOCSIN_REDIS_SENTINEL_MASTER"]["value"] == "tocsin"
        assert len(env["TOCSIN_REDIS_SENTINELS"]["value"].split(",")) == 3
        assert "REDIS_URL" not in env


def test_external_redis_without_an_address_is_refused(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmRenderError, match=r"externalRedis\.url"):
        chart.render({"redis": {"enabled": False}}, name=RELEASE, namespace=NAMESPACE)


def test_generated_auth_secret_is_kept_across_uninstall_and_existing_secret_is_used(
    chart: helm.Chart,
) -> None:
    objects = render(chart, {})
    secret = named(objects, "Secret", f"{RELEASE}-auth")
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert set(secret["data"]) == {"jwt-secret"}
    assert all(len(value) >= 64 for value in secret["data"].values())

    objects = render(chart, {"auth": {"existingSecret": "corp-tocsin"}})
    assert [s["metadata"]["name"] for s in of_kind(objects, "Secret")] == [f"{RELEASE}-redis"]
    for deployment in of_kind(objects, "Deployment"):
        refs = {
            e["valueFrom"]["secretKeyRef"]["name"]
            for e in container_env(deployment)
            if e["name"] == "TOCSIN_JWT_SECRET"
        }
        component = deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        assert refs == (
            {"corp-tocsin"} if component in ("gateway", "ingest", "notifier") else set()
        )


def test_routes_and_schedules_come_from_the_config_map(chart: helm.Chart) -> None:
    routes = "route:\n  receiver: oncall\nreceivers:\n  - name: oncall\n"
    objects = render(chart, {"config": {"routes": routes}})
    config = named(objects, "ConfigMap", f"{RELEASE}-config")
    assert yaml.safe_load(config["data"]["routes.yaml"]) == yaml.safe_load(routes)
    assert "schedules.json" not in config["data"]  # empty: the scheduler's built-in schedules
    notifier = named(objects, "Deployment", f"{RELEASE}-notifier")
    env = {e["name"]: e.get("value") for e in container_env(notifier)}
    assert env["TOCSIN_ROUTES_FILE"] == "/etc/tocsin/routes.yaml"
    volumes = notifier["spec"]["template"]["spec"]["volumes"]
    assert {"name": "config", "configMap": {"name": f"{RELEASE}-config"}} in volumes

    schedules = [{"name": "nightly", "job": "daily_analytics", "cron": "5 0 * * *"}]
    objects = render(chart, {"config": {"schedules": json.dumps(schedules)}})
    config = named(objects, "ConfigMap", f"{RELEASE}-config")
    assert json.loads(config["data"]["schedules.json"]) == schedules
    scheduler = named(objects, "Deployment", f"{RELEASE}-scheduler")
    env = {e["name"]: e.get("value") for e in container_env(scheduler)}
    assert env["TOCSIN_SCHEDULES"] == "/etc/tocsin/schedules.json"


def test_dashboards_in_deploy_grafana_become_labelled_config_maps(chart: helm.Chart) -> None:
    objects = render(chart, ALL_FEATURES)
    shipped = {
        path.name: json.loads(path.read_text())
        for path in (REPO / "deploy" / "grafana").glob("*.json")
    }
    packaged = {
        key: json.loads(value)
        for cm in of_kind(objects, "ConfigMap")
        if cm["metadata"]["labels"].get("grafana_dashboard") == "1"
        for key, value in cm["data"].items()
    }
    assert packaged == shipped


def test_dashboard_config_maps_carry_each_json_file_unchanged(tmp_path: Path) -> None:
    # A copy of the chart with a dashboard of its own, so the mechanism is proven even
    # before deploy/grafana has files.
    copied = tmp_path / "tocsin"
    shutil.copytree(CHART_DIR, copied, symlinks=False)
    shutil.rmtree(copied / "files" / "grafana")
    (copied / "files" / "grafana").mkdir()
    dashboard = {"title": "Tocsin Gateway", "panels": [{"expr": 'sum(rate(x{job="y"}[5m]))'}]}
    (copied / "files" / "grafana" / "Gateway_Overview.json").write_text(json.dumps(dashboard))
    with helm.Chart.load(copied) as chart:
        objects = render(chart, {"metrics": {"grafanaDashboards": {"enabled": True}}})
    (config_map,) = [
        cm
        for cm in of_kind(objects, "ConfigMap")
        if "grafana_dashboard" in cm["metadata"]["labels"]
    ]
    assert config_map["metadata"]["name"] == f"{RELEASE}-dashboard-gateway-overview"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["Gateway_Overview.json"]) == dashboard
    validate_all([config_map])


def test_prometheus_rule_carries_the_rule_groups_of_deploy_prometheus(chart: helm.Chart) -> None:
    objects = render(chart, ALL_FEATURES)
    (rule,) = of_kind(objects, "PrometheusRule")
    rules_file = REPO / "deploy" / "prometheus" / "rules.yaml"
    expected = yaml.safe_load(rules_file.read_text())["groups"] if rules_file.exists() else []
    assert rule["spec"]["groups"] == expected


def test_network_policies_allow_only_the_architectures_flows(chart: helm.Chart) -> None:
    objects = render(chart, VALUE_SETS["prod"])
    policies = {p["metadata"]["name"]: p for p in of_kind(objects, "NetworkPolicy")}
    assert set(policies) == {f"{RELEASE}-{s}" for s in SERVICES}
    for service in SERVICES:
        policy = policies[f"{RELEASE}-{service}"]
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
        rules = policy["spec"]["ingress"]
        # Only gateway and ingest take traffic from the ingress controller, only the
        # notifier from the gateway (template previews); all get scraped.
        assert len(rules) == (2 if service in ("gateway", "ingest", "notifier") else 1), service
        for rule in rules:
            [source] = rule["from"]
            if "namespaceSelector" not in source:
                assert service == "notifier"
                assert source["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == (
                    "gateway"
                )
                assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
                continue
            [namespaces] = source["namespaceSelector"]["matchExpressions"]
            assert namespaces["key"] == "kubernetes.io/metadata.name"
            assert namespaces["operator"] == "In"
            assert namespaces["values"] in (["ingress-nginx"], ["monitoring"])
            [port] = rule["ports"]
            if namespaces["values"] == ["ingress-nginx"]:
                assert port["port"] == "http"
            else:
                # Prometheus reaches the metrics port; on gateway and ingest it is not http.
                expected = "metrics" if service in ("gateway", "ingest") else "http"
                assert port["port"] == expected, service
        egress = policy["spec"]["egress"]
        # DNS and Redis for all; the notifier alone leaves the cluster for its receivers,
        # the gateway alone reaches the notifier.
        assert len(egress) == (3 if service in ("notifier", "gateway") else 2), service
    # On by default, the bundled Redis included.
    bundled = render(chart, {})
    redis_policy = named(bundled, "NetworkPolicy", f"{RELEASE}-redis")
    assert redis_policy["spec"]["egress"] == []


def test_service_monitor_scrapes_the_metrics_port_of_the_release(chart: helm.Chart) -> None:
    objects = render(chart, ALL_FEATURES)
    (monitor,) = of_kind(objects, "ServiceMonitor")
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    scraped = [
        svc for svc in of_kind(objects, "Service")
        if all(svc["metadata"]["labels"].get(k) == v for k, v in selector.items())
        and any(p["name"] == "metrics" for p in svc["spec"]["ports"])
    ]  # fmt: skip
    assert len(scraped) == len(SERVICES)


@pytest.mark.parametrize(
    ("override", "complaint"),
    [
        ({"gateway": {"replicaCount": "3"}}, "replicaCount"),
        ({"replicas": 3}, "additional properties"),
        ({"gateway": {"replicas": 3}}, "additional properties"),
        ({"ingress": {"mode": "nginx"}}, "mode"),
        ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
        ({"externalRedis": {"url": "http://redis:6379"}}, "url"),
        ({"processor": {"keda": {"enabled": "yes"}}}, "enabled"),
    ],
)
def test_schema_refuses_wrong_types_and_unknown_keys(
    chart: helm.Chart, override: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(helm.HelmValuesError, match=complaint):
        chart.render(copy.deepcopy(override), name=RELEASE, namespace=NAMESPACE)


def test_every_value_is_documented_with_a_comment(chart: helm.Chart) -> None:
    """Each leaf of a schema-closed section has a comment line right above its key."""
    lines = (CHART_DIR / "values.yaml").read_text().splitlines()
    schema = chart.schema
    assert schema is not None
    definitions = schema.get("definitions", {})
    undocumented: list[str] = []

    def resolve(node_schema: dict[str, Any]) -> dict[str, Any]:
        ref = node_schema.get("$ref", "")
        resolved: dict[str, Any] = definitions[ref.rsplit("/", 1)[-1]] if ref else node_schema
        return resolved

    def walk(node: yaml.Node, node_schema: dict[str, Any], path: str) -> None:
        assert isinstance(node, yaml.MappingNode)
        for key_node, value_node in node.value:
            key = f"{path}.{key_node.value}".lstrip(".")
            child = resolve(node_schema["properties"][key_node.value])
            section = isinstance(value_node, yaml.MappingNode) and not value_node.flow_style
            if child.get("additionalProperties") is False and section:
                walk(value_node, child, key)
            elif not lines[key_node.start_mark.line - 1].strip().startswith("#"):
                undocumented.append(key)

    walk(yaml.compose((CHART_DIR / "values.yaml").read_text()), schema, "")
    assert undocumented == [], "\n".join(undocumented)


def test_each_service_has_its_own_template_folder(chart: helm.Chart) -> None:
    manifests = chart.render({}, name=RELEASE, namespace=NAMESPACE)
    for service in SERVICES:
        rendered = {
            path.rsplit("/", 1)[-1]
            for path, text in manifests.items()
            if path.startswith(f"tocsin/templates/{service}/") and text.strip()
        }
        assert {"deployment.yaml", "service.yaml", "pdb.yaml"} <= rendered, service


@pytest.mark.parametrize("value_set", ["defaults", "prod"])
def test_notes_tell_how_to_reach_the_console_and_send_a_first_alert(
    chart: helm.Chart, value_set: str
) -> None:
    notes = chart.render(VALUE_SETS[value_set], name=RELEASE, namespace=NAMESPACE)[
        "tocsin/templates/NOTES.txt"
    ]
    if value_set == "defaults":
        assert f"port-forward svc/{RELEASE}-gateway 8080:8080" in notes
        assert f"port-forward svc/{RELEASE}-ingest 8081:8081" in notes
    else:
        assert "https://tocsin.example.com/" in notes
        assert "TOCSIN_INGEST_URL=https://alerts.example.com" in notes
    assert "tocsin send --name" in notes
    assert '"$TOCSIN_INGEST_URL/v1/alerts"' in notes
