"""Scale benchmark: many sockets on five gateways fed by one Redis, and a reconnect storm.

Five gateway processes (each limited to 20,000 file descriptors, as a pod would be)
and one Redis-compatible server; the load clients are hand-made WebSocket clients
(asyncio + uvloop, one small protocol object per socket) spread over worker
processes, each on its own loopback source address. Every socket subscribes to
`alerts` and to one of the team channels `alerts.team.tK`, answers the gateway's
pings, and keeps each channel's last offset, so it knows by itself what it missed
or got twice. Phases, each printing its figures beside what the sizing guide
(`tests/load/capacity.py`, docs/capacity.md) predicts:

1. connect: all sockets, `BENCH_SCALE_IN_FLIGHT` handshakes in flight: wall time,
   handshake p50/p99, gateway RSS per socket, gateway CPU per connect;
2. idle: `BENCH_SCALE_IDLE_SECONDS` with heartbeats on: CPU of each gateway and Redis;
3. broadcast on `alerts` at `BENCH_SCALE_BROADCAST_RATE` msg/s, then targeted traffic
   (`BENCH_SCALE_TARGETED_RATE` msg/s spread over the team channels): delivery
   latency p50/p99/max (publish to receipt, sampled sockets), lost, duplicates;
4. reconnect storm: SIGKILL one gateway while traffic flows; its clients reconnect
   with the SDK's back-off (`tocsin.client.Backoff`: full jitter, 0.5 s x2, cap 20 s),
   each to the next gateway URL as `EventStream` does, and resume from their offsets:
   time until every socket is subscribed and caught up, events lost, Redis CPU and the
   reads it served, handshake p99 on the survivors, latency of the sockets that stayed.
   When the survivors cannot hold every socket (the descriptor bound), the killed
   gateway is restarted on its port, as Kubernetes restarts a pod, and sockets that
   find the survivors full (HTTP 503) wait its Retry-After, back off and try again.

Every phase prints the CPU of each gateway, of the load workers and of Redis (the
clients share the cores with the gateways), and the pings the clients answered, by how
long each sat unread in the client's own loop (a timer in each worker bounds it); a
`4002 heartbeat_timeout` close is counted by how promptly its client had answered the
ping it is about: late answers are the clients' starved loops, prompt ones the gateway
reading pongs late.

Parameters (environment): BENCH_SCALE_SOCKETS (99,000: five gateways of 19,800
sockets, the most the descriptor bound leaves), BENCH_SCALE_GATEWAYS (5),
BENCH_SCALE_WORKERS (0: one per 12,500 sockets), BENCH_SCALE_IN_FLIGHT (200),
BENCH_SCALE_IDLE_SECONDS (60), BENCH_SCALE_HEARTBEAT (25, the gateway's ping
interval) and _TIMEOUT (10, its pong timeout), BENCH_SCALE_BROADCAST_RATE (1) and
_SECONDS (10), BENCH_SCALE_TEAMS (100), BENCH_SCALE_TARGETED_RATE (100) and _SECONDS
(10), BENCH_SCALE_STORM_SECONDS (20) and _RATE (20 msg/s on the team channels while the storm runs),
BENCH_SCALE_CAPACITY (19,800 sockets admitted per gateway; lower it to try the
full-survivors storm at a small size), BENCH_SCALE_VICTIM (0: sockets spread evenly;
N: the first N on the gateway the storm kills, the rest on the others),
BENCH_SCALE_SOURCES (1: no bind; N: N loopback source addresses, each worker binding
every connect to one, whose kernel port search starves the workers at scale, see
docs/capacity.md),
BENCH_SCALE_ADMISSION_LAG (the gateways' TOCSIN_ADMISSION_LAG; unset: their default),
BENCH_SCALE_SAMPLE_EVERY (10: latency on one socket in ten), BENCH_SCALE_PHASES
(`connect,idle,broadcast,targeted,storm`: the phases run, connect always). A smoke run:
`BENCH_SCALE_SOCKETS=5000 BENCH_SCALE_IDLE_SECONDS=5 make bench BENCH=scale`. The
heartbeat's cost on one gateway (CPU per ping cycle, printed in the idle phase):
`BENCH_SCALE_SOCKETS=15000 BENCH_SCALE_GATEWAYS=1 BENCH_SCALE_HEARTBEAT=2
BENCH_SCALE_PHASES=idle make bench BENCH=scale`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import resource
import signal
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psutil
import redis

from tests.hostile import TEXT, client_frame, upgrade_request
from tests.load import capacity
from tests.load.harness import SocketClient, run_load, service
from tests.load.scale_metrics import Histogram, PongLedger, Tally, percentile, read_delay_bound
from tocsin.client import Backoff
from tocsin.client._stream import _retry_after as _sdk_retry_after
from tocsin.client.devserver import RedisServer
from tocsin.common import keys

SECRET = "bench-secret-for-the-scale-benchmark-run"
FD_LIMIT = 20_000


def _env(name: str, default: float) -> float:
    return float(os.environ.get(f"BENCH_SCALE_{name}", default))


@dataclass(frozen=True)
class Params:
    """The run's size, read once from the environment."""

    sockets: int = int(_env("SOCKETS", 99_000))
    gateways: int = int(_env("GATEWAYS", 5))
    workers: int = int(_env("WORKERS", 0))
    in_flight: int = int(_env("IN_FLIGHT", 200))
    idle_seconds: float = _env("IDLE_SECONDS", 60)
    heartbeat: float = _env("HEARTBEAT", 25)
    heartbeat_timeout: float = _env("HEARTBEAT_TIMEOUT", 10)
    broadcast_rate: float = _env("BROADCAST_RATE", 1)
    broadcast_seconds: float = _env("BROADCAST_SECONDS", 10)
    teams: int = int(_env("TEAMS", 100))
    targeted_rate: float = _env("TARGETED_RATE", 100)
    targeted_seconds: float = _env("TARGETED_SECONDS", 10)
    storm_seconds: float = _env("STORM_SECONDS", 20)
    storm_rate: float = _env("STORM_RATE", 20)
    sources: int = int(_env("SOURCES", 1))
    sample_every: int = int(_env("SAMPLE_EVERY", 10))
    # Sockets a gateway admits: its descriptors less 200 for Redis connections and refusals.
    capacity: int = int(_env("CAPACITY", FD_LIMIT - 200))
    victim: int = int(_env("VICTIM", 0))
    # The gateways' TOCSIN_ADMISSION_LAG (empty: the gateway's default).
    admission_lag: str = os.environ.get("BENCH_SCALE_ADMISSION_LAG", "")
    phases: frozenset[str] = frozenset(
        os.environ.get("BENCH_SCALE_PHASES", "connect,idle,broadcast,targeted,storm").split(",")
    )

    @property
    def worker_count(self) -> int:
        return self.workers or max(2, math.ceil(self.sockets / 12_500))

    @property
    def per_gateway(self) -> int:
        return math.ceil(self.sockets / self.gateways)

    def home_of(self, index: int) -> int:
        """The gateway a socket first connects to: round robin, or, with a victim size,
        the first `victim` sockets on gateway 0 (the one the storm kills)."""
        if not self.victim:
            return index % self.gateways
        if index < self.victim:
            return 0
        return 1 + (index - self.victim) % (self.gateways - 1)


