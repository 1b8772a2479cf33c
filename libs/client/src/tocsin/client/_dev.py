"""`tocsin dev`: a private Redis-compatible server and all five services, supervised.

Each service runs as its own process (`python -m tocsin.client <service>`) in
its own session, so a terminal's Ctrl-C or hang-up reaches only this
supervisor, which then stops the children in order. Every child, the Redis
server included, also gets SIGTERM from the kernel if the supervisor dies
abruptly (PR_SET_PDEATHSIG), so none is left behind even after a SIGKILL.

Start-up is checked, not assumed: each port must be free before anything
starts, and each service must answer `/healthz` on its port before the stack
is announced. A service that exits or never serves stops the whole stack with
a one-line error naming it and its port, and a non-zero exit status.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from tocsin.client._devreceiver import LogReceiver
from tocsin.client._devstate import dev_state_path, live_dev_pid, remove_dev_state, write_dev_state
from tocsin.client.devserver import RESTING_HZ, RedisServer, free_port
from tocsin.client.devtoken import mint_token
from tocsin.common.apikeys import ApiKeyStore
from tocsin.common.errors import TocsinError
from tocsin.common.ops import on_signals
from tocsin.common.redis import sync_client

__all__ = ["SERVICES", "DevStartError", "run_dev"]

SERVICES = ("processor", "notifier", "scheduler", "ingest", "gateway")
DEFAULT_PORTS = {"gateway": 8080, "ingest": 8081, "processor": 8082, "notifier": 8083,
                 "scheduler": 8084}  # fmt: skip
_COLOURS = {"redis": 90, "gateway": 36, "ingest": 32, "processor": 35, "notifier": 33,
            "scheduler": 34, "notify": 31}  # fmt: skip
_PR_SET_PDEATHSIG = 1
# Generous: five interpreters importing at once on a loaded two-core machine.
START_TIMEOUT_SECONDS = 90.0
# The longest the supervisor sleeps between looks at its children (a child's exit
# wakes it at once; this only bounds a missed wake-up).
_SUPERVISE_SECONDS = 5.0


class DevStartError(TocsinError):
    """The stack could not start; the message names the service and its port."""


def _parent_death_signal() -> Callable[[], None]:
    """A `preexec_fn` asking the kernel to SIGTERM the child when this process dies.

    libc is loaded here, in the parent: loading a library after fork() in a
    threaded process can deadlock. If the parent died before prctl() took
    effect, the child would never get the signal, so it checks and exits.
    """
    parent = os.getpid()
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: Ctrl-C and SIGTERM still stop children
        return lambda: None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


@dataclass
class Child:
    name: str
    port: int
    process: subprocess.Popen[bytes]


class Supervisor:
    """Starts the services, relays their output with a prefix, and stops them."""

    def __init__(self, colour: bool, out: Callable[[str], None]) -> None:
        self._colour = colour
        self._out = out
        self._children: list[Child] = []
        self._lock = threading.Lock()
        self._preexec = _parent_death_signal()

    @property
    def preexec(self) -> Callable[[], None]:
        return self._preexec

    def prefix(self, name: str) -> str:
        label = f"{name:<9}|"
        return f"\x1b[{_COLOURS.get(name, 37)}m{label}\x1b[0m " if self._colour else label + " "

    def say(self, name: str, line: str) -> None:
        with self._lock:
            self._out(self.prefix(name) + line)

    def start(self, name: str, port: int, env: dict[str, str]) -> None:
        process = subprocess.Popen(
            [sys.executable, "-m", "tocsin.client", name],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=self._preexec,
        )
        self._children.append(Child(name, port, process))
        threading.Thread(target=self._relay, args=(name, process), daemon=True).start()

    def _relay(self, name: str, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            self.say(name, raw.decode(errors="replace").rstrip())

    def exited(self) -> Child | None:
        return next((c for c in self._children if c.process.poll() is not None), None)

    def wait_until_serving(self, host: str, stop: threading.Event, timeout: float) -> None:
        """Return once every child answers `/healthz` on its port; raise `DevStartError` if one
        exits first or does not answer within `timeout`."""
        waiting = list(self._children)
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1.0) as http:
            while waiting:
                crashed = self.exited()
                if crashed is not None:
                    raise DevStartError(
                        f"{crashed.name} (port {crashed.port}) exited with status "
                        f"{crashed.process.returncode} during start; its log is above"
                    )
                child = waiting[0]
                try:
                    if http.get(f"http://{host}:{child.port}/healthz").status_code == 200:
                        waiting.pop(0)
                        continue
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise DevStartError(
                        f"{child.name} did not answer on port {child.port} within "
                        f"{timeout:.0f} s; its log is above"
                    )
                if stop.wait(0.1):
                    raise DevStartError("stopped during start")

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


def check_ports_free(host: str, ports: dict[str, int]) -> None:
    """Raise `DevStartError` naming the first service whose port another process holds."""
    for name, port in ports.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # As uvicorn binds: a port in TIME_WAIT from a previous run is free.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                raise DevStartError(
                    f"{name}'s port {port} on {host} is not free ({exc.strerror}); "
                    "choose other ports with --base-port N (make run PORT=N)"
                ) from None


def _command_hint() -> str:
    """How the user calls `tocsin`: the venv's script, relative to here when it is below."""
    script = Path(sys.executable).parent / "tocsin"
    if not script.exists():
        return "tocsin"
    with contextlib.suppress(ValueError):
        return str(script.relative_to(Path.cwd()))
    return str(script)


