"""The browser SDK (`tocsin-client.js`) and the console page, against real gateways.

The SDK runs in Node.js with its built-in WebSocket (`--experimental-websocket`, the same
API browsers have), so what it does on a reconnect is checked, not assumed.
"""

from __future__ import annotations

import json
import queue
import shutil
import signal
import subprocess
import threading
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tocsin.common.events import EventPublisher

pytestmark = pytest.mark.integration

NODE = shutil.which("node")

CLIENT_SCRIPT = """
import { TocsinClient } from %(module)s;
const client = new TocsinClient({
  url: %(urls)s,
  token: %(token)s,
  channels: ["alerts"],
  backoff: { base: 0.05, factor: 2, cap: 0.5 },
  onStatus: (state) => console.log(JSON.stringify({ status: state })),
  onSubscribed: (channel) => console.log(JSON.stringify({ subscribed: channel })),
  onEvent: (frame) => console.log(JSON.stringify({ offset: frame.offset, n: frame.data.n })),
  onFatal: (error) => console.log(JSON.stringify({ fatal: error.code })),
});
client.start();
"""


class Lines:
    """Reads a child's stdout on a thread so the test can wait with a deadline."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, args=(process,), daemon=True).start()

    def _read(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            self._queue.put(json.loads(raw))

    def next(self, within: float = 30.0) -> dict[str, Any]:
        return self._queue.get(timeout=within)

    def until(self, wanted: dict[str, Any], within: float = 30.0) -> list[dict[str, Any]]:
        seen = []
        while True:
            line = self.next(within)
            seen.append(line)
            if all(line.get(k) == v for k, v in wanted.items()):
                return seen


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed; the browser SDK runs in it")
def test_browser_sdk_resumes_on_another_gateway_after_a_sigkill_with_every_event_once(
    start_service: Any, redis_server: Any, user_token: Any, tmp_path: Path
) -> None:
    first = start_service("gateway")
    second = start_service("gateway")
    module = resources.files("tocsin.gateway").joinpath("static/tocsin-client.js")
    script = tmp_path / "client.mjs"
    script.write_text(
        CLIENT_SCRIPT
        % {
            "module": json.dumps(Path(str(module)).as_uri()),
            "urls": json.dumps([first.ws_url, second.ws_url]),
            "token": json.dumps(user_token()),
        }
    )
    assert NODE is not None
    node = subprocess.Popen(
        [NODE, "--experimental-websocket", "--no-warnings", str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        lines = Lines(node)
        # "open" comes with the welcome, before the subscribe is even sent: an event
        # published then may precede the subscription's start and is not owed.
        lines.until({"subscribed": "alerts"})
        publisher = EventPublisher(redis.Redis.from_url(redis_server.url))
        # A probe that arrives proves the subscription is live.
        publisher.publish(["alerts"], json.dumps({"n": 0}))
        lines.until({"n": 0})
        first.signal(signal.SIGKILL)
        for n in range(1, 11):
            publisher.publish(["alerts"], json.dumps({"n": n}))
        received = [line for line in lines.until({"n": 10}) if "n" in line]
        assert [line["n"] for line in received] == list(range(1, 11))
        assert [line["offset"] for line in received] == list(range(2, 12))
    finally:
        node.kill()
        node.wait()


def test_console_page_is_served_and_loads_the_browser_sdk(start_service: Any) -> None:
    gateway = start_service("gateway")
    page = httpx.get(f"{gateway.url}/", timeout=10)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/console/app.js">' in page.text
    app = httpx.get(f"{gateway.url}/console/app.js", timeout=10)
    assert app.headers["content-type"].startswith("text/javascript")
    assert 'from "/sdk/tocsin-client.js"' in app.text
    assert httpx.get(f"{gateway.url}/console/missing.js", timeout=10).status_code == 404
    sdk = httpx.get(f"{gateway.url}/sdk/tocsin-client.js", timeout=10)
    assert sdk.status_code == 200
    assert "export class TocsinClient" in sdk.text
