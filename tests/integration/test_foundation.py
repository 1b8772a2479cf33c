"""One alert travels the whole way through real processes; `tocsin dev` works as users see it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import websockets
from tests.support import descendants, metric, process_alive, wait_until

from tocsin.client.devserver import RedisServer
from tocsin.common import keys

pytestmark = pytest.mark.integration


async def _receive_alert_event(ws_url: str, token: str, post: Callable[[], None]) -> dict:
    async with websockets.connect(
        ws_url, additional_headers={"authorization": f"Bearer {token}"}
    ) as ws:
        welcome = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert welcome["type"] == "welcome"
        await ws.send(json.dumps({"type": "subscribe", "channel": "alerts"}))
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if frame["type"] == "subscribed":
                break
        await asyncio.to_thread(post)
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if frame["type"] == "event":
                return frame


def test_posted_alert_reaches_a_subscribed_websocket_client(start_service, user_token) -> None:
    processor = start_service("processor")
    ingest = start_service("ingest")
    gateway = start_service("gateway")
    # Ingest takes an API key or a JWT with the `ingest` scope.
    producer = {"authorization": f"Bearer {user_token(scopes=('ingest',))}"}
    alert = {
        "name": "DiskFull",
        "severity": "critical",
        "service": "db",
        "labels": {"host": "db-1", "team": "storage"},
    }
    accepted: list[dict] = []

    def post() -> None:
        response = httpx.post(f"{ingest.url}/v1/alerts", json=alert, headers=producer, timeout=10)
        assert response.status_code == 202, response.text
        accepted.extend(response.json()["accepted"])

    frame = asyncio.run(_receive_alert_event(gateway.ws_url, user_token(), post))
    received = frame["data"]["alert"]
    assert received["id"] == accepted[0]["id"]
    assert received["name"] == "DiskFull"
    assert received["severity"] == "critical"
    assert received["labels"] == {"host": "db-1", "team": "storage"}
    assert frame["channel"] == "alerts"
    assert frame["offset"] >= 1
    assert processor.process.poll() is None


@pytest.fixture(scope="module")
def refusing_ingest(start_module_service: Any) -> Any:
    """One ingest for the bad bodies: each is refused, so none queues anything the next
    body's check could see."""
    return start_module_service("ingest")


@pytest.mark.parametrize(
    ("body", "content_type", "status", "field"),
    [
        (b'{"name": "x", "severity": ', "application/json", 422, "$"),
        (b'{"severity": "critical"}', "application/json", 422, "name"),
        (b'{"name": 42, "severity": "critical"}', "application/json", 422, "$.name"),
        (
            b'{"name": "x", "severity": "critical", "colour": "red"}',
            "application/json",
            422,
            "colour",
        ),
    ],
)
def test_bad_alert_bodies_get_problem_details_and_enqueue_nothing(
    refusing_ingest: Any,
    user_token,
    module_redis_server: RedisServer,
    body: bytes,
    content_type: str,
    status: int,
    field: str,
) -> None:
    ingest = refusing_ingest
    response = httpx.post(
        f"{ingest.url}/v1/alerts",
        content=body,
        headers={
            "content-type": content_type,
            "authorization": f"Bearer {user_token(scopes=('ingest',))}",
        },
        timeout=10,
    )
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == status
    assert problem["type"].startswith("https://")
    assert any(field in e["path"] or field in e["reason"] for e in problem["errors"]), problem
    client = redis.Redis.from_url(module_redis_server.url)
    assert client.hlen(f"{keys.DRAMATIQ_NAMESPACE}:alerts.msgs") == 0


def test_a_body_over_the_limit_is_refused_with_413(
    start_service, user_token, redis_server: RedisServer
) -> None:
    ingest = start_service("ingest", TOCSIN_MAX_BODY_BYTES="1024")
    alert = {"name": "x", "severity": "info", "summary": "y" * 1000, "labels": {"a": "b" * 200}}
    producer = {"authorization": f"Bearer {user_token(scopes=('ingest',))}"}
    response = httpx.post(f"{ingest.url}/v1/alerts", json=alert, headers=producer, timeout=10)
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("application/problem+json")
    client = redis.Redis.from_url(redis_server.url)
    assert client.hlen(f"{keys.DRAMATIQ_NAMESPACE}:alerts.msgs") == 0


@pytest.mark.timeout(300)  # the start alone may take `tocsin dev`'s own 90 s bound
def test_tocsin_dev_send_and_watch_then_sigterm_leaves_no_process(tmp_path: Path) -> None:
    env = dict(os.environ, TOCSIN_DEV_STATE=str(tmp_path / "dev.json"), PYTHONUNBUFFERED="1")
    env.pop("REDIS_URL", None)
    tocsin = [sys.executable, "-m", "tocsin.client"]
    dev_log = (tmp_path / "dev.log").open("wb")
    dev = subprocess.Popen(
        [*tocsin, "dev", "--base-port", "0"], env=env, stdout=dev_log, stderr=subprocess.STDOUT
    )
    try:
        # As long as `tocsin dev` waits for its five services (five interpreters
        # importing at once on a loaded two-core machine).
        deadline = time.monotonic() + 90
        state: dict = {}
        while time.monotonic() < deadline and not state:
            try:
                state = json.loads((tmp_path / "dev.json").read_text())
            except (OSError, ValueError):
                time.sleep(0.1)
        assert state, (tmp_path / "dev.log").read_text()
        for port in state["ports"].values():
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        children = descendants(dev.pid)
        assert len(children) >= 6, "a Redis-compatible server and five services"

        watch = subprocess.Popen(
            [*tocsin, "watch", "--count", "1", "--json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        # A late subscriber would miss the live event: send once the watcher has subscribed.
        gateway = f"http://127.0.0.1:{state['ports']['gateway']}"
        wait_until(lambda: metric(gateway, "tocsin_ws_subscriptions") >= 1, 30, "the watcher")
        send = subprocess.run(
            [*tocsin, "send", "--name", "CpuHot", "--severity", "error", "--label", "host=web-1"],
            env=env, capture_output=True, timeout=30,
        )  # fmt: skip
        assert send.returncode == 0, send.stderr.decode()
        out, err = watch.communicate(timeout=20)
        assert watch.returncode == 0, err.decode()
        event = json.loads(out.decode().strip().splitlines()[0])
        assert event["data"]["alert"]["name"] == "CpuHot"
        assert event["data"]["alert"]["labels"] == {"host": "web-1"}
        assert send.stdout.decode().startswith("accepted " + event["data"]["alert"]["id"])

        dev.send_signal(signal.SIGTERM)
        assert dev.wait(30) == 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(process_alive(pid) for pid in children):
            time.sleep(0.1)
        assert not [pid for pid in children if process_alive(pid)], "processes left behind"
    finally:
        if dev.poll() is None:
            dev.kill()
        dev_log.close()