def _fail(message: str) -> None:
    print(f"tocsin dev: {message}", file=sys.stderr, flush=True)


def run_dev(base_port: int | None = None, out: Callable[[str], None] = print) -> int:
    """Run everything until SIGINT, SIGTERM or SIGHUP; return the exit status."""
    stop = threading.Event()
    # Set by a stop signal or a child's exit: at rest the supervisor sleeps on it
    # instead of polling the children.
    wake = threading.Event()

    def on_signal(signum: int) -> None:
        if signum != signal.SIGCHLD:
            stop.set()
        wake.set()

    on_signals((signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD), on_signal)

    supervisor = Supervisor(colour=sys.stdout.isatty(), out=out)
    host = os.environ.get("TOCSIN_HOST") or "127.0.0.1"
    ports = _choose_ports(base_port)
    other = live_dev_pid()
    if other is not None and other != os.getpid():
        _fail(f"already running (pid {other}, {dev_state_path()})")
        return 1
    try:
        check_ports_free(host, ports)
    except DevStartError as exc:
        _fail(str(exc))
        return 1

    redis_url = os.environ.get("REDIS_URL", "")
    server: RedisServer | None = None
    receiver: LogReceiver | None = None
    workdir = Path(tempfile.mkdtemp(prefix="tocsin-dev-"))
    status = 0
    try:
        if not redis_url:
            server = RedisServer(preexec_fn=supervisor.preexec, hz=RESTING_HZ)
            server.start()
            redis_url = server.url
            supervisor.say("redis", f"{server.binary} listening on {redis_url}")
        else:
            supervisor.say("redis", f"using REDIS_URL {redis_url}")
        routes_file = os.environ.get("TOCSIN_ROUTES_FILE", "")
        if not routes_file:
            receiver = LogReceiver(lambda line: supervisor.say("notify", line))
            receiver.start()
            routes_file = str(receiver.write_routes(workdir))
            supervisor.say("notify", f"notifications go to a log receiver ({routes_file})")

        jwt_secret = os.environ.get("TOCSIN_JWT_SECRET") or secrets.token_urlsafe(32)
        token = mint_token(
            jwt_secret, "dev", scopes=("read", "write", "ingest", "admin"), ttl=30 * 86400
        )
        urls = {
            "gateway": f"http://127.0.0.1:{ports['gateway']}",
            "ws": f"ws://127.0.0.1:{ports['gateway']}/ws",
            "ingest": f"http://127.0.0.1:{ports['ingest']}",
        }
        for name in SERVICES:
            env = dict(os.environ)
            env.update(
                REDIS_URL=redis_url,
                TOCSIN_PORT=str(ports[name]),
                TOCSIN_LOG_FORMAT="console",
                TOCSIN_JWT_SECRET=jwt_secret,
                TOCSIN_ROUTES_FILE=routes_file,
                # The gateway forwards template previews to the notifier's HTTP server.
                TOCSIN_NOTIFIER_URL=f"http://127.0.0.1:{ports['notifier']}",
                PYTHONUNBUFFERED="1",
            )
            supervisor.start(name, ports[name], env)
        started = time.monotonic()
        supervisor.wait_until_serving(host, stop, START_TIMEOUT_SECONDS)
        serving_after = time.monotonic() - started
        # Ingest requires a producer credential; `tocsin send` reads this one.
        api_key, _ = ApiKeyStore(sync_client(redis_url)).create("dev", description="tocsin dev")
        state_path = write_dev_state({"urls": urls, "token": token, "api_key": api_key,
                                      "redis_url": redis_url, "ports": ports,
                                      "pid": os.getpid()})  # fmt: skip
        tocsin = _command_hint()
        supervisor.say("dev", f"all five services serving, {serving_after:.1f} s after start")
        supervisor.say("dev", f"console   {urls['gateway']}/#token={token}")
        supervisor.say("dev", f"ingest    {urls['ingest']}/v1/alerts")
        supervisor.say("dev", f"websocket {urls['ws']}")
        supervisor.say("dev", f"metrics   http://127.0.0.1:<port>/metrics on ports {ports}")
        supervisor.say("dev", f"health    {tocsin} health (or {urls['gateway']}/v1/health)")
        supervisor.say("dev", f"api key   {api_key}")
        supervisor.say("dev", f"dev token and URLs saved in {state_path}")
        supervisor.say("dev", f"try, in a second terminal:  {tocsin} watch")
        supervisor.say(
            "dev",
            f"then, in a third:           {tocsin} send --name DiskFull --severity critical "
            "--label host=db-1",
        )
        while not stop.is_set():
            # Cleared before looking, so an exit after the look wakes the next wait.
            wake.clear()
            crashed = supervisor.exited()
            if crashed is not None:
                _fail(
                    f"{crashed.name} (port {crashed.port}) exited with status "
                    f"{crashed.process.returncode}; stopping the stack"
                )
                status = 1
                break
            wake.wait(_SUPERVISE_SECONDS)
    except DevStartError as exc:
        if not stop.is_set():
            _fail(str(exc))
            status = 1
    except RuntimeError as exc:  # the Redis server could not start
        _fail(str(exc))
        status = 1
    finally:
        supervisor.stop()
        if server is not None:
            server.close()
        if receiver is not None:
            receiver.close()
        shutil.rmtree(workdir, ignore_errors=True)
        remove_dev_state(os.getpid())
    return status