def team_of(index: int, teams: int) -> str:
    return f"alerts.team.t{index % teams}"


# -- the load side: one worker process's sockets --------------------------------------

EVENT_PREFIX = b'{"type":"event","channel":"'
OFFSET_AFTER_CHANNEL = len('","offset":')
PONG = bytes([0x8A, 0x80]) + b"\0\0\0\0"  # an empty pong, masked with a zero mask
HEARTBEAT_TIMEOUT = 4002
# The period of a worker's loop watch: a ping's time unread is known to about twice this.
WATCH_PERIOD = 0.05
PROMPT_ANSWER = 1.0  # seconds: a ping read within this was answered promptly


class LoopWatch:
    """A timer in a worker's loop, so that a frame's time unread can be bounded
    (`read_delay_bound`): a starved loop runs the timer late, and reads late too."""

    def __init__(self) -> None:
        self.before_last = self.last = time.monotonic()
        self.longest = 0.0  # the longest gap between two ticks since `reset`
        self._loop = asyncio.get_running_loop()
        self._loop.call_later(WATCH_PERIOD, self._tick)

    def _tick(self) -> None:
        self.before_last, self.last = self.last, time.monotonic()
        self.longest = max(self.longest, self.last - self.before_last)
        self._loop.call_later(WATCH_PERIOD, self._tick)

    def read_delay(self) -> float:
        return read_delay_bound(time.monotonic(), self.before_last)


def _retry_after(head: bytes) -> float:
    """The `Retry-After` seconds of a refusal's head, as the SDK reads them."""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"retry-after":
            return _sdk_retry_after(value.strip().decode("latin-1"))
    return 0.0


class Subscriber:
    """One logical client across its connections: channels, positions, gateway URLs."""

    __slots__ = (
        "attempt",
        "channels",
        "connection",
        "epochs",
        "index",
        "live",
        "offsets",
        "port",
        "ports",
        "resuming",
        "retry_after",
        "sample",
        "steady",
        "token",
    )

    def __init__(self, index: int, channels: tuple[str, str], ports: list[int], token: str) -> None:
        self.index = index
        self.channels = channels
        self.ports = ports  # home gateway first, then the others in order
        self.port = 0  # the gateway it is connected to
        self.attempt = 0
        # A full gateway's 503 says how long to wait; the SDK waits that, then backs off.
        self.retry_after = 0.0
        self.token = token
        self.offsets = [0, 0]
        self.epochs = ["", ""]
        self.live = False
        self.resuming = False  # subscribed once: later subscriptions resume from `offsets`
        self.steady = True  # never lost its connection during the measurement
        self.sample = False
        self.connection: Connection | None = None

    def channel_index(self, name: bytes) -> int:
        return 0 if name == b"alerts" else 1


@dataclass
class Connection(SocketClient):
    """One WebSocket connection of a `Subscriber`: a minimal frame parser and the tally."""

    subscriber: Subscriber | None = None
    fleet: Fleet | None = None
    _buffer: bytes = b""
    _upgraded: bool = False
    _pending: int = 2
    close_code: int = 0
    refused: str = ""  # the HTTP status of a refused upgrade
    # How long, at most, the last ping sat unread in this client's loop (None: no ping yet).
    ping_delay: float | None = None

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        if not self._upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self._buffer = buffer
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                assert self.fleet is not None
                self.refused = buffer[9:12].decode(errors="replace")
                self.fleet.refusals[self.refused] += 1
                if self.subscriber is not None:
                    self.subscriber.retry_after = _retry_after(buffer[:end])
                self._buffer = b""
                self._close()
                return
            self._upgraded = True
            self._subscribe()
            buffer = buffer[end + 4 :]
        position, size = 0, len(buffer)
        while size - position >= 2:
            length = buffer[position + 1] & 0x7F
            head = 2
            if length == 126:
                if size - position < 4:
                    break
                length = int.from_bytes(buffer[position + 2 : position + 4], "big")
                head = 4
            elif length == 127:
                if size - position < 10:
                    break
                length = int.from_bytes(buffer[position + 2 : position + 10], "big")
                head = 10
            end = position + head + length
            if end > size:
                break
            opcode = buffer[position] & 0x0F
            if opcode == 1:
                self._text(buffer, position + head, end)
            elif opcode == 9:
                assert self._transport is not None
                self._transport.write(PONG)
                assert self.fleet is not None
                self.ping_delay = self.fleet.watch.read_delay()
                self.fleet.pongs.ping(self.ping_delay)
            elif opcode == 8:
                if length >= 2:
                    self.close_code = int.from_bytes(buffer[position + 2 : position + 4], "big")
                self._close()
            position = end
        self._buffer = buffer[position:] if position < size else b""

    def _subscribe(self) -> None:
        subscriber = self.subscriber
        assert subscriber is not None
        assert self._transport is not None
        for i, channel in enumerate(subscriber.channels):
            request: dict[str, Any] = {"type": "subscribe", "channel": channel}
            if subscriber.resuming:
                request["since"] = subscriber.offsets[i]
                if subscriber.epochs[i]:
                    request["epoch"] = subscriber.epochs[i]
            self._transport.write(
                client_frame(TEXT, json.dumps(request).encode(), mask=os.urandom(4))
            )

    def _text(self, buffer: bytes, start: int, end: int) -> None:
        subscriber = self.subscriber
        fleet = self.fleet
        assert subscriber is not None
        assert fleet is not None
        if buffer.startswith(EVENT_PREFIX, start):
            name_start = start + len(EVENT_PREFIX)
            name_end = buffer.index(b'"', name_start)
            i = subscriber.channel_index(buffer[name_start:name_end])
            offset_start = name_end + OFFSET_AFTER_CHANNEL
            offset_end = buffer.index(b",", offset_start)
            offset = int(buffer[offset_start:offset_end])
            subscriber.offsets[i] = fleet.tally.event(subscriber.offsets[i], offset)
            if subscriber.sample and subscriber.live:
                ts = buffer.find(b'"ts":', offset_end, end)
                if ts >= 0:
                    ts_end = buffer.index(b",", ts)
                    latency = time.time() - float(buffer[ts + 5 : ts_end])
                    (fleet.steady if subscriber.steady else fleet.reconnected).add(latency)
            return
        frame = json.loads(buffer[start:end])
        kind = frame.get("type")
        if kind == "subscribed":
            i = subscriber.channel_index(frame["channel"].encode())
            subscriber.offsets[i] = fleet.tally.resubscribed(
                subscriber.offsets[i],
                int(frame["offset"]),
                first=not subscriber.resuming,
                recovered=bool(frame["recovered"]),
            )
            subscriber.epochs[i] = frame["epoch"]
            self._pending -= 1
            if self._pending == 0 and not self.subscribed.done():
                if not subscriber.live:
                    fleet.down -= 1
                subscriber.live = subscriber.resuming = True
                self.subscribed.set_result(time.perf_counter())
        elif kind == "error":
            fleet.errors[str(frame.get("code"))] += 1

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        # Only an established connection's loss starts a reconnect; a failed attempt is
        # the caller's to retry.
        established = self.subscribed.done() and not self.subscribed.cancelled()
        super().connection_lost(exc)
        subscriber, fleet = self.subscriber, self.fleet
        assert subscriber is not None
        assert fleet is not None
        if not established or subscriber.connection is not self:
            return
        subscriber.connection = None
        if subscriber.live:
            fleet.down += 1
        subscriber.live = False
        subscriber.steady = False
        fleet.closes[self.close_code or 1006] += 1
        if self.close_code == HEARTBEAT_TIMEOUT:
            fleet.pongs.heartbeat_close(self.ping_delay)
        if fleet.running and not 4400 <= self.close_code <= 4499:
            fleet.reconnect(subscriber)


