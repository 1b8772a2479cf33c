"""The lifecycle with real producers: Prometheus -> Alertmanager -> Tocsin, and Prometheus
pushing to Tocsin directly, with short intervals (docs/lifecycle.md).

Prometheus evaluates every second a rule on a gauge this test serves; Tocsin's own
resolve timeout is 2 s, so anything Tocsin resolved by its timer would show at once.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import websockets
import yaml
from prometheus_client import CollectorRegistry, Gauge, start_http_server
from tests.integration.test_ingest_roundtrip import (
    DEADLINE,
    alertmanager,  # noqa: F401 - the fixture, reused
)
from tests.support import debian_binary, metric, next_frame, wait_until, wait_until_serving

from tocsin.client.devserver import RedisServer, free_port, stop_process
from tocsin.common import keys
from tocsin.common.apikeys import ApiKeyStore
from tocsin.common.models import label_set_fingerprint

pytestmark = pytest.mark.integration

RESOLVE_TIMEOUT = "2"
NOTIFICATIONS = f"{keys.DRAMATIQ_NAMESPACE}:notifications"


class Chain:
    """Tocsin (short timeouts), a gauge Prometheus alerts on, and Prometheus itself."""

    def __init__(self, start_service: Callable[..., Any], redis_server: RedisServer, tmp: Path):
        start_service(
            "processor",
            TOCSIN_AUTO_RESOLVE_SECONDS=RESOLVE_TIMEOUT,
            TOCSIN_SWEEP_INTERVAL_SECONDS="0.2",
            TOCSIN_DEDUP_WINDOW_SECONDS="1",
        )
        self.ingest = start_service("ingest")
        self.gateway = start_service("gateway")
        self.key, _ = ApiKeyStore(redis.Redis.from_url(redis_server.url)).create("roundtrip")
        self.redis = redis.Redis.from_url(redis_server.url)
        self.tmp = tmp
        registry = CollectorRegistry()
        self.switch = Gauge("chain_switch", "1 while the test wants the alert firing",
                            registry=registry)  # fmt: skip
        self.switch_port = free_port()
        self._server, _ = start_http_server(self.switch_port, "127.0.0.1", registry)
        self.labels = {"alertname": "ChainSwitch", "severity": "critical", "job": "switch",
                       "instance": f"127.0.0.1:{self.switch_port}"}  # fmt: skip
        self.fingerprint = label_set_fingerprint(self.labels)
        self.prometheus: subprocess.Popen[bytes] | None = None

    def start_prometheus(self, alertmanager_url: str | None, direct: bool) -> None:
        targets: list[dict[str, Any]] = []
        if alertmanager_url:
            targets.append({"static_configs": [{"targets": [alertmanager_url.split("//")[1]]}]})
        if direct:
            targets.append({
                "static_configs": [{"targets": [self.ingest.url.split("//")[1]]}],
                "authorization": {"credentials": self.key},
            })  # fmt: skip
        rules = self.tmp / "rules.yml"
        rules.write_text(yaml.safe_dump({"groups": [{"name": "chain", "rules": [
            {"alert": "ChainSwitch", "expr": "chain_switch > 0",
             "labels": {"severity": "critical"}}]}]}))  # fmt: skip
        config = self.tmp / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "alerting": {"alertmanagers": targets},
            "scrape_configs": [{"job_name": "switch", "static_configs": [
                {"targets": [f"127.0.0.1:{self.switch_port}"]}]}],
        }))  # fmt: skip
        port = free_port()
        log_path = self.tmp / "prometheus.log"
        with log_path.open("wb") as log:
            self.prometheus = subprocess.Popen(
                ["prometheus", f"--config.file={config}",
                 f"--storage.tsdb.path={self.tmp / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{port}", "--rules.alert.resend-delay=1s"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        wait_until_serving(f"http://127.0.0.1:{port}/-/ready", self.prometheus, 60,
                           lambda: log_path.read_text()[-2000:])  # fmt: skip

    def post(self, path: str, body: Any, expected: int) -> None:
        response = httpx.post(f"{self.ingest.url}{path}", json=body, timeout=10,
                              headers={"authorization": f"Bearer {self.key}"})  # fmt: skip
        assert response.status_code == expected, response.text

    def stop_prometheus(self) -> None:
        if self.prometheus is not None:
            stop_process(self.prometheus, 15)
            self.prometheus = None

    def close(self) -> None:
        self.stop_prometheus()
        self._server.shutdown()

    def alert(self) -> dict[str, Any] | None:
        alert_id = self.redis.hget(keys.dedup(self.fingerprint), "id")
        raw = self.redis.get(keys.alert(alert_id.decode())) if alert_id else None
        return json.loads(raw) if raw else None

    def status(self) -> str:
        alert = self.alert()
        return alert["status"] if alert else ""

    def notified(self, alert_id: str) -> list[str]:
        kinds = []
        for raw in self.redis.hvals(f"{NOTIFICATIONS}.msgs"):
            request = json.loads(raw)["args"][0]
            if request["alert"]["id"] == alert_id:
                kinds.append(request["transition"])
        return sorted(kinds)

    def timeline(self, alert_id: str) -> list[str]:
        return [json.loads(e)["kind"] for e in self.redis.lrange(keys.timeline(alert_id), 0, -1)]


@pytest.fixture
def chain(start_service, redis_server, tmp_path: Path) -> Iterator[Chain]:
    debian_binary("prometheus", "prometheus")
    built = Chain(start_service, redis_server, tmp_path)
    yield built
    built.close()


@pytest.mark.timeout(600)
def test_alertmanager_owns_resolution_and_a_late_firing_message_changes_nothing(
    chain: Chain,
    alertmanager: Callable[..., str],  # noqa: F811
) -> None:
    am_url = alertmanager(chain.ingest.url, chain.key)
    chain.switch.set(1)
    chain.start_prometheus(am_url, direct=False)
    wait_until(lambda: chain.status() == "firing", 60, "the alert firing in Tocsin")
    fired = chain.alert()
    assert fired is not None
    assert fired["source"] == "alertmanager"

    # Well past Tocsin's resolve timeout, with Alertmanager holding it and sending nothing.
    time.sleep(4 * float(RESOLVE_TIMEOUT))
    assert chain.status() == "firing", "no timer resolves what Alertmanager holds"

    chain.switch.set(0)
    wait_until(lambda: chain.status() == "resolved", 60, "Alertmanager's resolved in Tocsin")
    resolved = chain.alert()
    assert resolved is not None
    assert resolved["id"] == fired["id"]
    assert chain.notified(fired["id"]) == ["firing", "resolved"]

    # The incident's firing message delivered again (a producer retry after the resolve).
    item = {"status": "firing", "labels": chain.labels, "startsAt": fired["starts_at"],
            "endsAt": "0001-01-01T00:00:00Z"}  # fmt: skip
    late = {"version": "4", "status": "firing", "receiver": "tocsin", "groupKey": "{}:{}",
            "alerts": [item]}  # fmt: skip
    chain.post("/v1/integrations/alertmanager", late, 200)
    wait_until(
        lambda: "stale" in chain.timeline(fired["id"]), 30, "the late message on the timeline"
    )
    assert chain.status() == "resolved"
    assert chain.notified(fired["id"]) == ["firing", "resolved"], "nothing paged again"


@pytest.mark.timeout(600)
def test_direct_push_and_alertmanager_are_one_alert_resolved_at_ends_at(
    chain: Chain,
    alertmanager: Callable[..., str],  # noqa: F811
) -> None:
    am_url = alertmanager(chain.ingest.url, chain.key)
    chain.switch.set(1)
    chain.start_prometheus(am_url, direct=True)
    ingest = chain.ingest.url
    wait_until(
        lambda: metric(ingest, "tocsin_ingest_alerts_received_total",
                       format="alertmanager", producer="roundtrip") > 0
        and metric(ingest, "tocsin_ingest_alerts_received_total",
                   format="prometheus", producer="roundtrip") > 0,
        60, "both paths delivering",
    )  # fmt: skip
    assert chain.redis.zcard(keys.alert_index()) == 1, "one Tocsin alert for both paths"
    fired = chain.alert()
    assert fired is not None
    assert fired["status"] == "firing"

    # Prometheus stops re-sending: the last endsAt passes and the alert resolves at it.
    chain.stop_prometheus()
    last = chain.alert()
    assert last is not None
    wait_until(lambda: chain.status() == "resolved", 60, "the alert resolved at endsAt")
    resolved = chain.alert()
    assert resolved is not None
    assert resolved["id"] == fired["id"]
    assert resolved["resolved_at"] == resolved["ends_at"]
    assert chain.redis.zcard(keys.alert_index()) == 1
    assert chain.notified(fired["id"]) == ["firing", "resolved"]


def test_slow_resends_of_one_incident_page_once(chain: Chain) -> None:
    for _ in range(3):
        # As Prometheus sends them: an endsAt ahead (here a minute), so the chain's 2 s
        # resolve timeout does not race the 1.5 s between resends.
        ends_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60))
        body = [{"labels": chain.labels, "startsAt": "2026-01-01T00:00:00Z", "endsAt": ends_at}]
        chain.post("/api/v2/alerts", body, 200)
        time.sleep(1.5)  # beyond the 1 s dedup window
    wait_until(lambda: (chain.alert() or {}).get("count") == 3, 30, "three occurrences")
    alert = chain.alert()
    assert alert is not None
    assert chain.notified(alert["id"]) == ["firing"]


def test_four_quick_resends_end_with_count_four_on_a_websocket(chain: Chain, user_token) -> None:
    alert = {"name": "Quick", "severity": "warning", "labels": {"host": "q-1"}}

    async def watch() -> int:
        async with websockets.connect(chain.gateway.ws_url,
                                      additional_headers={"authorization": f"Bearer {user_token()}"}
                                      ) as ws:  # fmt: skip
            await next_frame(ws, "welcome", DEADLINE)
            await ws.send(json.dumps({"type": "subscribe", "channel": "alerts"}))
            await next_frame(ws, "subscribed", DEADLINE)
            for _ in range(4):
                await asyncio.to_thread(chain.post, "/v1/alerts", alert, 202)
            last = 0
            deadline = time.monotonic() + DEADLINE
            while last < 4 and time.monotonic() < deadline:
                frame = await next_frame(ws, "event", DEADLINE)
                last = frame["data"]["alert"]["count"]
            return last

    assert asyncio.run(watch()) == 4


def test_pagerduty_resolve_of_an_unknown_key_creates_nothing(chain: Chain) -> None:
    event = {"routing_key": chain.key, "event_action": "resolve", "dedup_key": "never-seen"}
    chain.post("/v2/enqueue", event, 202)
    chain.post("/v1/alerts", {"name": "Marker", "severity": "info"}, 202)
    wait_until(lambda: chain.redis.zcard(keys.alert_index()) == 1, 30, "the marker alert")
    assert chain.redis.hget(keys.dedup("never-seen"), "id") is None
