"""`RestingServer`: uvicorn ticking once a second still refreshes `Date` and stops on a signal."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from email.utils import parsedate_to_datetime

import httpx
import uvicorn
from tests.support import wait_until

from tocsin.client.devserver import free_port
from tocsin.common.ops import RestingServer, ops_app


async def _always_ready() -> tuple[bool, dict[str, str]]:
    return True, {}


def test_resting_server_keeps_the_date_header_current_and_stops_on_a_signal() -> None:
    port = free_port()
    config = uvicorn.Config(
        ops_app(_always_ready),
        host="127.0.0.1",
        port=port,
        log_config=None,
        lifespan="off",
        loop="asyncio",
    )
    server = RestingServer(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}/healthz"

    def serving() -> bool:
        try:
            return httpx.get(url).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(serving, 30, "the server answering")
    first = parsedate_to_datetime(httpx.get(url).headers["date"])
    time.sleep(2.5)
    later = parsedate_to_datetime(httpx.get(url).headers["date"])
    assert (later - first).total_seconds() >= 1, "the Date header moves on each second"

    server.handle_exit(signal.SIGTERM, None)
    thread.join(30)
    assert not thread.is_alive(), "a stop signal ends the server"