class Fleet:
    """A worker's sockets and what they counted."""

    def __init__(self, source: str | None, sample_every: int, pong_timeout: float) -> None:
        self.source = source
        self.sample_every = sample_every
        self.pong_timeout = pong_timeout
        self.watch = LoopWatch()
        self.pongs = PongLedger(PROMPT_ANSWER, pong_timeout)
        self.subscribers: list[Subscriber] = []
        self.tally = Tally()
        self.steady = Histogram()
        self.reconnected = Histogram()
        self.handshakes: list[float] = []
        self.reconnect_handshakes: list[float] = []
        self.refusals: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.closes: Counter[int] = Counter()
        self.failed_attempts: Counter[str] = Counter()
        # Each reconnect attempt: (wall clock, "replacement" or "survivor", outcome), and
        # the attempts each reconnect took: where a storm's time goes.
        self.replacement = 0  # the port of the gateway the storm kills and restarts
        self.attempts: list[tuple[float, str, str]] = []
        self.attempts_per_reconnect: list[int] = []
        self.connect_failures = 0
        self.down = 0  # subscribers not subscribed (kept as they change: status is polled)
        self.running = True
        self._reconnects: set[asyncio.Task[None]] = set()

    async def open(self, subscriber: Subscriber, port: int, within: float = 10.0) -> float:
        """Connect `subscriber` to the gateway on `port`; the seconds until it was subscribed."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        request = upgrade_request(f"/ws?token={subscriber.token}")
        local = (self.source, 0) if self.source else None
        target = "replacement" if port == self.replacement else "survivor"
        try:
            _, connection = await loop.create_connection(
                lambda: Connection(request, sample=False, subscriber=subscriber, fleet=self),
                "127.0.0.1",
                port,
                local_addr=local,
            )
        except OSError as exc:
            self._failed(target, type(exc).__name__)
            raise
        subscriber.connection = connection
        subscriber.port = port
        try:
            done = await asyncio.wait_for(connection.subscribed, within)
        except TimeoutError:
            self._failed(target, f"no answer within {within:g} s")
            connection._close()
            raise
        except BaseException:
            if connection.refused:
                outcome = f"refused {connection.refused}"
            elif connection.close_code:
                outcome = f"closed {connection.close_code}"
            else:
                outcome = "reset before subscribing"
            self._failed(target, outcome)
            connection._close()
            raise
        self.attempts.append((time.time(), target, "subscribed"))
        return float(done) - started

    def _failed(self, target: str, outcome: str) -> None:
        self.failed_attempts[f"{outcome} ({target})"] += 1
        self.attempts.append((time.time(), target, outcome))

    async def connect(self, specs: list[dict[str, Any]], in_flight: int) -> None:
        slots = asyncio.Semaphore(in_flight)

        async def one(spec: dict[str, Any]) -> None:
            subscriber = Subscriber(
                spec["index"],
                (spec["channels"][0], spec["channels"][1]),
                spec["ports"],
                spec["token"],
            )
            # Spread over gateways and workers alike (a plain modulo would pick one gateway).
            subscriber.sample = (spec["index"] * 2654435761) % 2**32 < 2**32 // self.sample_every
            self.subscribers.append(subscriber)
            self.down += 1
            async with slots:
                try:
                    self.handshakes.append(await self.open(subscriber, subscriber.ports[0], 30.0))
                except (OSError, ConnectionError, TimeoutError):
                    # Counted, then retried the SDK's way, as a real client would.
                    self.connect_failures += 1
                    self.reconnect(subscriber)

        await asyncio.gather(*(one(spec) for spec in specs))

    def reconnect(self, subscriber: Subscriber) -> None:
        task = asyncio.get_running_loop().create_task(self._reconnect(subscriber))
        self._reconnects.add(task)
        task.add_done_callback(self._reconnects.discard)

    async def _reconnect(self, subscriber: Subscriber) -> None:
        # The SDK's policy: back off with full jitter, then try the next gateway URL.
        backoff = Backoff()
        while self.running:
            await asyncio.sleep(subscriber.retry_after + backoff.next_delay())
            subscriber.retry_after = 0.0
            subscriber.attempt += 1
            port = subscriber.ports[subscriber.attempt % len(subscriber.ports)]
            try:
                self.reconnect_handshakes.append(await self.open(subscriber, port))
                self.attempts_per_reconnect.append(backoff.attempt)
                return
            except (OSError, ConnectionError, TimeoutError):
                continue

    def status(self, heads: dict[str, int], every_socket: bool = True) -> dict[str, int]:
        """Sockets not subscribed, and subscribed ones behind the given channel heads.

        The conductor asks ten times a second while it waits. Counting the sockets behind
        is a scan (~10 ms at 12,000 sockets): it is skipped while a socket is down and
        every socket must be back (the answer is "not yet" whatever the offsets), so that
        the bench's own bookkeeping does not starve the loop its sockets answer pings on
        in a storm.
        """
        down = self.down
        behind = 0
        if heads and (down == 0 or not every_socket):
            get = heads.get
            for subscriber in self.subscribers:
                if subscriber.live:
                    offsets, channels = subscriber.offsets, subscriber.channels
                    if offsets[0] < get(channels[0], 0) or offsets[1] < get(channels[1], 0):
                        behind += 1
        return {
            "down": down,
            "behind": behind,
            "events": self.tally.events,
            "lost_connections": sum(self.closes.values()),
        }

    def held_by(self, port: int) -> int:
        """Sockets subscribed through the gateway on `port`."""
        return sum(s.live and s.port == port for s in self.subscribers)

    def collect(self, heads: dict[str, int]) -> dict[str, Any]:
        """The phase's figures; what a subscribed socket did not get up to its channel's
        head counts as lost (a socket still down is counted as down)."""
        for subscriber in self.subscribers:
            if not subscriber.live:
                continue  # still reconnecting: reported as down, not as lost
            for i, channel in enumerate(subscriber.channels):
                self.tally.tail(subscriber.offsets[i], heads.get(channel, 0))
        figures = {
            "events": self.tally.events,
            "duplicates": self.tally.duplicates,
            "lost": self.tally.lost,
            "resets": self.tally.resets,
            "steady": self.steady.to_json(),
            "reconnected": self.reconnected.to_json(),
            "handshakes": self.handshakes,
            "reconnect_handshakes": self.reconnect_handshakes,
            "down": sum(not s.live for s in self.subscribers),
            "connect_failures": self.connect_failures,
            "refusals": dict(self.refusals),
            "errors": dict(self.errors),
            "closes": {str(k): v for k, v in self.closes.items()},
            "failed_attempts": dict(self.failed_attempts),
            "attempts": self.attempts,
            "attempts_per_reconnect": self.attempts_per_reconnect,
            "longest_stall": self.watch.longest,
            "pongs": self.pongs.to_json(),
        }
        self.reset()
        return figures

    def reset(self) -> None:
        self.tally = Tally()
        self.steady = Histogram()
        self.reconnected = Histogram()
        self.handshakes = []
        self.reconnect_handshakes = []
        self.refusals.clear()
        self.errors.clear()
        self.closes.clear()
        self.failed_attempts.clear()
        self.attempts = []
        self.attempts_per_reconnect = []
        self.watch.longest = 0.0
        self.connect_failures = 0
        self.pongs = PongLedger(PROMPT_ANSWER, self.pong_timeout)
        for subscriber in self.subscribers:
            subscriber.steady = subscriber.live

    def stop(self) -> None:
        self.running = False
        for subscriber in self.subscribers:
            if subscriber.connection is not None:
                subscriber.connection._close()


async def worker(source: str | None, sample_every: int, pong_timeout: float) -> None:
    """A load worker: reads one JSON command per line on stdin, answers one line on stdout."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    fleet = Fleet(source, sample_every, pong_timeout)
    while line := await reader.readline():
        command = json.loads(line)
        op = command["op"]
        answer: Any = None
        if op == "connect":
            started = time.perf_counter()
            await fleet.connect(command["specs"], command["in_flight"])
            answer = {"elapsed": time.perf_counter() - started}
        elif op == "held_by":
            answer = fleet.held_by(command["port"])
        elif op == "status":
            answer = fleet.status(command["heads"], command["every_socket"])
        elif op == "collect":
            answer = fleet.collect(command["heads"])
        elif op == "reset":
            fleet.reset()
            fleet.replacement = command.get("replacement", 0)
        elif op == "stop":
            fleet.stop()
            await asyncio.sleep(0.2)
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
        if op == "stop":
            return


