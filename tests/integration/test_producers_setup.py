"""Producers set up as docs/producers.md says: a real Prometheus from the documented
snippet, Basic auth, PagerDuty-worded refusals, change events, and TLS on ingest and
the gateway for clients that insist on https."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import ssl
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import redis
import websockets
import yaml
from tests.docs.snippets import snippet
from tests.support import next_frame, wait_until, wait_until_serving

from tocsin.client.devserver import RedisServer, free_port, stop_process
from tocsin.common import keys
from tocsin.common.apikeys import ApiKeyStore

pytestmark = pytest.mark.integration

DEADLINE = 30.0


def _key(redis_server: RedisServer, producer: str) -> str:
    key, _ = ApiKeyStore(redis.Redis.from_url(redis_server.url)).create(producer)
    return key


def _queued_messages(redis_server: RedisServer) -> int:
    return int(
        redis.Redis.from_url(redis_server.url).hlen(f"{keys.DRAMATIQ_NAMESPACE}:alerts.msgs")
    )


def test_basic_auth_password_is_the_key_and_pagerduty_refusals_speak_pagerduty(
    start_service, redis_server: RedisServer
) -> None:
    ingest = start_service("ingest")
    key = _key(redis_server, "basic")
    alert = {"name": "DiskFull", "severity": "critical"}
    basic = base64.b64encode(f"alertmanager:{key}".encode()).decode()
    accepted = httpx.post(f"{ingest.url}/v1/alerts", json=alert,
                          headers={"authorization": f"Basic {basic}"})  # fmt: skip
    assert accepted.status_code == 202, accepted.text
    wrong = base64.b64encode(b"alertmanager:tsk_0123456789abcdef_nope").decode()
    refused = httpx.post(f"{ingest.url}/v1/alerts", json=alert,
                         headers={"authorization": f"Basic {wrong}"})  # fmt: skip
    assert refused.status_code == 401
    assert "api_key_invalid" in refused.json()["detail"]

    payload = {"summary": "CPU hot", "source": "web-1", "severity": "warning"}
    event = {"event_action": "trigger", "payload": payload}
    for routing_key in ("R0UT1NGKEY0123456789abcdefabcdef", "tsk_0123456789abcdef_nope"):
        answer = httpx.post(f"{ingest.url}/v2/enqueue", json={**event, "routing_key": routing_key})
        assert answer.status_code == 401
        body = answer.json()
        assert (body["status"], body["message"]) == ("unauthorized", "Invalid routing key")
        [error] = body["errors"]
        assert error.startswith("'routing_key' is not a valid integration key"), error
    resolve = httpx.post(f"{ingest.url}/v2/enqueue",
                         json={"routing_key": key, "event_action": "resolve"})  # fmt: skip
    assert resolve.status_code == 400
    assert resolve.json()["errors"] == ["$.dedup_key: a resolve event needs a dedup_key"]
    assert _queued_messages(redis_server) == 1, "only the Basic-authenticated alert"


async def _first_event(ws_url: str, token: str, channel: str, post: Callable[[], Any],
                       ssl_context: ssl.SSLContext | None = None) -> dict[str, Any]:  # fmt: skip
    async with websockets.connect(
        ws_url, additional_headers={"authorization": f"Bearer {token}"}, ssl=ssl_context
    ) as ws:
        await next_frame(ws, "welcome", DEADLINE)
        await ws.send(json.dumps({"type": "subscribe", "channel": channel}))
        await next_frame(ws, "subscribed", DEADLINE)
        await asyncio.to_thread(post)
        frame = await next_frame(ws, "event", DEADLINE)
        data: dict[str, Any] = frame["data"]
        return data


def test_a_pagerduty_change_event_reaches_the_changes_channel_and_pages_no_one(
    start_service, redis_server: RedisServer, user_token
) -> None:
    ingest = start_service("ingest")
    gateway = start_service("gateway")
    key = _key(redis_server, "deployer")
    change = {"routing_key": key,
              "payload": {"summary": "Deployed checkout v2.3.1", "source": "ci-42",
                          "timestamp": "2026-11-29T22:00:00Z",
                          "custom_details": {"build": 42, "commit": "9f1c2ab"}},
              "links": [{"href": "https://ci.example/42", "text": "build 42"}]}  # fmt: skip

    def post() -> None:
        answer = httpx.post(f"{ingest.url}/v2/change/enqueue", json=change, timeout=10)
        assert answer.status_code == 202, answer.text
        assert answer.json() == {"status": "success", "message": "Change event processed"}

    data = asyncio.run(_first_event(gateway.ws_url, user_token(), "changes", post))
    assert data["type"] == "change.received"
    recorded = data["change"]
    assert (recorded["summary"], recorded["source"], recorded["producer"]) == (
        "Deployed checkout v2.3.1", "ci-42", "deployer")  # fmt: skip
    assert recorded["custom_details"] == {"build": 42, "commit": "9f1c2ab"}
    assert recorded["links"] == [{"href": "https://ci.example/42", "text": "build 42"}]
    assert _queued_messages(redis_server) == 0, "a change is no alert: nothing to process"
    # Kept on the change timeline: the channel's stream holds it for late subscribers.
    assert redis.Redis.from_url(redis_server.url).xlen(keys.channel_stream("changes")) == 1

    bad = httpx.post(f"{ingest.url}/v2/change/enqueue", json={**change, "routing_key": "x"})
    assert bad.status_code == 401
    assert bad.json()["message"] == "Invalid routing key"
    invalid = httpx.post(f"{ingest.url}/v2/change/enqueue", json={"routing_key": key})
    assert invalid.status_code == 400
    assert invalid.json()["status"] == "invalid event"


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key, made here with openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a self-signed certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def test_ingest_and_gateway_serve_tls_for_clients_that_insist_on_https(
    start_service, redis_server: RedisServer, user_token, self_signed: tuple[Path, Path]
) -> None:
    cert, private_key = self_signed
    tls = {"TOCSIN_TLS_CERT_FILE": str(cert), "TOCSIN_TLS_KEY_FILE": str(private_key)}
    start_service("processor")
    ingest = start_service("ingest", wait=False, **tls)
    gateway = start_service("gateway", wait=False, **tls)
    trusted = ssl.create_default_context(cafile=str(cert))
    for service in (ingest, gateway):
        wait_until(
            lambda s=service: _answers(f"https://127.0.0.1:{s.port}/readyz", trusted),
            DEADLINE, f"{service.name} over https",
        )  # fmt: skip
    with pytest.raises(httpx.HTTPError):  # plain http is not served on a TLS port
        httpx.get(f"http://127.0.0.1:{ingest.port}/readyz", timeout=5)
    key = _key(redis_server, "pd-https")
    payload = {"summary": "Checkout down", "source": "lb-1", "severity": "critical"}
    event = {
        "routing_key": key,
        "event_action": "trigger",
        "dedup_key": "tls-1",
        "payload": payload,
    }

    def post() -> None:
        answer = httpx.post(f"https://127.0.0.1:{ingest.port}/v2/enqueue", json=event,
                            verify=trusted, timeout=10)  # fmt: skip
        assert answer.status_code == 202, answer.text

    data = asyncio.run(
        _first_event(f"wss://127.0.0.1:{gateway.port}/ws", user_token(), "alerts", post, trusted)
    )
    assert data["type"] == "alert.created"
    assert data["alert"]["fingerprint"] == "tls-1"


def _answers(url: str, context: ssl.SSLContext) -> bool:
    try:
        return httpx.get(url, verify=context, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], str]]:
    """Start a real Prometheus with the given configuration; yields `start(config)`."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip(
            "prometheus is not installed (apt-get install prometheus; "
            "tests/integration/test_observability_prometheus.py installs it as root)"
        )
    processes: list[subprocess.Popen[bytes]] = []

    def start(config: dict[str, Any]) -> str:
        path = tmp_path / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        port = free_port()
        log = tmp_path / "prometheus.log"
        process = subprocess.Popen(
            [binary, f"--config.file={path}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
             # Its first send precedes the discovery of the target; resend soon after.
             "--rules.alert.resend-delay=1s"],
            stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        processes.append(process)
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(f"{url}/-/ready", process, DEADLINE, log.read_text)
        return url

    yield start
    for process in processes:
        stop_process(process)


def test_real_prometheus_configured_as_documented_sends_its_alerts_to_tocsin(
    start_service, redis_server: RedisServer, user_token, prometheus, tmp_path: Path
) -> None:
    start_service("processor")
    ingest = start_service("ingest")
    gateway = start_service("gateway")
    key = _key(redis_server, "prometheus")
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "documented", "interval": "1s", "rules": [
        {"alert": "DocumentedSetup", "expr": "vector(1)",
         "labels": {"severity": "critical", "service": "docs"},
         "annotations": {"summary": "sent as docs/producers.md says"}}]}]}))  # fmt: skip
    config = {"global": {"evaluation_interval": "1s"}, "rule_files": [str(rules)],
              **snippet("prometheus", urlsplit(ingest.url).netloc, key)}  # fmt: skip
    prometheus(config)
    headers = {"authorization": f"Bearer {user_token()}"}

    def stored() -> list[dict[str, Any]]:
        query = {"label": "alertname=DocumentedSetup", "fields": "full"}
        page = httpx.get(f"{gateway.url}/v1/alerts", params=query, headers=headers, timeout=10)
        return list(page.json()["alerts"])

    [alert] = wait_until(stored, 60, "Prometheus's alert in Tocsin")
    assert (alert["severity"], alert["service"], alert["producer"]) == (
        "critical", "docs", "prometheus")  # fmt: skip
    assert alert["summary"] == "sent as docs/producers.md says"
