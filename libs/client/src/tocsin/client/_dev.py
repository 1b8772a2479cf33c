"""`tocsin dev`: a private Redis-compatible server and all five services, supervised.

Each service runs as its own process (`python -m tocsin.client <service>`) in
its own session, so a terminal's Ctrl-C reaches only this supervisor, which
then stops the children in order. Children also get SIGTERM from the kernel if
the supervisor dies abruptly (PR_SET_PDEATHSIG), so none is left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from tocsin.client._devstate import dev_state_path, write_dev_state
from tocsin.common.apikeys import ApiKeyStore
from tocsin.common.auth import mint_token
from tocsin.common.redis import sync_client
from tocsin.common.server import RedisServer, free_port

__all__ = ["SERVICES", "run_dev"]

SERVICES = ("processor", "notifier", "scheduler", "ingest", "gateway")
DEFAULT_PORTS = {"gateway": 8080, "ingest": 8081, "processor": 8082, "notifier": 8083,
                 "scheduler": 8084}  # fmt: skip
_COLOURS = {"redis": 90, "gateway": 36, "ingest": 32, "processor": 35, "notifier": 33,
            "scheduler": 34}  # fmt: skip
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Ask the kernel to SIGTERM this child when its parent dies (Linux only)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]


class Supervisor:
    """Starts the services, relays their output with a prefix, and stops them."""

    def __init__(self, colour: bool, out: Callable[[str], None]) -> None:
        self._colour = colour
        self._out = out
        self._children: list[Child] = []
        self._lock = threading.Lock()

    def prefix(self, name: str) -> str:
        label = f"{name:<9}|"
        return f"\x1b[{_COLOURS.get(name, 37)}m{label}\x1b[0m " if self._colour else label + " "

    def say(self, name: str, line: str) -> None:
        with self._lock:
            self._out(self.prefix(name) + line)

    def start(self, name: str, env: dict[str, str]) -> None:
        process = subprocess.Popen(
            [sys.executable, "-m", "tocsin.client", name],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self._children.append(Child(name, process))
        threading.Thread(target=self._relay, args=(name, process), daemon=True).start()

    def _relay(self, name: str, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            self.say(name, raw.decode(errors="replace").rstrip())

    def exited(self) -> Child | None:
        return next((c for c in self._children if c.process.poll() is not None), None)

    def stop(self, timeout: float = 10.0) -> None:
        for child in reversed(self._children):
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in self._children:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                child.process.wait(remaining)
            except subprocess.TimeoutExpired:
                self.say(child.name, "did not stop in time; killing")
                child.process.kill()
                child.process.wait()


def _choose_ports(base_port: int | None) -> dict[str, int]:
    if base_port is None:
        return dict(DEFAULT_PORTS)
    if base_port == 0:
        return {name: free_port() for name in DEFAULT_PORTS}
    return {name: base_port + i for i, name in enumerate(DEFAULT_PORTS)}


def run_dev(base_port: int | None = None, out: Callable[[str], None] = print) -> int:
    """Run everything until SIGINT or SIGTERM; return the exit status."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    supervisor = Supervisor(colour=sys.stdout.isatty(), out=out)
    redis_url = os.environ.get("REDIS_URL", "")
    server: RedisServer | None = None
    if not redis_url:
        server = RedisServer()
        server.start()
        redis_url = server.url
        supervisor.say("redis", f"{server.binary} listening on {redis_url}")
    else:
        supervisor.say("redis", f"using REDIS_URL {redis_url}")

    ports = _choose_ports(base_port)
    jwt_secret = os.environ.get("TOCSIN_JWT_SECRET") or secrets.token_urlsafe(32)
    token = mint_token(
        jwt_secret, "dev", scopes=("read", "write", "ingest", "admin"), ttl=30 * 86400
    )
    urls = {
        "gateway": f"http://127.0.0.1:{ports['gateway']}",
        "ws": f"ws://127.0.0.1:{ports['gateway']}/ws",
        "ingest": f"http://127.0.0.1:{ports['ingest']}",
    }
    status = 0
    try:
        for name in SERVICES:
            env = dict(os.environ)
            env.update(
                REDIS_URL=redis_url,
                TOCSIN_PORT=str(ports[name]),
                TOCSIN_LOG_FORMAT="console",
                TOCSIN_JWT_SECRET=jwt_secret,
                PYTHONUNBUFFERED="1",
            )
            supervisor.start(name, env)
        # Ingest requires a producer credential; `tocsin send` reads this one.
        api_key, _ = ApiKeyStore(sync_client(redis_url)).create("dev", description="tocsin dev")
        state_path = write_dev_state({"urls": urls, "token": token, "api_key": api_key,
                                      "redis_url": redis_url, "ports": ports,
                                      "pid": os.getpid()})  # fmt: skip
        supervisor.say("dev", f"console   {urls['gateway']}/#token={token}")
        supervisor.say("dev", f"ingest    {urls['ingest']}/v1/alerts")
        supervisor.say("dev", f"websocket {urls['ws']}")
        supervisor.say("dev", f"metrics   http://127.0.0.1:<port>/metrics on ports {ports}")
        supervisor.say("dev", f"health    {urls['gateway']}/v1/health (dev token as bearer)")
        supervisor.say("dev", f"api key   {api_key}")
        supervisor.say("dev", f"dev token and URLs saved in {state_path}")
        supervisor.say("dev", "try: tocsin send --name DiskFull --severity critical; tocsin watch")
        while not stop.wait(0.2):
            crashed = supervisor.exited()
            if crashed is not None:
                supervisor.say(crashed.name, f"exited with {crashed.process.returncode}")
                status = 1
                break
    finally:
        supervisor.stop()
        if server is not None:
            server.close()
        with contextlib.suppress(OSError):
            dev_state_path().unlink()
    return status