# -- the publisher ------------------------------------------------------------------------


def publish(
    url: str, broadcast_rate: float, targeted_rate: float, teams: int, seconds: float
) -> None:
    """Publish on `alerts` and round-robin on the team channels at the given rates."""
    from tocsin.common.events import EventPublisher

    publisher = EventPublisher(redis.Redis.from_url(url))
    filler = "x" * 300
    due: list[tuple[float, str]] = []
    for n in range(int(broadcast_rate * seconds)):
        due.append((n / broadcast_rate, "alerts"))
    for n in range(int(targeted_rate * seconds)):
        due.append((n / targeted_rate, f"alerts.team.t{n % teams}"))
    due.sort()
    publisher.publish(["alerts.warmup"], "{}")  # loads the script before the clock starts
    print("ready", flush=True)
    start = time.perf_counter()
    for n, (at, channel) in enumerate(due):
        delay = start + at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        publisher.publish([channel], f'{{"ts":{time.time()!r},"n":{n},"filler":"{filler}"}}')
    print(len(due), flush=True)


# -- the conductor ------------------------------------------------------------------------


@dataclass
class Gateway:
    port: int
    pid: int
    baseline_rss: int = 0
    alive: bool = True


@dataclass
class Worker:
    process: asyncio.subprocess.Process
    specs: list[dict[str, Any]] = field(default_factory=list)

    async def ask(self, op: str, **fields: Any) -> Any:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write((json.dumps({"op": op, **fields}) + "\n").encode())
        await self.process.stdin.drain()
        return json.loads(await self.process.stdout.readline())


def _system_cpu(pid: int) -> float:
    with contextlib.suppress(psutil.NoSuchProcess):
        return float(psutil.Process(pid).cpu_times().system)
    return 0.0


def _cpu(pid: int) -> float:
    with contextlib.suppress(psutil.NoSuchProcess):
        times = psutil.Process(pid).cpu_times()
        return float(times.user + times.system)
    return 0.0


def _rss(pid: int) -> int:
    with contextlib.suppress(psutil.NoSuchProcess):
        return int(psutil.Process(pid).memory_info().rss)
    return 0


