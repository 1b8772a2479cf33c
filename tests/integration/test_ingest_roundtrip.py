"""Each producer format, posted to ingest, arrives on a WebSocket with its fields mapped.

Real processes all the way: ingest -> Dramatiq queue -> processor -> Redis pub/sub ->
gateway -> WebSocket.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import redis
import websockets
import yaml
from tests.docs.snippets import snippet
from tests.support import debian_binary, next_frame, wait_until_serving

from tocsin.client.devserver import RedisServer, free_port, stop_process
from tocsin.common.apikeys import ApiKeyStore
from tocsin.common.models import label_set_fingerprint

pytestmark = pytest.mark.integration

Frame = dict[str, Any]
# Generous: the machine is shared and slow at times; the wait ends as soon as the frame comes.
DEADLINE = 30.0


class Stack:
    """Processor, ingest and gateway on one Redis, with a producer key."""

    def __init__(self, start_service: Callable[..., Any], redis_server: RedisServer) -> None:
        start_service("processor")
        self.ingest = start_service("ingest")
        self.gateway = start_service("gateway")
        key, _ = ApiKeyStore(redis.Redis.from_url(redis_server.url)).create("roundtrip")
        self.key = key

    def post(self, path: str, body: Any, expected: int) -> httpx.Response:
        response = httpx.post(f"{self.ingest.url}{path}", json=body, timeout=10,
                              headers={"authorization": f"Bearer {self.key}"})  # fmt: skip
        assert response.status_code == expected, response.text
        return response


@pytest.fixture(scope="module")
def stack(start_module_service: Callable[..., Any], module_redis_server: RedisServer) -> Stack:
    """One stack for the module: each test's alerts are its own (names, fingerprints) and
    each test waits for the frames its own alerts cause."""
    return Stack(start_module_service, module_redis_server)


async def _exchange(
    stack: Stack, token: str, steps: list[tuple[Callable[[], None], Callable[[Frame], bool]]]
) -> list[Frame]:
    """Subscribe to `alerts`, then for each step post and wait for the frame it should cause."""
    async with websockets.connect(
        stack.gateway.ws_url, additional_headers={"authorization": f"Bearer {token}"}
    ) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), DEADLINE))["type"] == "welcome"
        await ws.send(json.dumps({"type": "subscribe", "channel": "alerts"}))
        await next_frame(ws, "subscribed", DEADLINE)
        seen: list[Frame] = []
        for post, wanted in steps:
            await asyncio.to_thread(post)
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), DEADLINE))
                if frame.get("type") == "event" and wanted(frame["data"]):
                    seen.append(frame["data"])
                    break
        return seen


def _is(kind: str, **fields: Any) -> Callable[[Frame], bool]:
    def match(data: Frame) -> bool:
        alert = data.get("alert", {})
        return data.get("type") == kind and all(alert.get(k) == v for k, v in fields.items())

    return match


def test_native_alert_round_trips_to_a_websocket(stack: Stack, user_token) -> None:
    alert = {"name": "DiskFull", "severity": "critical", "service": "db", "summary": "95%",
             "labels": {"host": "db-1"}, "starts_at": "2025-06-01T12:00:00+02:00"}  # fmt: skip
    [created] = asyncio.run(_exchange(stack, user_token(), [
        (lambda: stack.post("/v1/alerts", alert, 202), _is("alert.created", name="DiskFull")),
    ]))  # fmt: skip
    received = created["alert"]
    assert received["severity"] == "critical"
    assert received["service"] == "db"
    assert received["summary"] == "95%"
    assert received["labels"] == {"host": "db-1"}
    assert received["producer"] == "roundtrip"
    assert received["starts_at"].startswith("2025-06-01T10:00:00")


def test_alertmanager_webhook_fires_then_resolves_on_a_websocket(stack: Stack, user_token) -> None:

    def notification(status: str, ends_at: str) -> dict[str, Any]:
        return {"version": "4", "groupKey": "{}:{alertname=\"HighLatency\"}", "status": status,
                "receiver": "tocsin", "externalURL": "http://am", "truncatedAlerts": 0,
                "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
                "alerts": [{"status": status, "fingerprint": "5e1f00d",
                            "labels": {"alertname": "HighLatency", "severity": "error",
                                       "service": "api", "instance": "api-1"},
                            "annotations": {"summary": "p99 over 1s"},
                            "startsAt": "2025-06-01T10:00:00Z", "endsAt": ends_at,
                            "generatorURL": "http://prom/graph"}]}  # fmt: skip

    created, resolved = asyncio.run(_exchange(stack, user_token(), [
        (lambda: stack.post("/v1/integrations/alertmanager",
                            notification("firing", "0001-01-01T00:00:00Z"), 200),
         _is("alert.created", name="HighLatency")),
        (lambda: stack.post("/v1/integrations/alertmanager",
                            notification("resolved", "2025-06-01T10:05:00Z"), 200),
         _is("alert.resolved", name="HighLatency")),
    ]))  # fmt: skip
    alert = created["alert"]
    labels = {
        "alertname": "HighLatency",
        "severity": "error",
        "service": "api",
        "instance": "api-1",
    }
    assert alert["fingerprint"] == label_set_fingerprint(labels), "the label set, not the body's"
    assert alert["severity"] == "error"
    assert alert["service"] == "api"
    assert alert["source"] == "alertmanager"
    assert alert["summary"] == "p99 over 1s"
    assert alert["generator_url"] == "http://prom/graph"
    assert resolved["alert"]["id"] == alert["id"]
    assert resolved["alert"]["status"] == "resolved"


def test_prometheus_push_round_trips_to_a_websocket(stack: Stack, user_token) -> None:
    push = [{"labels": {"alertname": "TargetDown", "severity": "warning", "job": "node"},
             "annotations": {"description": "node exporter down"}}]  # fmt: skip
    [created] = asyncio.run(_exchange(stack, user_token(), [
        (lambda: stack.post("/api/v2/alerts", push, 200), _is("alert.created", name="TargetDown")),
    ]))  # fmt: skip
    assert created["alert"]["severity"] == "warning"
    assert created["alert"]["summary"] == "node exporter down"
    assert created["alert"]["labels"]["job"] == "node"


def test_pagerduty_trigger_acknowledge_resolve_round_trip_to_a_websocket(
    stack: Stack, user_token
) -> None:

    def event(action: str, **extra: Any) -> dict[str, Any]:
        return {"routing_key": stack.key, "event_action": action, "dedup_key": "pd-db-7", **extra}

    payload = {"summary": "Replica lag 30s", "source": "db-7", "severity": "critical",
               "component": "mysql", "group": "storage"}  # fmt: skip
    created, acknowledged, resolved = asyncio.run(_exchange(stack, user_token(), [
        (lambda: stack.post("/v2/enqueue", event("trigger", payload=payload), 202),
         _is("alert.created", fingerprint="pd-db-7")),
        (lambda: stack.post("/v2/enqueue", event("acknowledge"), 202),
         _is("alert.acknowledged", fingerprint="pd-db-7")),
        (lambda: stack.post("/v2/enqueue", event("resolve"), 202),
         _is("alert.resolved", fingerprint="pd-db-7")),
    ]))  # fmt: skip
    alert = created["alert"]
    assert alert["name"] == "Replica lag 30s"
    assert alert["severity"] == "critical"
    assert alert["source"] == "db-7"
    assert alert["service"] == "storage"
    assert alert["labels"] == {"component": "mysql", "group": "storage"}
    assert acknowledged["alert"]["id"] == resolved["alert"]["id"] == alert["id"]


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Start a real Alertmanager configured as docs/producers.md says (snippet `documented`);
    yields `start(ingest_url, key, documented)`."""
    binary = debian_binary("prometheus-alertmanager", "prometheus-alertmanager")
    processes: list[subprocess.Popen[bytes]] = []

    def start(ingest_url: str, api_key: str, documented: str = "alertmanager") -> str:
        # The configuration docs/producers.md gives, with short timers for the test.
        settings = snippet(documented, urlsplit(ingest_url).netloc, api_key)
        settings["route"].update(group_wait="0s", group_interval="1s", repeat_interval="1h")
        config = tmp_path / "alertmanager.yml"
        config.write_text(yaml.safe_dump(settings))
        port = free_port()
        log = (tmp_path / "alertmanager.log").open("wb")
        process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.path={tmp_path / 'am-data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
             "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        processes.append(process)
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(
            f"{url}/-/ready", process, DEADLINE, (tmp_path / "alertmanager.log").read_text
        )
        return url

    yield start
    for process in processes:
        stop_process(process)


# The first run on a fresh machine may install Alertmanager with apt-get first.
@pytest.mark.timeout(900)
@pytest.mark.parametrize("documented", ["alertmanager", "alertmanager-basic-auth"])
def test_real_alertmanager_delivers_firing_and_resolved_alerts_to_tocsin(
    stack: Stack, user_token, alertmanager, documented
) -> None:
    am_url = alertmanager(stack.ingest.url, stack.key, documented)
    # Its own alert per configuration: the module's stack already holds the other's.
    name = f"QueueStuck-{documented}"
    labels = {"alertname": name, "severity": "critical", "service": "billing"}
    now = datetime.now(UTC) - timedelta(minutes=1)

    def push(ends_at: datetime | None) -> None:
        alert: dict[str, Any] = {"labels": labels, "annotations": {"summary": "queue stuck"},
                                 "startsAt": now.isoformat()}  # fmt: skip
        if ends_at is not None:
            alert["endsAt"] = ends_at.isoformat()
        response = httpx.post(f"{am_url}/api/v2/alerts", json=[alert], timeout=10)
        assert response.status_code == 200, response.text

    created, resolved = asyncio.run(_exchange(stack, user_token(), [
        (lambda: push(None), _is("alert.created", name=name)),
        (lambda: push(datetime.now(UTC) - timedelta(seconds=1)),
         _is("alert.resolved", name=name)),
    ]))  # fmt: skip
    alert = created["alert"]
    assert alert["severity"] == "critical"
    assert alert["service"] == "billing"
    assert alert["summary"] == "queue stuck"
    assert alert["producer"] == "roundtrip"
    assert len(alert["fingerprint"]) == 16, "Alertmanager's own fingerprint is the dedup key"
    assert resolved["alert"]["id"] == alert["id"]
