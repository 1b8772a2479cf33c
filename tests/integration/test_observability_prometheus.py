"""Dashboards, alert rules and docs/metrics.md proven against a real Prometheus and real services.

Prometheus (the Debian package) scrapes every service on free loopback ports;
after alerts have gone through, every PromQL expression of every Grafana panel
and every alert rule is evaluated through its HTTP API.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import websockets
import yaml
from prometheus_client.parser import text_string_to_metric_families
from tests.support import debian_binary, next_frame, wait_until_serving

from tocsin.client.devserver import free_port, stop_process

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "deploy" / "grafana").glob("*.json"))
RULES = ROOT / "deploy" / "prometheus" / "rules.yaml"
METRICS_DOC = ROOT / "docs" / "metrics.md"
SERVICES = ("processor", "notifier", "scheduler", "ingest", "gateway")
# Grafana fills these in before it sends a query; Prometheus would not parse them.
GRAFANA_VARIABLES = {"$__rate_interval": "30s", "$__interval": "5s", "$__range": "5m"}


class Prometheus:
    """A real Prometheus process scraping the given targets every second."""

    def __init__(self, workdir: Path, targets: dict[str, int]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {
                    "job_name": f"tocsin-{name}",
                    "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
                }
                for name, port in targets.items()
            ],
        }
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / "prometheus.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    "prometheus",
                    f"--config.file={config_path}",
                    f"--storage.tsdb.path={workdir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 60.0) -> None:
        wait_until_serving(
            f"{self.url}/-/ready", self.process, timeout, lambda: self.log_path.read_text()[-2000:]
        )

    def query(self, expr: str) -> dict:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert response.status_code == 200, (expr, body)
        assert body["status"] == "success", (expr, body)
        return body["data"]

    def wait_until(self, expr: str, timeout: float = 60.0) -> None:
        """Poll until `expr` returns a non-empty result."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.query(expr)["result"]:
                return
            time.sleep(0.25)
        raise AssertionError(f"no data for {expr} within {timeout}s")

    def stop(self) -> None:
        stop_process(self.process, 15)


def _panel_expressions() -> list[tuple[str, str, str]]:
    found = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for variable, value in GRAFANA_VARIABLES.items():
                    expr = expr.replace(variable, value)
                found.append((path.name, panel["title"], expr))
    return found


def _rule_expressions() -> list[tuple[str, str]]:
    rules = yaml.safe_load(RULES.read_text())
    return [
        (rule.get("alert") or rule.get("record"), rule["expr"])
        for group in rules["groups"]
        for rule in group["rules"]
    ]


async def _drive(ws_url: str, token: str, send_alerts: Callable[[], None]) -> None:
    """Hold a subscribed socket while alerts go through, so latency is measured at send."""
    async with websockets.connect(
        ws_url, additional_headers={"authorization": f"Bearer {token}"}
    ) as ws:
        await ws.send(json.dumps({"type": "subscribe", "channel": "alerts"}))
        await next_frame(ws, "subscribed", 20)
        await asyncio.to_thread(send_alerts)
        events = 0
        while events < 3:
            if json.loads(await asyncio.wait_for(ws.recv(), 20)).get("type") == "event":
                events += 1


@pytest.fixture
def prometheus_installed() -> None:
    debian_binary("prometheus", "prometheus")


