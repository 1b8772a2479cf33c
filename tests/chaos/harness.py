"""What every chaos scenario uses: real processes, faults on demand, and one tally.

A scenario builds a `Stack` (a Redis-compatible server, AOF on, and Tocsin
services as real OS processes), drives traffic, injects a fault with the
stack's verbs (`kill`, `restart`, `redis.kill`, `redis.restart`,
`redis.frozen`), waits for things to settle with `settle`, and prints a
`Tally`: sent / accepted / stored / delivered / lost / duplicated / time to
settle. Its assertions are on the tally (`tally.assert_clean()`), so every
scenario states the same outcome the same way.

The API (stable; other scenario files build on it):

- `ChaosRedis(appendfsync="always")`: `url`, `client()`, `kill()` (SIGKILL),
  `restart()` (same port and data directory: the AOF is replayed), `freeze()`
  / `thaw()` (SIGSTOP / SIGCONT) and `frozen()` as a context manager.
- `Stack(redis, workdir)`: `start(name, wait=True, **env) -> Service`,
  `kill(service)` (SIGKILL), `restart(service)` (same port and env),
  `api_key()`, `close()`; also a context manager.
- `Service`: `name`, `url`, `port`, `pid`, `alive`, `wait_ready()`, `log()`.
- `Producer(ingest_url, api_key)`: `send(n)` / `send_for(seconds, rate)` one
  alert per request with an Idempotency-Key, retried on 503, 504 (ingest's
  "outcome unknown") and client timeouts; `outcomes` counts final outcomes,
  `answers` every answer, `answers_by_key` each alert's answers in order.
- `Tally(scenario, ...)`: the figures; `report()` prints them, `assert_clean()`.
- `settle(check, timeout, what) -> seconds`, `settle_stored(redis, producer, timeout,
  when)`, `whereabouts(redis, keys)`, `stored_counts(redis, keys)`,
  `alert_ids(redis, keys)` and `created_events(redis, channel)`.

Scenarios have a short form (seconds, run by `make test`) and a long form,
marked with `long_chaos` and run only by `make chaos` (`TOCSIN_CHAOS=long`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import redis as redis_lib

from tests.support import wait_until_serving
from tocsin.client.devserver import RedisServer, free_port, stop_process
from tocsin.common import keys
from tocsin.common.apikeys import ApiKeyStore

__all__ = [
    "LONG",
    "ChaosRedis",
    "Producer",
    "Service",
    "Stack",
    "Tally",
    "alert_ids",
    "created_events",
    "long_chaos",
    "settle",
    "settle_stored",
    "stored_counts",
    "whereabouts",
]

T = TypeVar("T")

# `make chaos` sets TOCSIN_CHAOS=long: the long forms run, with their minutes of traffic.
LONG = os.environ.get("TOCSIN_CHAOS", "") == "long"
# The marks of a long form (`pytest.param(..., marks=long_chaos)`): skipped unless asked
# for, and given minutes rather than the suite's per-test timeout.
long_chaos = (
    pytest.mark.skipif(
        not LONG, reason="long chaos scenario: run by `make chaos` (TOCSIN_CHAOS=long)"
    ),
    pytest.mark.timeout(900),
)
JWT_SECRET = "chaos-secret-for-tocsin-chaos-scenarios"


class ChaosRedis(RedisServer):
    """A Redis-compatible server with AOF on that can be killed, restarted and frozen."""

    def __init__(self, appendfsync: str = "always") -> None:
        super().__init__(appendfsync=appendfsync)
        self._frozen = False

    def client(self, **options: Any) -> redis_lib.Redis:
        return redis_lib.Redis.from_url(self.url, **options)

    def kill(self) -> None:
        """SIGKILL: what the AOF holds is all that survives."""
        self.thaw()
        super().kill()

    def restart(self) -> None:
        """Start again on the same port and data directory (the AOF is replayed)."""
        if self.pid is not None:
            self.kill()
        self.start(timeout=30)

    def freeze(self) -> None:
        """SIGSTOP: connections stay open and nothing answers."""
        if self.pid is not None and not self._frozen:
            os.kill(self.pid, signal.SIGSTOP)
            self._frozen = True

    def thaw(self) -> None:
        if self.pid is not None and self._frozen:
            os.kill(self.pid, signal.SIGCONT)
        self._frozen = False

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        self.freeze()
        try:
            yield
        finally:
            self.thaw()


@dataclass
class Service:
    """A Tocsin service as a real OS process (`python -m tocsin.client <name>`)."""

    name: str
    port: int
    env: dict[str, str] = field(repr=False)
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def launch(self) -> None:
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tocsin.client", self.name],
                env=self.env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 30.0) -> None:
        assert self.process is not None
        wait_until_serving(f"{self.url}/readyz", self.process, timeout, self.log)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class Stack:
    """Services started against one `ChaosRedis`; everything is stopped on `close`."""

    def __init__(self, redis: ChaosRedis, workdir: Path) -> None:
        self.redis = redis
        self.workdir = workdir
        self.services: list[Service] = []

    def start(self, name: str, *, wait: bool = True, **env: str) -> Service:
        port = free_port()
        environ = dict(os.environ)
        environ.update(
            REDIS_URL=self.redis.url,
            TOCSIN_PORT=str(port),
            TOCSIN_LOG_FORMAT="json",
            TOCSIN_JWT_SECRET=JWT_SECRET,
            TOCSIN_AUTO_RESOLVE_SECONDS="0",
            PYTHONUNBUFFERED="1",
        )
        environ.update(env)
        service = Service(name, port, environ, self.workdir / f"{name}-{port}.log")
        service.launch()
        self.services.append(service)
        if wait:
            service.wait_ready()
        return service

    def kill(self, service: Service) -> None:
        """SIGKILL, as the OOM killer or a node loss would."""
        if service.alive:
            assert service.process is not None
            service.process.kill()
            service.process.wait(10)

    def restart(self, service: Service, *, wait: bool = True) -> None:
        """SIGKILL it if alive, then start it again on the same port with the same env."""
        self.kill(service)
        service.launch()
        if wait:
            service.wait_ready()

    def api_key(self, name: str = "chaos") -> str:
        client = self.redis.client()
        try:
            key, _ = ApiKeyStore(client).create(name)
        finally:
            client.close()
        return key

    def close(self) -> None:
        for service in reversed(self.services):
            if service.process is not None:
                stop_process(service.process, 15)

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def settle(
    check: Callable[[], T],
    timeout: float,
    what: str,
    interval: float = 0.05,
    explain: Callable[[], object] | None = None,
) -> float:
    """Seconds until `check()` is truthy; fails the scenario after `timeout` s, with
    what `explain()` returns (where the missing work is) in the failure."""
    started = time.monotonic()
    while True:
        if check():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            detail = f"; {explain()}" if explain is not None else ""
            raise AssertionError(f"did not settle within {timeout:.0f} s: {what}{detail}")
        time.sleep(interval)


def settle_stored(redis: redis_lib.Redis, producer: Producer, timeout: float, when: str) -> float:
    """`settle` until every alert `producer` had accepted is stored; a failure names
    the missing alerts and where their messages are (`whereabouts`)."""

    def missing() -> list[str]:
        stored = stored_counts(redis, producer.accepted_keys)
        return [key for key in producer.accepted_keys if key not in stored]

    return settle(
        lambda: not missing(),
        timeout,
        f"every accepted alert stored {when}".rstrip(),
        explain=lambda: {
            key: {"answers": producer.answers_by_key.get(key), "in Redis": places}
            for key, places in whereabouts(redis, missing()).items()
        },
    )


def whereabouts(redis: redis_lib.Redis, dedup_keys: Iterable[str]) -> dict[str, list[str]]:
    """Where each producer dedup key's traces are in Redis: its keys (dedup record,
    idempotency record) and each message that carries it, by where the message is
    (queued, fetched by a worker, due later, dead-lettered). What a failed settle
    prints, so that a lost alert says where it stopped."""
    found: dict[str, list[str]] = {key: [] for key in dedup_keys}
    if not found:
        return found
    for key in found:
        found[key] += [name.decode() for name in redis.scan_iter(match=f"*{key}", count=1000)]
    acks = {name.decode(): {m.decode() for m in redis.smembers(name)}
            for name in redis.scan_iter(match=f"{keys.DRAMATIQ_NAMESPACE}:__acks__.*")}  # fmt: skip
    for hash_name in [*redis.scan_iter(match="*.msgs"), *redis.scan_iter(match="*:msgs")]:
        pending = hash_name.decode().removesuffix(".msgs").removesuffix(":msgs")
        queued = {m.decode() for m in redis.lrange(pending, 0, -1)} if redis.type(
            pending) == b"list" else set()  # fmt: skip
        for message_id, data in redis.hgetall(hash_name).items():
            text, mid = data.decode(errors="replace"), message_id.decode()
            holders = [name for name, ids in acks.items() if mid in ids]
            place = "queued" if mid in queued else f"fetched by {holders}" if holders else "held"
            for key in found:
                if f'"{key}"' in text:
                    found[key].append(f"message {mid} in {hash_name.decode()} ({place})")
    return found


def stored_counts(redis: redis_lib.Redis, dedup_keys: Iterable[str]) -> dict[str, int]:
    """The stored occurrence count of each producer dedup key that has a record.

    An alert stored once per send has count 1; a count above the sends is a
    double-counted retry or redelivery.
    """
    found: dict[str, int] = {}
    wanted = list(dedup_keys)
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        pipe = redis.pipeline(transaction=False)
        for key in chunk:
            pipe.hget(keys.dedup(key), "id")
        ids = pipe.execute()
        present = [(key, i.decode()) for key, i in zip(chunk, ids, strict=True) if i]
        if not present:
            continue
        records = redis.mget([keys.alert(i) for _, i in present])
        for (key, _), record in zip(present, records, strict=True):
            if record:
                found[key] = int(json.loads(record).get("count", 1))
    return found


def created_events(redis: redis_lib.Redis, channel: str = "alerts") -> Counter[str]:
    """How many `alert.created` events the channel's stream holds per alert id.

    What a dashboard that was connected the whole time received (the stream
    and the live frames are one write): each alert once, or it was lost or
    doubled on the way out.
    """
    created: Counter[str] = Counter()
    stream = keys.channel_stream(channel)
    start = "-"
    while True:
        entries = redis.xrange(stream, min=start, count=1000)
        for _entry_id, fields in entries:
            frame = json.loads(fields[b"f"])
            data = frame.get("data", {})
            if data.get("type") == "alert.created":
                created[str(data.get("alert", {}).get("id", ""))] += 1
        if len(entries) < 1000:
            return created
        start = "(" + entries[-1][0].decode()


def alert_ids(redis: redis_lib.Redis, dedup_keys: Iterable[str]) -> dict[str, str]:
    """The current alert id of each producer dedup key that has one."""
    wanted = list(dedup_keys)
    pipe = redis.pipeline(transaction=False)
    for key in wanted:
        pipe.hget(keys.dedup(key), "id")
    return {key: i.decode() for key, i in zip(wanted, pipe.execute(), strict=True) if i}


class Producer:
    """Sends one alert per request to ingest, as a careful producer does.

    Each alert has its own dedup key, sent as the Idempotency-Key too, so a
    retry after a 503 or an answer whose outcome is unknown cannot count it
    twice. `outcomes` counts final answers: `accepted`, `refused` (a 4xx,
    or 503 retries given up), `unknown` (no answer in time, retries given up).
    """

    def __init__(self, ingest_url: str, api_key: str, *, prefix: str = "", timeout: float = 3.0):
        self.url = f"{ingest_url}/v1/alerts"
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self.prefix = prefix or uuid.uuid4().hex[:6]
        self.timeout = timeout
        self.sent_keys: list[str] = []
        self.accepted_keys: list[str] = []
        self.outcomes: Counter[str] = Counter()
        self.answers: Counter[str] = Counter()  # every answer, retries included
        self.answers_by_key: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._count = 0

    def _next_key(self) -> str:
        with self._lock:
            self._count += 1
            return f"{self.prefix}-{self._count}"

    def send_one(self, client: httpx.Client, retry_for: float = 60.0) -> str:
        """Send one new alert until it is accepted or `retry_for` s pass; its outcome."""
        key = self._next_key()
        body = {"name": "ChaosProbe", "severity": "warning", "dedup_key": key}
        headers = {**self.headers, "Idempotency-Key": key}
        with self._lock:
            self.sent_keys.append(key)
        deadline = time.monotonic() + retry_for
        outcome = "unknown"
        while True:
            try:
                answer = client.post(self.url, json=body, headers=headers, timeout=self.timeout)
            except httpx.HTTPError:
                kind = "unknown"
            else:
                if answer.status_code < 300:
                    kind = "accepted"
                elif answer.status_code == 503:
                    kind = "503"
                elif answer.status_code == 504:
                    kind = "504"  # ingest's "outcome unknown"
                else:
                    kind = f"{answer.status_code}"
            with self._lock:
                self.answers[kind] += 1
                self.answers_by_key.setdefault(key, []).append(kind)
            if kind == "accepted":
                outcome = "accepted"
                break
            if kind not in ("unknown", "503", "504") or time.monotonic() > deadline:
                outcome = "unknown" if kind in ("unknown", "504") else "refused"
                break
            time.sleep(0.2)
        with self._lock:
            self.outcomes[outcome] += 1
            if outcome == "accepted":
                self.accepted_keys.append(key)
        return outcome

    def send(self, count: int, *, retry_for: float = 60.0) -> None:
        with httpx.Client() as client:
            for _ in range(count):
                self.send_one(client, retry_for)

    def send_for(self, seconds: float, rate: float, *, retry_for: float = 60.0) -> None:
        """Send at about `rate` alerts/s for `seconds` (sequentially: a slow answer slows it)."""
        with httpx.Client() as client:
            started = time.monotonic()
            n = 0
            while time.monotonic() - started < seconds:
                self.send_one(client, retry_for)
                n += 1
                pause = started + n / rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)

    @contextlib.contextmanager
    def in_background(self, seconds: float, rate: float) -> Iterator[threading.Thread]:
        """`send_for` on a thread; joined when the block ends."""
        thread = threading.Thread(target=self.send_for, args=(seconds, rate), daemon=True)
        thread.start()
        try:
            yield thread
        finally:
            thread.join()


@dataclass
class Tally:
    """A scenario's figures, printed in one format by every scenario."""

    scenario: str
    sent: int = 0
    accepted: int = 0
    stored: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    settle_seconds: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)

    def report(self) -> str:
        line = (
            f"chaos {self.scenario}: sent={self.sent} accepted={self.accepted} "
            f"stored={self.stored} delivered={self.delivered} lost={self.lost} "
            f"duplicated={self.duplicated} settle={self.settle_seconds:.1f}s"
        )
        if self.notes:
            line += " " + " ".join(f"{k}={v}" for k, v in self.notes.items())
        print(line, flush=True)
        return line

    def assert_clean(self) -> None:
        """Nothing accepted lost, nothing counted twice."""
        assert self.lost == 0, self.report()
        assert self.duplicated == 0, self.report()

    @classmethod
    def of_alerts(
        cls,
        scenario: str,
        producer: Producer,
        redis: redis_lib.Redis,
        *,
        settle_seconds: float = 0.0,
    ) -> Tally:
        """The tally of `producer`'s alerts as Redis holds them now.

        stored: alerts with a record; delivered: alerts whose `alert.created`
        event is on the `alerts` stream; lost: accepted alerts not stored or
        never delivered; duplicated: alerts counted twice or created twice.
        """
        counts = stored_counts(redis, producer.sent_keys)
        ids = alert_ids(redis, producer.sent_keys)
        created = created_events(redis)
        delivered = {key for key, alert_id in ids.items() if created[alert_id] > 0}
        return cls(
            scenario,
            sent=len(producer.sent_keys),
            accepted=len(producer.accepted_keys),
            stored=len(counts),
            delivered=len(delivered),
            lost=sum(
                1 for key in producer.accepted_keys if key not in counts or key not in delivered
            ),
            duplicated=sum(
                1 for key, count in counts.items() if count > 1 or created[ids.get(key, "")] > 1
            ),
            settle_seconds=settle_seconds,
            notes={"answers": dict(producer.answers)},
        )
