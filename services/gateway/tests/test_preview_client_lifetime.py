"""The gateway's preview forwarding client lives as long as the app: kept alive between
previews, closed by the app's shutdown (not left to the process's exit)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from conftest import TEST_JWT_SECRET

from tocsin.client.devserver import RedisServer
from tocsin.common.preview import PREVIEW_PATH
from tocsin.gateway.app import build_app
from tocsin.gateway.settings import GatewaySettings


class _Notifier(ThreadingHTTPServer):
    """Answers every preview with 200 over keep-alive; `closed` is set when a client
    closes its connection."""

    closed = threading.Event()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real notifier answers

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        body = b'{"title": "42"}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def finish(self) -> None:
        # `handle` returned: the client closed the connection.
        super().finish()
        _Notifier.closed.set()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def notifier() -> Iterator[_Notifier]:
    server = _Notifier(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    _Notifier.closed.clear()
    thread = threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


async def test_the_preview_client_keeps_its_connection_until_the_app_shuts_down_then_closes_it(
    redis_server: RedisServer, notifier: _Notifier, user_token: Callable[..., str]
) -> None:
    settings = GatewaySettings(
        redis_url=redis_server.url,
        jwt_secret=TEST_JWT_SECRET,
        notifier_url=f"http://127.0.0.1:{notifier.server_address[1]}",
    )
    app = build_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as gateway,
    ):
        answer = await gateway.post(
            PREVIEW_PATH,
            json={"receiver_type": "slack"},
            headers={"authorization": f"Bearer {user_token()}"},
        )
        assert answer.status_code == 200, answer.text
        assert not notifier.closed.wait(0.5), "the connection is kept for the next preview"
    # The process lives on: only the app's shutdown can have closed it.
    assert notifier.closed.wait(10), "the app's shutdown closes the preview client"