@pytest.fixture
def running(start_service, user_token, tmp_path: Path, prometheus_installed: None) -> Iterator:
    """Every service running, alerts driven through, and a Prometheus that has scraped them."""
    # The health job every second instead of every 15 s, so the test need not wait.
    schedules = json.dumps(
        [{"name": "health_score", "job": "health_score", "cron": "* * * * * *", "catch_up": "skip"}]
    )
    overrides = {"scheduler": {"TOCSIN_SCHEDULES": schedules}}
    services = {name: start_service(name, **overrides.get(name, {})) for name in SERVICES}
    prometheus = Prometheus(tmp_path, {name: service.port for name, service in services.items()})
    producer = {"authorization": f"Bearer {user_token(scopes=('ingest',))}"}

    def send_alerts() -> None:
        for index in range(3):
            alert = {"name": f"Obs{index}", "severity": "critical", "service": "db"}
            response = httpx.post(
                f"{services['ingest'].url}/v1/alerts", json=alert, headers=producer, timeout=10
            )
            assert response.status_code == 202, response.text
        # A duplicate, so the dedup panels have something to count.
        alert = {"name": "Obs0", "severity": "critical", "service": "db"}
        httpx.post(f"{services['ingest'].url}/v1/alerts", json=alert, headers=producer, timeout=10)
        # A refusal, so the rejection panels have a reason to show.
        httpx.post(f"{services['ingest'].url}/v1/alerts", content=b"{", headers=producer)

    try:
        prometheus.wait_ready()
        asyncio.run(_drive(services["gateway"].ws_url, user_token(), send_alerts))
        prometheus.wait_until('count(up{job=~"tocsin-.*"} == 1) == 5')
        prometheus.wait_until("sum(tocsin_e2e_latency_seconds_count) > 0")
        prometheus.wait_until("tocsin_health_score")
        # rate() needs two samples of the counters as they are after the drive.
        time.sleep(2.5)
        yield services, prometheus
    finally:
        prometheus.stop()


def test_rules_file_passes_promtool(prometheus_installed: None) -> None:
    result = subprocess.run(
        ["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_panel_returns_data_every_rule_parses_and_the_metrics_doc_matches(
    running,
) -> None:
    services, prometheus = running
    panels = _panel_expressions()
    assert len(DASHBOARDS) >= 7
    assert len(panels) > 30
    empty = []
    for dashboard, title, expr in panels:
        if not prometheus.query(expr)["result"]:
            empty.append(f"{dashboard} / {title}: {expr}")
    assert not empty, "panels without data:\n" + "\n".join(empty)
    for _name, expr in _rule_expressions():
        prometheus.query(expr)  # asserts the expression parses and evaluates
    # Prometheus loaded the same file: every rule is known to its rules API.
    loaded = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    assert {rule["name"] for group in loaded for rule in group["rules"]} == {
        name for name, _ in _rule_expressions()
    }
    _check_metrics_doc(services)


def _documented_metrics() -> dict[str, tuple[str, set[str]]]:
    """docs/metrics.md's table: metric name -> (type, labels)."""
    documented: dict[str, tuple[str, set[str]]] = {}
    row = re.compile(r"^\|\s*`(tocsin_[a-z0-9_]+)`\s*\|\s*(\w+)\s*\|([^|]*)\|")
    for line in METRICS_DOC.read_text().splitlines():
        match = row.match(line)
        if match:
            labels = set(re.findall(r"`([a-z_]+)`", match[3]))
            documented[match[1]] = (match[2], labels)
    return documented


def _exposed_metrics(text: str) -> dict[str, tuple[str, set[str]]]:
    exposed: dict[str, tuple[str, set[str]]] = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("tocsin_") or family.name.endswith("_created"):
            continue
        name = family.name + "_total" if family.type == "counter" else family.name
        labels: set[str] = set()
        for sample in family.samples:
            labels |= set(sample.labels) - {"le", "quantile"}
        exposed[name] = (family.type, labels)
    return exposed


def _check_metrics_doc(services: dict) -> None:
    """docs/metrics.md lists exactly the metric families the services expose."""
    documented = _documented_metrics()
    exposed: dict[str, tuple[str, set[str]]] = {}
    for service in services.values():
        text = httpx.get(f"{service.url}/metrics", timeout=10).text
        for name, (kind, labels) in _exposed_metrics(text).items():
            known = exposed.get(name, (kind, set()))
            exposed[name] = (kind, known[1] | labels)
    undocumented = sorted(set(exposed) - set(documented))
    assert not undocumented, f"exposed but not in docs/metrics.md: {undocumented}"
    missing = sorted(set(documented) - set(exposed))
    assert not missing, f"in docs/metrics.md but exposed by no service: {missing}"
    for name, (kind, labels) in exposed.items():
        doc_kind, doc_labels = documented[name]
        assert doc_kind == kind, f"{name}: documented as {doc_kind}, exposed as {kind}"
        # Labels are only visible once a series exists; those seen must be documented.
        assert labels <= doc_labels, f"{name}: labels {labels - doc_labels} not documented"
