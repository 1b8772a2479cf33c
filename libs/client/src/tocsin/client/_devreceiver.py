"""The dev stack's log receiver: notifications printed in `tocsin dev`'s output.

`tocsin dev` routes every notification to this receiver (a webhook on a
loopback port served from a thread of the supervisor) unless
`TOCSIN_ROUTES_FILE` names a routing file, so a new user sees what would have
been sent without configuring a destination, and the notifier has a route.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["LogReceiver", "describe_notification"]

# Short timers so a notification shows up seconds after its alert.
_ROUTES = """\
# Written by `tocsin dev`: every notification goes to its log receiver.
route:
  receiver: log
  group_by: [alertname, service]
  group_wait: 1s
  group_interval: 10s
  repeat_interval: 4h
receivers:
  - name: log
    type: webhook
    url: {url}
"""
_MAX_BODY_BYTES = 4 * 1024 * 1024
# How often the idle receiver looks for a stop request on its own (`close` wakes it).
_IDLE_POLL_SECONDS = 3600.0


def describe_notification(body: dict[str, Any]) -> str:
    """One line for a webhook notification: status, receiver, group and its alerts."""
    group = " ".join(f"{k}={v}" for k, v in sorted(body.get("group_labels", {}).items()))
    names = sorted({str(item.get("alert", {}).get("name", "?")) for item in body.get("alerts", [])})
    return (
        f"{body.get('status', '?')} to receiver {body.get('receiver', '?')} [{group}]: "
        f"{body.get('firing_count', 0)} firing, {body.get('resolved_count', 0)} resolved "
        f"({', '.join(names)})"
    )


class LogReceiver:
    """A webhook endpoint that prints each notification it receives."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self._say = say
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = min(int(self.headers.get("content-length") or 0), _MAX_BODY_BYTES)
                raw = self.rfile.read(length)
                try:
                    line = describe_notification(json.loads(raw))
                except (ValueError, AttributeError):
                    line = f"a notification that is not Tocsin's JSON ({length} bytes)"
                receiver._say(line)
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the line above is the log

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._port: int = self._server.server_address[1]
        # The loop looks for a stop request only when its select returns: rather than
        # every 0.5 s (socketserver's default) at rest, `close` wakes it with a connection.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            args=(_IDLE_POLL_SECONDS,),
            name="dev-log-receiver",
            daemon=True,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}/notify"

    def start(self) -> None:
        self._thread.start()

    def write_routes(self, directory: Path) -> Path:
        """A routing file sending everything here; returns its path."""
        path = directory / "routes.yaml"
        path.write_text(_ROUTES.format(url=self.url))
        return path

    def close(self) -> None:
        stopper = threading.Thread(target=self._server.shutdown, name="dev-log-receiver-stop")
        stopper.start()
        while stopper.is_alive():
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self._port), timeout=1).close()
            stopper.join(0.1)
        self._server.server_close()
