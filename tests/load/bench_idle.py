"""Idle stack: what `tocsin dev` costs with no traffic at all (about a minute).

Starts a private Redis-compatible server and `tocsin dev` against it (all five
services), lets them settle, then for `BENCH_IDLE_SECONDS` (default 30) counts,
per process, the CPU it used (% of one core, from /proc via psutil) and the
Redis commands it sent per second (a MONITOR connection, each command
attributed to the process owning the client port; commands run inside Lua
scripts are counted apart, as `lua`). Goal: every process well under 1% of a
core and under 10 commands/s: consumers block on wake-up lists, timers sleep.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil

from tests.support import wait_until
from tocsin.client.devserver import RESTING_HZ, RedisServer

SECONDS = float(os.environ.get("BENCH_IDLE_SECONDS", "30"))
SETTLE_SECONDS = 15.0
_CLIENT = re.compile(rb"\[\d+ (?:(lua)|[\d.]+:(\d+))\] \"([^\"]*)\"")


class Monitor(threading.Thread):
    """A MONITOR connection counting commands by client port (`lua` for script calls)."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.counts: Counter[str] = Counter()
        self.commands: Counter[tuple[str, str]] = Counter()  # (client port, command)
        self.counting = False
        self._sock = socket.create_connection(("127.0.0.1", port))
        self._sock.sendall(b"MONITOR\r\n")
        self.own_port = str(self._sock.getsockname()[1])

    def run(self) -> None:
        buffer = b""
        while True:
            try:
                data = self._sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            buffer += data
            *lines, buffer = buffer.split(b"\r\n")
            if not self.counting:
                continue
            for line in lines:
                match = _CLIENT.search(line)
                if match:
                    client = "lua" if match.group(1) else match.group(2).decode()
                    self.counts[client] += 1
                    self.commands[client, match.group(3).decode(errors="replace").upper()] += 1

    def close(self) -> None:
        self._sock.close()


def _client_ports(pid: int, redis_port: int) -> set[str]:
    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return set()
    return {str(c.laddr.port) for c in connections if c.raddr and c.raddr.port == redis_port}


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
    except httpx.HTTPError:
        return False


def main() -> None:
    # The server `tocsin dev` would start, here started apart to watch it with MONITOR.
    with RedisServer(hz=RESTING_HZ) as server, tempfile.TemporaryDirectory() as workdir:
        state = Path(workdir) / "dev.json"
        env = dict(os.environ, REDIS_URL=server.url, TOCSIN_DEV_STATE=str(state),
                   TOCSIN_LOG_LEVEL="WARNING")  # fmt: skip
        dev = subprocess.Popen(
            [sys.executable, "-m", "tocsin.client", "dev", "--base-port", "0"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait_until(state.exists, 60, "tocsin dev's state file")
            ports: dict[str, int] = json.loads(state.read_text())["ports"]
            for name, port in ports.items():
                wait_until(lambda port=port: _ready(port), 60, f"{name} ready")
            services = {
                name: child
                for child in psutil.Process(dev.pid).children(recursive=True)
                for name in ports
                if child.cmdline()[-1:] == [name]
            }
            processes = {"redis": psutil.Process(server.pid or 0), "dev": psutil.Process(dev.pid),
                         **services}  # fmt: skip
            monitor = Monitor(server.port)
            monitor.start()
            time.sleep(SETTLE_SECONDS)
            before = {name: p.cpu_times() for name, p in processes.items()}
            monitor.counting = True
            started = time.monotonic()
            time.sleep(SECONDS)
            monitor.counting = False
            elapsed = time.monotonic() - started
            after = {name: p.cpu_times() for name, p in processes.items()}
            owner = {port: name for name in services
                     for port in _client_ports(services[name].pid, server.port)}  # fmt: skip
            monitor.close()
        finally:
            dev.terminate()
            dev.wait(30)
    by_process: Counter[str] = Counter()
    for port, count in monitor.counts.items():
        if port == monitor.own_port:
            continue
        by_process[owner.get(port, "lua" if port == "lua" else "other")] += count
    print(f"idle for {elapsed:.0f} s after {SETTLE_SECONDS:.0f} s of settling (tocsin dev)")
    # CPU-seconds too: on a shared machine the % moves with load more than the seconds do.
    print(f"{'process':<10} {'CPU % of a core':>16} {'CPU s':>7} {'Redis commands/s':>17}")
    total_cpu = 0.0
    for name in processes:
        cpu = sum(after[name][:2]) - sum(before[name][:2])
        total_cpu += cpu
        commands = by_process.get(name, 0) / elapsed if name in services else float("nan")
        print(f"{name:<10} {cpu / elapsed * 100:>15.2f}% {cpu:>7.2f} {commands:>17.2f}")
    print(f"{'total':<10} {total_cpu / elapsed * 100:>15.2f}% {total_cpu:>7.2f} "
          f"{sum(by_process.values()) / elapsed:>17.2f}")  # fmt: skip
    print(
        f"(of which inside Lua scripts: {by_process.get('lua', 0) / elapsed:.2f}/s; "
        f"unattributed: {by_process.get('other', 0) / elapsed:.2f}/s)"
    )
    commands: Counter[tuple[str, str]] = Counter()
    for (port, command), count in monitor.commands.items():
        if port != monitor.own_port:
            commands[owner.get(port, "lua" if port == "lua" else "other"), command] += count
    busiest = sorted(commands.items(), key=lambda item: -item[1])[:12]
    print("busiest: " + ", ".join(f"{name} {command} {count / elapsed:.2f}/s"
                                  for (name, command), count in busiest))  # fmt: skip


if __name__ == "__main__":
    main()