def raise_fd_limit() -> None:
    """Up to the bound a gateway pod gets (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = FD_LIMIT if hard == resource.RLIM_INFINITY else min(FD_LIMIT, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


class Run:
    """The conductor: starts everything, drives the phases, prints the figures."""

    def __init__(self, params: Params, redis_server: RedisServer) -> None:
        self.p = params
        self.redis_server = redis_server
        self.redis = redis.Redis.from_url(redis_server.url)
        self.gateways: list[Gateway] = []
        self.workers: list[Worker] = []
        self.stack = contextlib.ExitStack()
        self.channels = ["alerts", *(f"alerts.team.t{k}" for k in range(params.teams))]
        # Unit costs as this run measures them, printed at the end for docs/capacity.md.
        self.measured: dict[str, float] = {}

    # -- parts --------------------------------------------------------------------

    def start_gateway(self, port: int | None = None) -> Gateway:
        admission = {"TOCSIN_ADMISSION_LAG": self.p.admission_lag} if self.p.admission_lag else {}
        url, pid = self.stack.enter_context(
            service(
                "gateway",
                self.redis_server.url,
                secret=SECRET,
                port=port,
                **admission,
                TOCSIN_MAX_CONNECTIONS=str(self.p.capacity),
                TOCSIN_HEARTBEAT_INTERVAL=str(self.p.heartbeat),
                TOCSIN_HEARTBEAT_TIMEOUT=str(self.p.heartbeat_timeout),
                TOCSIN_DRAIN_WINDOW="0",
                TOCSIN_CLOSE_TIMEOUT="1",
            )
        )
        gateway = Gateway(int(url.rsplit(":", 1)[1]), pid)
        gateway.baseline_rss = _rss(pid)
        return gateway

    async def start_workers(self) -> None:
        count = self.p.worker_count
        for w in range(count):
            source = f"127.0.0.{2 + w % self.p.sources}" if self.p.sources > 1 else ""
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.load.bench_scale",
                "worker",
                source,
                str(self.p.sample_every),
                str(self.p.heartbeat_timeout),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=2**26,
            )
            self.workers.append(Worker(process))

    def specs(self) -> None:
        from tocsin.client.devtoken import mint_token

        ports = [g.port for g in self.gateways]
        shuffle = random.Random(19)
        for index in range(self.p.sockets):
            home = self.p.home_of(index)
            # Each client lists the other gateways in its own order (as clients given a
            # shuffled list, or a load balancer, would), so a storm spreads over them.
            others = ports[home + 1 :] + ports[:home]
            shuffle.shuffle(others)
            self.workers[index % len(self.workers)].specs.append(
                {
                    "index": index,
                    "channels": ["alerts", team_of(index // len(ports), self.p.teams)],
                    "ports": [ports[home], *others],
                    "token": mint_token(SECRET, f"scale-{index}"),
                }
            )

    def heads(self) -> dict[str, int]:
        pipe = self.redis.pipeline(transaction=False)
        for channel in self.channels:
            pipe.hget(keys.channel_meta(channel), "offset")
        return {c: int(v or 0) for c, v in zip(self.channels, pipe.execute(), strict=True)}

    async def ask_all(self, op: str, **fields: Any) -> list[Any]:
        return list(await asyncio.gather(*(w.ask(op, **fields) for w in self.workers)))

    async def wait_caught_up(
        self, heads: dict[str, int], within: float, *, every_socket: bool = True
    ) -> float | None:
        """Seconds until every socket (or every connected one) is subscribed and at `heads`,
        or None on timeout."""
        started = time.perf_counter()
        while time.perf_counter() - started < within:
            states = await self.ask_all("status", heads=heads, every_socket=every_socket)
            if all((s["down"] == 0 or not every_socket) and s["behind"] == 0 for s in states):
                return time.perf_counter() - started
            await asyncio.sleep(0.1)
        return None

    async def publish(
        self, broadcast: float, targeted: float, seconds: float
    ) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.load.bench_scale",
            "publish",
            self.redis_server.url,
            str(broadcast),
            str(targeted),
            str(self.p.teams),
            str(seconds),
            stdout=asyncio.subprocess.PIPE,
        )

    def cpu(self) -> dict[str, float]:
        figures = {f"gateway-{i}": _cpu(g.pid) for i, g in enumerate(self.gateways)}
        if self.redis_server.pid is not None:
            figures["redis"] = _cpu(self.redis_server.pid)
        for i, w in enumerate(self.workers):
            figures[f"load-{i}"] = _cpu(w.process.pid)
        figures["load"] = sum(figures[f"load-{i}"] for i in range(len(self.workers)))
        # The kernel's share of the workers' time (binds, connects, closes).
        figures["load system"] = sum(_system_cpu(w.process.pid) for w in self.workers)
        # The whole machine's busy time: the kernel's loopback work is charged to no
        # process (and on a shared machine, others' work shows here too).
        machine = psutil.cpu_times()
        figures["machine"] = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
        return figures

    def gateway_counts(self) -> Counter[str]:
        """What the live gateways counted of a storm's defences, summed: sockets refused
        by limit, pongs judged on time only in the look after their deadline, and
        heartbeat closes."""
        counts: Counter[str] = Counter()
        for gateway in self.gateways:
            if not gateway.alive:
                continue
            with contextlib.suppress(OSError, urllib.error.URLError):
                url = f"http://127.0.0.1:{gateway.port}/metrics"
                with urllib.request.urlopen(url, timeout=10) as answer:
                    for line in answer.read().decode().splitlines():
                        for prefix, name in _GATEWAY_COUNTS:
                            if line.startswith(prefix):
                                counts[name] += int(float(line.rpartition(" ")[2]))
        return counts

    def history_reads(self) -> dict[str, int]:
        stats: dict[str, Any] = self.redis.info("commandstats")
        return {
            name: int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))
            for name in ("xrange", "xrevrange", "hgetall")
        }

    # -- phases -------------------------------------------------------------------

    async def run(self) -> None:
        p = self.p
        for _ in range(p.gateways):
            self.gateways.append(self.start_gateway())
        await self.start_workers()
        self.specs()
        print(
            f"\n{p.sockets:,} sockets on {p.gateways} gateways (at most {FD_LIMIT:,} descriptors "
            f"each), {len(self.workers)} load workers, {p.teams} team channels; heartbeat "
            f"{p.heartbeat:g} s; machine: {os.cpu_count()} cores, shared with whatever else runs",
            flush=True,
        )
        await self.connect_phase()
        if "idle" in p.phases:
            await self.idle_phase()
        if "broadcast" in p.phases:
            await self.traffic_phase(
                "broadcast on `alerts`", p.broadcast_rate, 0, p.broadcast_seconds
            )
        if "targeted" in p.phases:
            await self.traffic_phase(
                f"targeted, {p.teams} team channels", 0, p.targeted_rate, p.targeted_seconds
            )
        if "storm" in p.phases:
            await self.storm_phase()
        await self.ask_all("stop")
        print("\nUnit costs measured by this run (docs/capacity.md; guide's value in brackets)")
        for name, value in self.measured.items():
            guide = getattr(capacity.UNIT_COSTS, name.split(" ")[0], None)
            print(f"   {name:<36} {value:>10.4g}" + (f"  [{guide:g}]" if guide is not None else ""))

    async def connect_phase(self) -> None:
        p = self.p
        before = self.cpu()
        await asyncio.sleep(5.0)
        after = self.cpu()
        self.measured["gateway_idle_base"] = (
            sum(after[k] - before[k] for k in after if k.startswith("gateway"))
            / 5.0
            / len(self.gateways)
        )
        before = self.cpu()
        reads = self.history_reads()
        started = time.perf_counter()
        share = max(1, p.in_flight // len(self.workers))
        await asyncio.gather(
            *(w.ask("connect", specs=w.specs, in_flight=share) for w in self.workers)
        )
        elapsed = time.perf_counter() - started
        after = self.cpu()
        await asyncio.sleep(1.0)
        figures = await self.ask_all("collect", heads=self.heads())
        handshakes = [h for f in figures for h in f["handshakes"]]
        connected = len(handshakes)
        gateway_cpu = sum(after[k] - before[k] for k in after if k.startswith("gateway"))
        rss = sum(_rss(g.pid) - g.baseline_rss for g in self.gateways)
        redis_cpu = after.get("redis", 0) - before.get("redis", 0)
        read_delta = {k: v - reads[k] for k, v in self.history_reads().items()}
        load = capacity.Load(sockets=connected, alerts_per_second=0, subscribers_per_event=0)
        predicted_cpu = connected * capacity.UNIT_COSTS.gateway_connect_us / 1e6
        predicted_kib = capacity.UNIT_COSTS.gateway_kib_per_socket
        measured_kib = rss / max(connected, 1) / 1024
        self.measured["gateway_connect_us"] = gateway_cpu / max(connected, 1) * 1e6
        client_cpu = after["load"] - before["load"]
        self.measured["client_connect_us"] = client_cpu / max(connected, 1) * 1e6
        self.measured["box_connect_us"] = (
            (after["machine"] - before["machine"]) / max(connected, 1) * 1e6
        )
        self.measured["gateway_kib_per_socket"] = measured_kib
        self.measured["gateway_base_mib"] = (
            sum(g.baseline_rss for g in self.gateways) / len(self.gateways) / 2**20
        )
        self.measured["redis_connect_us"] = redis_cpu / max(connected, 1) * 1e6
        print(f"\n1. Connect ({p.in_flight} handshakes in flight)")
        print(
            f"   connected {connected:,} of {p.sockets:,} in {elapsed:.1f} s "
            f"({connected / elapsed:,.0f}/s); failures "
            f"{sum(f['connect_failures'] for f in figures)}, refusals "
            f"{_merge(f['refusals'] for f in figures)}"
        )
        print(
            f"   handshake+subscribe p50 {percentile(handshakes, 0.5) * 1000:.1f} ms, "
            f"p99 {percentile(handshakes, 0.99) * 1000:.1f} ms"
        )
        print(f"   Redis reads during connect: {read_delta}; Redis CPU {redis_cpu:.2f} s")
        _cpu_line(before, after, elapsed)
        # Two unit costs: a gateway with a core to itself (what a pod sizing uses), and
        # one sharing the two cores with four others and the clients (the full bench).
        costs = capacity.UNIT_COSTS
        _compare(
            "gateway CPU per connect, us (own core)",
            self.measured["gateway_connect_us"],
            costs.gateway_connect_us,
        )
        _compare(
            "gateway CPU per connect, us (shared cores)",
            self.measured["gateway_connect_us"],
            costs.gateway_connect_contended_us,
        )
        _compare(
            "load clients' CPU per connect, us",
            self.measured["client_connect_us"],
            costs.client_connect_us,
        )
        _compare(
            "the machine's CPU per connect, us",
            self.measured["box_connect_us"],
            costs.box_connect_us,
        )
        _compare(
            "connect wall time, s",
            elapsed,
            capacity.shared_box_connect_seconds(connected, os.cpu_count() or 1),
        )
        _compare("gateway CPU for the phase, s", gateway_cpu, predicted_cpu)
        _compare("gateway RSS per socket, KiB", measured_kib, predicted_kib)
        _compare(
            "gateway RSS in all, MiB",
            sum(_rss(g.pid) for g in self.gateways) / 2**20,
            capacity.gateway_memory(load.sockets, p.gateways) / 2**20,
        )

    async def idle_phase(self) -> None:
        p = self.p
        before = self.cpu()
        started = time.perf_counter()
        await asyncio.sleep(p.idle_seconds)
        elapsed = time.perf_counter() - started
        after = self.cpu()
        figures = await self.ask_all("collect", heads=self.heads())
        per_gateway = [
            (after[f"gateway-{i}"] - before[f"gateway-{i}"]) / elapsed
            for i in range(len(self.gateways))
        ]
        sockets = p.sockets - sum(f["down"] for f in figures)
        print(f"\n2. Idle {elapsed:.0f} s, heartbeats every {p.heartbeat:g} s")
        _cpu_line(before, after, elapsed)
        print(
            f"   sockets still subscribed {sockets:,}; closes "
            f"{_merge(f['closes'] for f in figures)}"
        )
        answered = _pong_line(figures, p.heartbeat_timeout)
        load = capacity.Load(sockets=sockets, alerts_per_second=0, subscribers_per_event=0)
        _compare(
            "all gateways at idle, % of a core",
            sum(per_gateway) * 100,
            capacity.gateway_cpu(load, len(self.gateways)) * 100,
        )
        base = self.measured.get("gateway_idle_base", 0.0) * len(self.gateways)
        self.measured["idle_cores"] = sum(per_gateway)
        self.measured["redis_idle_per_gateway"] = (
            (after["redis"] - before["redis"]) / elapsed / len(self.gateways)
        )
        self.measured["gateway_idle_per_1000_sockets"] = (
            (sum(per_gateway) - base) / max(sockets, 1) * 1000
        )
        # A socket's ping cycle is the interval plus the pong's round trip and the wheel's
        # rounding (the next ping is counted from the pong): cycles are the pings the
        # clients answered, and the heartbeat's cost per cycle has the base taken out.
        cycles = answered / elapsed
        self.measured["gateway_ping_cycle_us"] = (sum(per_gateway) - base) / max(cycles, 1) * 1e6
        print(
            f"   gateway CPU per ping cycle (base {base * 100:.2f} % of a core taken out): "
            f"{self.measured['gateway_ping_cycle_us']:.1f} us ({cycles:,.0f} cycles/s)"
        )
        _compare(
            "gateway idle per 1,000 sockets, % of a core",
            self.measured["gateway_idle_per_1000_sockets"] * 100,
            capacity.UNIT_COSTS.gateway_idle_per_1000_sockets * 100,
        )

    async def traffic_phase(
        self, title: str, broadcast: float, targeted: float, seconds: float
    ) -> None:
        p = self.p
        await self.ask_all("reset")
        publisher = await self.publish(broadcast, targeted, seconds)
        assert publisher.stdout is not None
        await publisher.stdout.readline()
        before = self.cpu()
        memory = int(self.redis.info("memory")["used_memory"])
        started = time.perf_counter()
        out, _ = await publisher.communicate()
        published = int(out.decode().strip() or 0)
        # What the retained events cost Redis (pub/sub fan-out keeps nothing).
        self.measured["redis_kib_per_stream_entry"] = (
            (int(self.redis.info("memory")["used_memory"]) - memory) / max(published, 1) / 1024
        )
        elapsed = time.perf_counter() - started
        after = self.cpu()
        heads = self.heads()
        waited = await self.wait_caught_up(heads, 10.0, every_socket=False)
        figures = await self.ask_all("collect", heads=heads)
        events = sum(f["events"] for f in figures)
        steady = Histogram()
        for f in figures:
            steady.merge(Histogram.from_json(f["steady"]))
            steady.merge(Histogram.from_json(f["reconnected"]))
        sockets = p.sockets - sum(f["down"] for f in figures)
        gateway_cpu = sum(after[k] - before[k] for k in after if k.startswith("gateway")) / elapsed
        redis_cpu = (after["redis"] - before["redis"]) / elapsed
        subscribers = sockets if broadcast else sockets / p.teams
        alerts_per_second = published / elapsed
        load = capacity.Load(
            sockets=sockets,
            alerts_per_second=alerts_per_second,
            subscribers_per_event=subscribers,
            channels_per_alert=1,
        )
        print(f"\n3. {title}: {published} messages in {elapsed:.1f} s")
        print(
            f"   deliveries {events:,} ({events / elapsed:,.0f}/s); lost "
            f"{sum(f['lost'] for f in figures)}, duplicates "
            f"{sum(f['duplicates'] for f in figures)}; "
            f"tail {_seconds(waited)}"
        )
        print(
            f"   latency publish->receipt (sampled {steady.total:,}): p50 "
            f"{steady.percentile(0.5) * 1000:.1f} ms, p99 {steady.percentile(0.99) * 1000:.1f} ms, "
            f"max {steady.maximum * 1000:.1f} ms"
        )
        _cpu_line(before, after, elapsed)
        _pong_line(figures, p.heartbeat_timeout)
        gateways = len(self.gateways)
        _compare(
            "gateways, % of a core", gateway_cpu * 100, capacity.gateway_cpu(load, gateways) * 100
        )
        # The publisher here is the script alone: no processor Lua step.
        costs = capacity.UNIT_COSTS
        events_cost = (
            alerts_per_second * (costs.redis_event_us + gateways * costs.redis_fanout_us) / 1e6
            + gateways * costs.redis_idle_per_gateway
        )
        _compare("Redis, % of a core", redis_cpu * 100, events_cost * 100)
        # What this phase says the unit costs are (the idle shares taken out).
        redis_idle = self.measured.get("redis_idle_per_gateway", 0.0) * gateways
        idle = self.measured.get("idle_cores", 0.0)
        if broadcast:
            self.measured["gateway_delivery_us"] = (
                (gateway_cpu - idle) * elapsed / max(events, 1) * 1e6
            )
            self.measured["client_delivery_us"] = (
                (after["load"] - before["load"]) / max(events, 1) * 1e6
            )
            _compare(
                "load clients' CPU per delivery, us",
                self.measured["client_delivery_us"],
                costs.client_delivery_us,
            )
            self.measured["redis_event_us (alerts, 1 ch)"] = (
                (redis_cpu - redis_idle) / max(alerts_per_second, 1e-9) * 1e6
            )
        else:
            delivery = self.measured.get("gateway_delivery_us", 0.0) * events / elapsed / 1e6
            self.measured["gateway_event_us"] = (
                (gateway_cpu - idle - delivery) / (gateways * max(alerts_per_second, 1e-9)) * 1e6
            )
            self.measured["redis_event_us (team, 1 ch)"] = (
                (redis_cpu - redis_idle) / max(alerts_per_second, 1e-9) * 1e6
            )

    async def storm_phase(self) -> None:
        p = self.p
        victim = self.gateways[0]
        survivors_hold = (len(self.gateways) - 1) * p.capacity
        respawn = survivors_hold < p.sockets
        print(
            f"\n4. Reconnect storm: SIGKILL of a gateway holding "
            f"~{p.victim or p.per_gateway:,} sockets "
            f"while {p.storm_rate:g} msg/s flow on the team channels"
            f"{'; restarted on its port (the survivors cannot hold them all)' if respawn else ''}"
        )
        publisher = await self.publish(0, p.storm_rate, p.storm_seconds)
        await asyncio.sleep(2.0)
        await self.ask_all("reset", replacement=victim.port)
        held = sum(await self.ask_all("held_by", port=victim.port))
        counted = self.gateway_counts()
        before = self.cpu()
        reads = self.history_reads()
        kernel = tcp_counters()
        started = time.perf_counter()
        killed_at = time.time()
        os.kill(victim.pid, signal.SIGKILL)
        victim.alive = False
        heads = self.heads()
        serving: list[float] = []

        def restart() -> Gateway:
            gateway = self.start_gateway(victim.port)
            serving.append(time.perf_counter() - started)
            return gateway

        restarting = asyncio.create_task(asyncio.to_thread(restart)) if respawn else None
        queue = ListenQueue(victim.port)
        sampling = asyncio.create_task(queue.sample())
        # The clock runs from the kill; the wait starts once the clients have seen it.
        seen = time.perf_counter() + 10.0
        while time.perf_counter() < seen:
            states = await self.ask_all("status", heads={}, every_socket=True)
            if sum(s["lost_connections"] for s in states) >= held:
                break
            await asyncio.sleep(0.02)
        waited = await self.wait_caught_up(heads, 120.0)
        caught_up = time.perf_counter() - started
        after = self.cpu()
        kernel = {k: v - kernel.get(k, 0) for k, v in tcp_counters().items()}
        sampling.cancel()
        replacement_cpu = 0.0
        if restarting is not None:
            self.gateways[0] = await restarting
            replacement_cpu = _cpu(self.gateways[0].pid)
        read_delta = {k: v - reads[k] for k, v in self.history_reads().items()}
        await publisher.communicate()
        final = self.heads()
        tail = await self.wait_caught_up(final, 30.0)
        figures = await self.ask_all("collect", heads=final)
        steady, moved = Histogram(), Histogram()
        for f in figures:
            steady.merge(Histogram.from_json(f["steady"]))
            moved.merge(Histogram.from_json(f["reconnected"]))
        handshakes = [h for f in figures for h in f["reconnect_handshakes"]]
        print(
            "   every socket subscribed and caught up in "
            + (f"{caught_up:.2f} s after the kill" if waited is not None else "NOT within 120 s")
            + f"; final tail {_seconds(tail)}"
        )
        print(
            f"   reconnects {len(handshakes):,}; still down {sum(f['down'] for f in figures)}; "
            f"lost {sum(f['lost'] for f in figures)}, "
            f"duplicates {sum(f['duplicates'] for f in figures)}, resets "
            f"{sum(f['resets'] for f in figures)}; closes {_merge(f['closes'] for f in figures)}; "
            f"HTTP refusals {_merge(f['refusals'] for f in figures)}"
        )
        print(
            "   failed attempts (backed off, then the next gateway): "
            f"{_merge(f['failed_attempts'] for f in figures)}"
        )
        print(
            f"   reconnect handshake+resume p50 {percentile(handshakes, 0.5) * 1000:.1f} ms, "
            f"p99 {percentile(handshakes, 0.99) * 1000:.1f} ms"
        )
        if respawn:
            print(
                "   the replacement served /readyz "
                + (f"{serving[0]:.2f} s after the kill" if serving else "never")
                + f"; its accept queue at most {queue.longest:,} of {queue.bound:,}"
                f" ({queue.samples} looks); its CPU until caught up {replacement_cpu:.1f} s"
            )
        tries = [n for f in figures for n in f["attempts_per_reconnect"]]
        print(
            f"   attempts per reconnect (the SDK's back-off: full jitter, 0.5 s x2, cap 20 s, "
            f"plus a 503's Retry-After): p50 {percentile(tries, 0.5):g}, "
            f"p99 {percentile(tries, 0.99):g}, max {max(tries, default=0)}; the workers' "
            f"loops stalled at most {max(f['longest_stall'] for f in figures):.2f} s"
        )
        _attempt_timeline([a for f in figures for a in f["attempts"]], killed_at)
        print(f"   kernel TCP counters over the storm: {kernel}")
        print(
            f"   sockets that stayed: latency p50 {steady.percentile(0.5) * 1000:.1f} ms, "
            f"p99 {steady.percentile(0.99) * 1000:.1f} ms, max {steady.maximum * 1000:.1f} ms "
            f"({steady.total:,} sampled); moved sockets (replay included) p99 "
            f"{moved.percentile(0.99) * 1000:.1f} ms"
        )
        print(
            f"   Redis during the storm ({caught_up:.1f} s): CPU "
            f"{after['redis'] - before['redis']:.2f} s; commands {read_delta}"
        )
        _cpu_line(before, after, caught_up)
        print(
            f"   of the load workers' CPU, in the kernel: "
            f"{after['load system'] - before['load system']:.1f} s of "
            f"{after['load'] - before['load']:.1f} s"
        )
        _pong_line(figures, p.heartbeat_timeout)
        counts = self.gateway_counts()
        counts.subtract(counted)
        print(f"   the gateways counted: {dict(+counts) or 'nothing'}")
        # The survivors' CPU from the kill until every socket was back.
        gateway_cpu = sum(
            after[f"gateway-{i}"] - before[f"gateway-{i}"] for i in range(1, len(self.gateways))
        )
        if not respawn:
            load = traffic_load(p.sockets, 0, p.storm_rate, p.teams)
            _compare(
                "survivors' CPU until caught up, s",
                gateway_cpu,
                len(handshakes) * capacity.UNIT_COSTS.gateway_connect_us / 1e6
                + capacity.gateway_cpu(load, len(self.gateways) - 1) * caught_up,
            )


_TCP_COUNTERS = (
    "ListenOverflows",
    "ListenDrops",
    "TCPReqQFullDrop",
    "TCPReqQFullDoCookies",
    "SyncookiesSent",
    "TCPSynRetrans",
    "TCPTimeouts",
    "TCPAbortOnData",
    "TCPAbortOnClose",
    "TCPTimeWaitOverflow",
    "TW",
)


def tcp_counters() -> dict[str, int]:
    """The kernel's TcpExt counters a storm may move (/proc/net/netstat, as `nstat`
    reads them): listen-queue overflows and drops, SYN-queue drops, retransmitted SYNs."""
    counters: dict[str, int] = {}
    with contextlib.suppress(OSError), open("/proc/net/netstat") as netstat:
        lines = netstat.read().splitlines()
        for names, values in zip(lines[::2], lines[1::2], strict=False):
            if names.startswith("TcpExt:"):
                table = dict(zip(names.split()[1:], values.split()[1:], strict=False))
                counters = {k: int(table[k]) for k in _TCP_COUNTERS if k in table}
    return counters


class ListenQueue:
    """The longest accept queue seen on a listening port (`ss -ltn`: Recv-Q, of Send-Q)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.longest = 0
        self.bound = 0
        self.samples = 0

    async def sample(self, period: float = 0.25) -> None:
        while True:
            with contextlib.suppress(OSError):
                process = await asyncio.create_subprocess_exec(
                    "ss", "-ltnH", f"sport = :{self.port}", stdout=asyncio.subprocess.PIPE
                )
                out, _ = await process.communicate()
                for line in out.decode().splitlines():
                    fields = line.split()
                    if len(fields) >= 3:
                        self.samples += 1
                        self.longest = max(self.longest, int(fields[1]))
                        self.bound = int(fields[2])
            await asyncio.sleep(period)


def _attempt_timeline(attempts: list[list[Any]], killed_at: float, step: float = 10.0) -> None:
    """The reconnect attempts by outcome and target, in `step`-second windows after the kill."""
    windows: dict[int, Counter[str]] = {}
    for at, target, outcome in attempts:
        window = int((at - killed_at) // step)
        windows.setdefault(window, Counter())[f"{outcome} ({target})"] += 1
    print(f"   reconnect attempts by {step:g} s after the kill (outcome, target):")
    for window in sorted(windows):
        parts = ", ".join(f"{k} {v:,}" for k, v in sorted(windows[window].items()))
        print(f"     {window * step:>5.0f}-{(window + 1) * step:<4.0f} s  {parts}")


def traffic_load(sockets: int, broadcast: float, targeted: float, teams: int) -> capacity.Load:
    """The bench's traffic as the guide's load: each message goes to one channel, `alerts`
    (every socket) or one team's (a `teams`-th of them)."""
    rate = broadcast + targeted
    reach = (broadcast * sockets + targeted * sockets / teams) / rate if rate else 0.0
    return capacity.Load(
        sockets=sockets, alerts_per_second=rate, subscribers_per_event=reach, channels_per_alert=1
    )


def _cpu_line(before: dict[str, float], after: dict[str, float], elapsed: float) -> None:
    """Each process's CPU over a phase: the gateways, the load workers and Redis share
    the same cores, so a saturated phase shows who had them."""

    def share(key: str) -> float:
        return (after.get(key, 0.0) - before.get(key, 0.0)) / elapsed * 100

    gateways = sorted(k for k in after if k.startswith("gateway"))
    workers = [share(k) for k in after if k.startswith("load-")]
    print(
        f"   CPU over {elapsed:.1f} s, % of a core: gateways "
        + " ".join(f"{share(k):.0f}" for k in gateways)
        + f" (together {sum(share(k) for k in gateways):.0f}); load workers "
        f"{sum(workers):.0f} (busiest {max(workers, default=0.0):.0f}); "
        f"Redis {share('redis'):.0f}; the machine {share('machine'):.0f} of "
        f"{(os.cpu_count() or 1) * 100}"
    )


def _pong_line(figures: list[dict[str, Any]], timeout: float) -> int:
    """The pings the clients answered, by their own delay, and whom each heartbeat
    close is on; returns how many they answered."""
    ledger = PongLedger(PROMPT_ANSWER, timeout)
    for f in figures:
        ledger.merge(PongLedger.from_json(f["pongs"], PROMPT_ANSWER, timeout))
    answered = ledger.answered
    print(
        f"   pings answered {answered.total:,} (unread in the client's loop at most: "
        f"p50 {answered.percentile(0.5) * 1000:.0f} ms, p99 "
        f"{answered.percentile(0.99) * 1000:.0f} ms, max {answered.maximum:.2f} s): "
        f"{ledger.answers}"
    )
    print(
        f"   heartbeat closes by the client's answer to their ping (within {PROMPT_ANSWER:g} s: "
        f"the gateway read the pong late; after {timeout:g} s: the client's loop starved): "
        f"{ledger.closes or 'none'}"
    )
    return answered.total


# The gateway metrics a storm is judged by (`Run.gateway_counts`), by line prefix.
_GATEWAY_COUNTS = (
    ('tocsin_ws_limit_breaches_total{limit="loop_lag"}', "refused while the loop lagged"),
    ('tocsin_ws_limit_breaches_total{limit="connections"}', "refused while full"),
    ("tocsin_ws_late_pongs_read_total", "pongs on time only in the look after the deadline"),
    ('tocsin_ws_disconnects_total{code="heartbeat_timeout"}', "heartbeat closes"),
)


def _seconds(waited: float | None) -> str:
    return "NOT caught up" if waited is None else f"caught up in {waited:.2f} s"


def _merge(counters: Iterator[dict[str, int]] | Any) -> dict[str, int]:
    total: Counter[str] = Counter()
    for counter in counters:
        total.update(counter)
    return dict(total)


def _compare(label: str, measured: float, predicted: float) -> None:
    ratio = measured / predicted - 1 if predicted else float("nan")
    print(f"   {label:<46} measured {measured:>10.2f}  guide {predicted:>10.2f}  ({ratio:+.0%})")


def main() -> None:
    raise_fd_limit()
    params = Params()
    with RedisServer() as redis_server:
        run = Run(params, redis_server)
        with run.stack:
            run_load(run.run())


def _role(argv: list[str]) -> Callable[[], None]:
    if argv[0] == "worker":

        def start() -> None:
            import uvloop

            uvloop.run(worker(argv[1] or None, int(argv[2]), float(argv[3])))

        return start
    if argv[0] == "publish":
        return lambda: publish(
            argv[1], float(argv[2]), float(argv[3]), int(argv[4]), float(argv[5])
        )
    return main


if __name__ == "__main__":
    _role(sys.argv[1:] or ["main"])()
