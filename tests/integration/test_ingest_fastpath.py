"""Ingest's fast path against uvicorn's: the same bytes get the same answers, queue the same.

Two ingest servers run in this process, each on its own uvloop thread and its
own database of one real Redis-compatible server: one with the fast path
(`tocsin.ingest.fastpath`), one with the same protocol and no fast endpoints,
so every request takes uvicorn's path and the ASGI endpoint. Each case sends
the same bytes to both over a fresh connection -- valid, malformed, hostile,
pipelined, split across packets, kept alive, HTTP/1.0, `Expect: 100-continue`,
wrong Content-Lengths, replayed Idempotency-Keys, a Redis that is gone -- and
compares the status, the headers that matter, the body, whether the server
closed the connection, the ingest metrics that moved, and the messages
queued, with fresh ids, times and trace ids put aside. A property test sends
generated requests the same way. A second pair runs with tracing on (the
tracing middleware installed, spans recorded in this process) and compares,
besides, the spans each request leaves -- name, kind, attributes, status,
events, trace and parent -- and which span the answer's and the queued
message's `traceparent` name. The tests also check that the fast path did
take the plain requests, so a fast path that quietly never runs fails them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import logging
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
import uvicorn
import uvloop
from conftest import TEST_JWT_SECRET
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import REGISTRY
from tests.support import wait_until

from tocsin.client.devserver import RedisServer, free_port
from tocsin.client.devtoken import mint_token
from tocsin.common import broker as queues
from tocsin.common.apikeys import ApiKeyStore
from tocsin.common.auth import TokenVerifier
from tocsin.common.ops import _config
from tocsin.common.queue import queue_keys
from tocsin.common.redis import async_client
from tocsin.common.telemetry import ServerSpans
from tocsin.common.telemetry import setup as telemetry_setup
from tocsin.common.telemetry.export import SpanRecord
from tocsin.common.telemetry.spans import RecordingTracerProvider
from tocsin.ingest.accept import AcceptPipeline, ProducerEndpoint
from tocsin.ingest.admission import Admission
from tocsin.ingest.app import build_app
from tocsin.ingest.fastpath import FastPathProtocol
from tocsin.ingest.settings import IngestSettings

pytestmark = pytest.mark.integration

QUEUE = queue_keys(queues.ALERTS_QUEUE)
ALERT = b'{"name":"DiskFull","severity":"critical","labels":{"host":"db-1"}}'
AM_ALERTS = b'[{"labels":{"alertname":"DiskFull","host":"db-1"},"annotations":{"s":"x"}}]'
WEBHOOK = (
    b'{"version":"4","status":"firing","receiver":"r","groupKey":"g","alerts":'
    b'[{"status":"firing","labels":{"alertname":"DiskFull"},"annotations":{},'
    b'"startsAt":"2026-11-30T00:00:00Z"}]}'
)
PAGERDUTY = (
    b'{"routing_key":"{key}","event_action":"trigger",'
    b'"payload":{"summary":"disk","source":"db-1","severity":"critical"}}'
)
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
_METRICS = (
    "tocsin_ingest_alerts_received_total",
    "tocsin_ingest_requests_rejected_total",
    "tocsin_ingest_request_duration_seconds_count",
)


@dataclass
class Side:
    """One of the two servers: where it listens, its database, its credentials."""

    name: str
    port: int
    # Where its queue is read after each exchange (None: its Redis is not a real one).
    redis_url: str | None
    key: str
    token: str
    # What `accept_now` answered, in order: whether each request took the fast path.
    taken: list[bool] = field(default_factory=list)
    server: uvicorn.Server | None = None


class _UnloggedProtocol(FastPathProtocol):
    """Ingest's protocol with uvicorn's access log off, as `tocsin ingest` runs it:
    pytest hangs its capture handlers on every logger, uvicorn's access logger too,
    and uvicorn would then log each request (and the fast path stand aside)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        logging.getLogger("uvicorn.access").handlers.clear()
        super().__init__(*args, **kwargs)


def _serve(app: Any, port: int, protocol: type) -> uvicorn.Server:
    """`app` under uvicorn on its own uvloop thread, as `tocsin ingest` runs it."""
    server = uvicorn.Server(
        _config(app, "127.0.0.1", port, lifespan="off", proxy_headers=False, http=protocol)
    )
    thread = threading.Thread(target=lambda: uvloop.run(server.serve()), daemon=True)
    thread.start()
    return server


def _settings(redis_url: str, **options: Any) -> IngestSettings:
    # Short head and body timeouts, so the cases that wait for them end soon.
    options = {"http_head_timeout": 1.0, "http_body_timeout": 1.0, **options}
    return IngestSettings(redis_url=redis_url, jwt_secret=TEST_JWT_SECRET, **options)


def _start_side(
    name: str, database: str, app_url: str | None, fast: bool, traced: bool, **options: Any
) -> tuple[Side, uvicorn.Server]:
    """A server on `database` (a real Redis's URL), or on `app_url` when given; `traced`:
    its app with the tracing middleware, as `instrument_app` installs it."""
    settings = _settings(app_url or database, auth_cache_seconds=3600.0, **options)
    app = build_app(
        settings, async_client(settings.redis_url), TokenVerifier.from_settings(settings)
    )
    if traced:
        app.add_middleware(ServerSpans)
    side = Side(
        name,
        free_port(),
        None if app_url else database,
        key=ApiKeyStore(redis.Redis.from_url(database)).create("tests", {"team": "ops"})[0],
        token=mint_token(TEST_JWT_SECRET, "token-producer", scopes=("ingest",)),
    )
    endpoints: dict[str, ProducerEndpoint] = {}
    if fast:
        for path, endpoint in app.fast_endpoints().items():
            endpoints[path] = _recording(endpoint, side.taken)
    server = _serve(app, side.port, _UnloggedProtocol.serving(endpoints, settings.http_limits()))
    side.server = server
    return side, server


def _recording(endpoint: ProducerEndpoint, taken: list[bool]) -> ProducerEndpoint:
    accept_now = endpoint.accept_now

    def recorded(*args: Any) -> bool:
        took = accept_now(*args)
        taken.append(took)
        return took

    endpoint.accept_now = recorded  # type: ignore[method-assign,assignment]
    return endpoint


@contextlib.contextmanager
def _pair(
    redis_server: RedisServer,
    app_url: str | None = None,
    *,
    traced: bool = False,
    databases: tuple[int, int] = (1, 2),
    **options: Any,
) -> Iterator[tuple[Side, Side]]:
    """A fast and a plain server on `databases` of `redis_server` (on `app_url`
    instead when given: a Redis that is not there, or that fails)."""
    base = redis_server.url.rsplit("/", 1)[0]
    servers = []
    sides = []
    first, second = (f"{base}/{database}" for database in databases)
    for name, database, fast in (("fast", first, True), ("plain", second, False)):
        side, server = _start_side(name, database, app_url, fast, traced, **options)
        servers.append(server)
        sides.append(side)
    try:
        for side in sides:
            wait_until(functools.partial(_serving, side), what=f"the {side.name} server")
        yield sides[0], sides[1]
    finally:
        for server in servers:
            server.should_exit = True


def _serving(side: Side) -> bool:
    with contextlib.suppress(OSError):
        socket.create_connection(("127.0.0.1", side.port), timeout=1).close()
        return True
    return False


WAIT = b"<wait for an answer>"
PAUSE = b"<pause>"


@dataclass
class Exchange:
    """What one connection got back, in comparable form."""

    answers: list[tuple[int, dict[str, list[str]], Any]]
    closed: bool
    metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float]
    queued: list[Any]
    # The trace context of each answer and each queued message, as sent.
    traceparents: list[str] = field(default_factory=list)


def _parse(data: bytes) -> list[tuple[int, dict[str, list[str]], bytes]]:
    answers = []
    at = 0
    while (end := data.find(b"\r\n\r\n", at)) >= 0:
        lines = data[at:end].decode("latin-1").split("\r\n")
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        length = int(headers.get("content-length", ["0"])[0])
        if end + 4 + length > len(data):
            break
        answers.append((int(lines[0].split(" ")[1]), headers, data[end + 4 : end + 4 + length]))
        at = end + 4 + length
    return answers


def _metrics() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    values = {}
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name in _METRICS:
                values[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return values


def _queued(redis_url: str) -> list[bytes]:
    client = redis.Redis.from_url(redis_url)
    ids = client.lrange(QUEUE.pending, 0, -1)
    messages: list[bytes] = [client.hget(QUEUE.messages, message_id) or b"" for message_id in ids]
    client.delete(QUEUE.pending, QUEUE.messages, QUEUE.weights, QUEUE.backlog, QUEUE.wakeup)
    return messages


def _quiet(side: Side) -> tuple[dict[tuple[str, tuple[tuple[str, str], ...]], float], int]:
    """The metrics once the server has finished what it was doing (answers are
    written before a request's last step on uvicorn's path, and a request whose
    connection closed may still be admitted)."""
    client = redis.Redis.from_url(side.redis_url) if side.redis_url else None
    last = None
    for _ in range(100):
        now = (_metrics(), client.llen(QUEUE.pending) if client is not None else 0)
        if now == last:
            return now
        last = now
        time.sleep(0.05)
    raise AssertionError(f"{side.name}: the server did not settle")


def _exchange(side: Side, chunks: list[bytes], requests: int) -> Exchange:
    """Send `chunks` over one connection (`WAIT`: until one more answer; `PAUSE`: 50 ms)
    and read until `requests` answers came or the server closed or went quiet."""
    before = _metrics()
    conn = socket.create_connection(("127.0.0.1", side.port), timeout=10)
    data = b""
    closed = False

    def read(timeout: float) -> bool:
        nonlocal data, closed
        conn.settimeout(timeout)
        try:
            chunk = conn.recv(65536)
        except TimeoutError:
            return False
        except OSError:
            chunk = b""
        if not chunk:
            closed = True
            return False
        data += chunk
        return True

    try:
        for chunk in chunks:
            if chunk == WAIT:
                seen = len(_parse(data))
                while len(_parse(data)) == seen and not closed and read(10.0):
                    pass
            elif chunk == PAUSE:
                time.sleep(0.05)
            elif not closed:
                try:
                    conn.sendall(chunk)
                except OSError:
                    closed = True
        while not closed:
            answers = _parse(data)
            finals = [a for a in answers if a[0] >= 200]
            wants_close = any("close" in a[1].get("connection", []) for a in finals)
            if len(finals) >= requests and not wants_close:
                break
            if not read(3.0):
                break
    finally:
        conn.close()
    metrics, _ = _quiet(side)
    moved = {k: v - before.get(k, 0.0) for k, v in metrics.items() if v != before.get(k, 0.0)}
    normal = _Normaliser()
    answers = [
        (status, normal.headers(headers), normal.body(body))
        for status, headers, body in _parse(data)
    ]
    messages = _queued(side.redis_url) if side.redis_url else []
    queued = [normal.body(message) for message in messages]
    traceparents = [
        value for _, headers, _ in _parse(data) for value in headers.get("traceparent", [])
    ]
    traceparents += [json.loads(message)["options"]["traceparent"] for message in messages]
    return Exchange(answers, closed, moved, queued, traceparents)


_RANDOM = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|\b[0-9a-f]{32}\b"
)
_TRACE = re.compile(r"^00-([0-9a-f]{32})-[0-9a-f]{16}-([0-9a-f]{2})$")


class _Normaliser:
    """Puts aside what is fresh per request (ids, times, new trace ids), consistently
    within one exchange: the same id twice (a replay) stays visibly the same."""

    def __init__(self) -> None:
        self._seen: dict[str, str] = {}

    def _token(self, match: re.Match[str]) -> str:
        return self._seen.setdefault(match[0], f"<random {len(self._seen)}>")

    def _traceparent(self, value: str) -> str:
        match = _TRACE.match(value)
        if match is None:
            return f"<not a traceparent: {value}>"
        trace = match[1] if match[1] == TRACEPARENT[3:35] else "<new trace>"
        return f"00-{trace}-<span>-{match[2]}"

    def _walk(self, value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: self._walk(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [self._walk(v, key) for v in value]
        if key in ("received_at", "message_timestamp", "at", "created_at"):
            return "<time>"
        if key == "traceparent" and isinstance(value, str):
            return self._traceparent(value)
        if isinstance(value, str):
            return _RANDOM.sub(self._token, value)
        return value

    def headers(self, headers: dict[str, list[str]]) -> dict[str, list[str]]:
        kept = {name: values for name, values in headers.items() if name != "date"}
        if "traceparent" in kept:
            kept["traceparent"] = [self._traceparent(v) for v in kept["traceparent"]]
        kept.pop("content-length", None)  # the body is compared, and ids are of fixed length
        return kept

    def body(self, body: bytes) -> Any:
        try:
            return self._walk(json.loads(body))
        except ValueError:
            return _RANDOM.sub(self._token, body.decode("latin-1"))


def _same(fast: Exchange, plain: Exchange, case: str) -> None:
    assert fast.answers == plain.answers, case
    assert fast.closed == plain.closed, case
    assert fast.metrics == plain.metrics, case
    assert fast.queued == plain.queued, case


# -- requests ------------------------------------------------------------------------


def _credential(side: Side, auth: str) -> str:
    return {
        "key": f"Bearer {side.key}",
        "token": f"Bearer {side.token}",
        "basic": "Basic " + base64.b64encode(f"tocsin:{side.key}".encode()).decode(),
        "bad": "Bearer tk_nope_nope",
        "none": "",
    }[auth]


def request(
    side: Side,
    path: str = "/v1/alerts",
    body: bytes = ALERT,
    *,
    auth: str = "key",
    headers: tuple[str, ...] = (),
    method: str = "POST",
    version: str = "HTTP/1.1",
    length: int | str | None = -1,
) -> bytes:
    """A request's bytes for `side` (`length`: -1 the body's, None no Content-Length)."""
    body = body.replace(b"{key}", side.key.encode())
    lines = [f"{method} {path} {version}", "Host: 127.0.0.1", "Content-Type: application/json"]
    credential = _credential(side, auth)
    if credential:
        lines.append(f"Authorization: {credential}")
    if length is not None:
        lines.append(f"Content-Length: {len(body) if length == -1 else length}")
    lines += [h.replace("{key}", side.key) for h in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# -- the cases ----------------------------------------------------------------------


@dataclass
class Case:
    """Bytes to send (built per side) and how many answers to wait for; `fast` says
    whether the fast path must take a request of it (True), none (False), or either."""

    build: Callable[[Side], list[bytes]]
    requests: int = 1
    fast: bool | None = None


def _kept_alive(side: Side, count: int, **options: Any) -> list[bytes]:
    chunks: list[bytes] = []
    for _ in range(count):
        chunks += [request(side, **options), WAIT]
    return chunks


def _split(at: int) -> Callable[[Side], list[bytes]]:
    def build(side: Side) -> list[bytes]:
        data = request(side)
        return [data[:at], PAUSE, data[at:]]

    return build


def _reused(key: str) -> Callable[[Side], list[bytes]]:
    """A request with Idempotency-Key header `key`, then another body under the same key."""

    def build(side: Side) -> list[bytes]:
        other = ALERT.replace(b"db-1", b"db-2")
        return [request(side, headers=(key,)), WAIT, request(side, body=other, headers=(key,))]

    return build


IDEMPOTENCY = f"Idempotency-Key: fastpath-{uuid.uuid4().hex}"
REUSED = f"Idempotency-Key: fastpath-{uuid.uuid4().hex}"

CASES: dict[str, Case] = {
    "one native alert": Case(lambda s: [request(s)], fast=True),
    "three alerts in turn on a kept-alive connection": Case(
        lambda s: _kept_alive(s, 3), requests=3, fast=True
    ),
    "a native batch": Case(
        lambda s: [request(s, body=b"[" + ALERT + b"," + ALERT + b"]")], fast=True
    ),
    "Alertmanager's push": Case(lambda s: [request(s, "/api/v2/alerts", AM_ALERTS)], fast=True),
    "Alertmanager's webhook": Case(
        lambda s: [request(s, "/v1/integrations/alertmanager", WEBHOOK)], fast=True
    ),
    "PagerDuty, key in the body": Case(
        lambda s: [request(s, "/v2/enqueue", PAGERDUTY, auth="none")], fast=False
    ),
    "PagerDuty, key in the header": Case(
        lambda s: [request(s, "/v2/enqueue", PAGERDUTY)], fast=True
    ),
    "an ingest token": Case(lambda s: [request(s, auth="token")], fast=True),
    "Basic auth with the key as password": Case(lambda s: [request(s, auth="basic")], fast=True),
    "lower-case scheme, upper-case names, obs-text, no Host": Case(
        lambda s: [
            f"POST /v1/alerts HTTP/1.1\r\nCONTENT-LENGTH:{len(ALERT)}\r\n"
            f"AUTHORIZATION:   bearer {s.key}\r\nX-Note: caf\xe9 \t au lait\r\n\r\n".encode(
                "latin-1"
            )
            + ALERT
        ],
        fast=True,
    ),
    "Connection: keep-alive": Case(
        lambda s: _kept_alive(s, 2, headers=("Connection: Keep-Alive",)), requests=2, fast=True
    ),
    "a traceparent continued": Case(
        lambda s: [request(s, headers=(f"traceparent: {TRACEPARENT}",))], fast=True
    ),
    "an invalid traceparent": Case(
        lambda s: [request(s, headers=("traceparent: 00-zz-zz-01",))], fast=True
    ),
    "an Idempotency-Key replayed": Case(
        lambda s: _kept_alive(s, 2, headers=(IDEMPOTENCY,)), requests=2, fast=True
    ),
    "an Idempotency-Key reused for another body": Case(_reused(REUSED), requests=2, fast=True),
    "an Idempotency-Key too long": Case(
        lambda s: [request(s, headers=("Idempotency-Key: " + "k" * 300,))], fast=False
    ),
    "no credential": Case(lambda s: [request(s, auth="none")], fast=False),
    "an unknown API key": Case(lambda s: [request(s, auth="bad")], fast=False),
    "a token without the ingest scope": Case(
        lambda s: [
            request(
                s,
                auth="none",
                headers=(
                    "Authorization: Bearer " + mint_token(TEST_JWT_SECRET, "u", scopes=("read",)),
                ),
            )
        ],
        fast=False,
    ),
    "a body that is not JSON": Case(lambda s: [request(s, body=b"{not json")], fast=False),
    "an unknown field": Case(lambda s: [request(s, body=b'{"name":"A","zzz":1}')], fast=False),
    "an empty batch": Case(lambda s: [request(s, body=b"[]")], fast=False),
    "an empty Alertmanager push": Case(lambda s: [request(s, "/api/v2/alerts", b"[]")], fast=False),
    "invalid UTF-8 in a string": Case(
        lambda s: [request(s, body=b'{"name":"Disk\xff","severity":"critical"}')], fast=False
    ),
    "Content-Length: 0": Case(lambda s: [request(s, body=b"")], fast=False),
    "a declared body over the limit": Case(
        lambda s: [request(s, body=b"", length=2_000_000)], fast=False
    ),
    "HTTP/1.0": Case(lambda s: [request(s, version="HTTP/1.0")], fast=False),
    "Connection: close": Case(lambda s: [request(s, headers=("Connection: close",))], fast=False),
    "Expect: 100-continue": Case(
        lambda s: [request(s, headers=("Expect: 100-continue",))], fast=False
    ),
    "a chunked body": Case(
        lambda s: [
            request(
                s,
                body=b"%x\r\n%b\r\n0\r\n\r\n" % (len(ALERT), ALERT),
                length=None,
                headers=("Transfer-Encoding: chunked",),
            )
        ],
        fast=False,
    ),
    "chunked and a Content-Length": Case(
        lambda s: [
            request(
                s,
                body=b"%x\r\n%b\r\n0\r\n\r\n" % (len(ALERT), ALERT),
                headers=("Transfer-Encoding: chunked",),
            )
        ]
    ),
    "two equal Content-Lengths": Case(
        lambda s: [request(s, headers=(f"Content-Length: {len(ALERT)}",))], fast=False
    ),
    "two different Content-Lengths": Case(
        lambda s: [request(s, headers=("Content-Length: 3",))], fast=False
    ),
    "a Content-Length that is not a number": Case(lambda s: [request(s, length="12a")], fast=False),
    "a negative Content-Length": Case(lambda s: [request(s, length="-5")], fast=False),
    "a Content-Length shorter than the body": Case(
        lambda s: [request(s, length=len(ALERT) - 5)], fast=False
    ),
    "a Content-Length longer than the body (the body timeout)": Case(
        lambda s: [request(s, length=len(ALERT) + 5)], fast=False
    ),
    "the head split across packets": Case(_split(12), fast=False),
    "the body split across packets": Case(
        lambda s: [request(s)[:-7], PAUSE, request(s)[-7:]], fast=False
    ),
    "two requests pipelined in one write": Case(
        lambda s: [request(s) + request(s)], requests=2, fast=False
    ),
    "a request sent while the one before is answered": Case(
        lambda s: [request(s), request(s, headers=("X-Second: 1",))], requests=2
    ),
    "forty requests pipelined (past the bound)": Case(
        lambda s: [request(s) * 40], requests=40, fast=False
    ),
    "a folded header line": Case(lambda s: [request(s, headers=("X-Folded: a", " b"))], fast=False),
    "a space before a header's colon": Case(
        lambda s: [request(s, headers=("X-Space : a",))], fast=False
    ),
    "white space after a header's value": Case(
        lambda s: [request(s, headers=("Idempotency-Key: spaced-" + uuid.uuid4().hex + " ",))],
        fast=False,
    ),
    "a NUL in a header value": Case(lambda s: [request(s, headers=("X-Nul: a\x00b",))]),
    "bare LF line endings": Case(lambda s: [request(s).replace(b"\r\n", b"\n", 3)], fast=False),
    "a repeated Authorization header": Case(
        lambda s: [request(s, headers=("Authorization: Bearer tk_nope_nope",))], fast=False
    ),
    "101 header fields": Case(
        lambda s: [request(s, headers=tuple(f"X-H{i}: v" for i in range(101)))], fast=False
    ),
    "a head over its limit": Case(
        lambda s: [request(s, headers=("X-Big: " + "b" * 70_000,))], fast=False
    ),
    "a URL over its limit": Case(lambda s: [request(s, "/v1/alerts?" + "q" * 9_000)]),
    "a query string": Case(lambda s: [request(s, "/v1/alerts?x=1")], fast=False),
    "a trailing slash": Case(lambda s: [request(s, "/v1/alerts/")], fast=False),
    "an absolute-form target": Case(
        lambda s: [request(s, "http://127.0.0.1/v1/alerts")], fast=False
    ),
    "GET on a push route": Case(lambda s: [request(s, method="GET", body=b"")], fast=False),
    "a lower-case method": Case(lambda s: [request(s, method="post")], fast=False),
    "bytes that start no request": Case(lambda s: [b"\r\n\r\n" + request(s)]),
    "a percent-encoded path": Case(lambda s: [request(s, "/v1/%61lerts")], fast=False),
}


@pytest.fixture(scope="module")
def pair(module_redis_server: RedisServer) -> Iterator[tuple[Side, Side]]:
    with _pair(module_redis_server) as (fast, plain):
        for side in (fast, plain):  # a first request verifies (and caches) each side's key
            assert _exchange(side, [request(side)], 1).answers[0][0] == 202
        yield fast, plain


@pytest.mark.parametrize("case", list(CASES))
def test_the_fast_path_answers_and_queues_as_uvicorns_path_does(
    pair: tuple[Side, Side], case: str
) -> None:
    fast, plain = pair
    spec = CASES[case]
    plain_got = _exchange(plain, spec.build(plain), spec.requests)
    taken = len(fast.taken)
    fast_got = _exchange(fast, spec.build(fast), spec.requests)
    _same(fast_got, plain_got, case)
    took = fast.taken[taken:]
    if spec.fast is True:
        assert True in took, f"{case}: the fast path took none of it"
    elif spec.fast is False:
        assert True not in took, f"{case}: the fast path took it"


def _compare(fast: Side, plain: Side, build: Callable[[Side], list[bytes]], requests: int) -> None:
    plain_got = _exchange(plain, build(plain), requests)
    fast_got = _exchange(fast, build(fast), requests)
    _same(fast_got, plain_got, repr(build(plain)[:1])[:300])


@pytest.mark.parametrize(
    ("options", "statuses"),
    [
        ({"rate_per_second": 0.001, "rate_burst": 2}, [202, 202, 429, 429]),
        ({"max_backlog": 1}, [202, 503, 503]),
    ],
    ids=["rate limited", "backlog full"],
)
def test_admission_refusals_are_answered_alike_on_both_paths(
    redis_server: RedisServer, options: dict[str, Any], statuses: list[int]
) -> None:
    with _pair(redis_server, **options) as (fast, plain):
        build = functools.partial(_kept_alive, count=len(statuses), auth="token")
        plain_got = _exchange(plain, build(plain), len(statuses))
        fast_got = _exchange(fast, build(fast), len(statuses))
        _same(fast_got, plain_got, str(options))
        assert [status for status, _, _ in plain_got.answers] == statuses
        assert fast.taken
        assert all(fast.taken)


def test_a_redis_that_is_not_there_is_a_503_on_both_paths(redis_server: RedisServer) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    with _pair(redis_server, nowhere) as (fast, plain):
        for auth in ("token", "key"):
            build = functools.partial(_kept_alive, count=2, auth=auth)
            plain_got = _exchange(plain, build(plain), 2)
            fast_got = _exchange(fast, build(fast), 2)
            _same(fast_got, plain_got, auth)
            assert [status for status, _, _ in plain_got.answers] == [503, 503]
        assert True in fast.taken  # the token's requests; the key cannot be checked


def test_a_redis_that_drops_the_command_is_a_504_on_both_paths(redis_server: RedisServer) -> None:
    """The connection breaks after the script was sent: it may have run (outcome unknown)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def swallow() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                conn.recv(65536)
                conn.close()

    threading.Thread(target=swallow, daemon=True).start()
    dropping = f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    try:
        with _pair(redis_server, dropping) as (fast, plain):
            build = functools.partial(_kept_alive, count=2, auth="token")
            plain_got = _exchange(plain, build(plain), 2)
            fast_got = _exchange(fast, build(fast), 2)
            _same(fast_got, plain_got, "dropped")
            assert [status for status, _, _ in plain_got.answers] == [504, 504]
            assert fast.taken == [True, True]
    finally:
        listener.close()


# -- generated requests ---------------------------------------------------------------

_PATHS = ["/v1/alerts", "/api/v2/alerts", "/v1/integrations/alertmanager", "/v2/enqueue", "/v1/x"]
_BODIES = [ALERT, AM_ALERTS, WEBHOOK, PAGERDUTY, b"[" + ALERT + b"," + ALERT + b"]", b"{", b""]
_NAMES = ["X-Note", "Accept", "User-Agent", "Idempotency-Key", "traceparent", "Connection",
          "Expect", "Authorization", "Content-Length"]  # fmt: skip
_VALUE = st.text(st.characters(min_codepoint=0x09, max_codepoint=0xFF), max_size=12)


@st.composite
def _generated(draw: st.DrawFn) -> tuple[Callable[[Side], list[bytes]], int]:
    path = draw(st.sampled_from(_PATHS))
    body = draw(st.sampled_from(_BODIES))
    auth = draw(st.sampled_from(["key", "key", "token", "basic", "bad", "none"]))
    spell: Callable[[str], str] = draw(st.sampled_from([str, str.lower, str.upper]))
    space = draw(st.sampled_from(["", " ", "  ", "\t"]))
    extra = draw(st.lists(st.tuples(st.sampled_from(_NAMES), _VALUE), max_size=3))
    length = draw(st.sampled_from(["right"] * 8 + ["short", "long", "none", "zero"]))
    version = draw(st.sampled_from(["HTTP/1.1"] * 8 + ["HTTP/1.0"]))
    split = draw(st.sampled_from(["whole"] * 5 + ["head", "body", "pipelined", "behind"]))
    cut = draw(st.integers(min_value=1, max_value=200))
    nonce = uuid.uuid4().hex[:8]

    def one(side: Side) -> bytes:
        sized = body.replace(b"{key}", side.key.encode())
        declared = {"right": len(sized), "short": max(0, len(sized) - 2),
                    "long": len(sized) + 2, "zero": 0, "none": None}[length]  # fmt: skip
        lines = [f"POST {path} {version}", spell("Host") + ":" + space + "127.0.0.1"]
        credential = _credential(side, auth)
        if credential:
            lines.append(spell("Authorization") + ":" + space + credential)
        if declared is not None:
            lines.append(spell("Content-Length") + ":" + space + str(declared))
        for name, value in extra:
            if name == "Idempotency-Key":
                value = nonce + value  # the same key in two examples would be a replay
            lines.append(spell(name) + ":" + space + value)
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + sized

    def build(side: Side) -> list[bytes]:
        data = one(side)
        at = min(cut, len(data) - 1)
        return {
            "whole": [data],
            "head": [data[:at], PAUSE, data[at:]],
            "body": [data[:-1], PAUSE, data[-1:]],
            "pipelined": [data + data],
            "behind": [data, data],
        }[split]

    return build, 2 if split in ("pipelined", "behind") else 1


@settings(max_examples=25, suppress_health_check=list(HealthCheck))
@given(case=_generated())
def test_generated_requests_get_the_same_answers_on_both_paths(
    pair: tuple[Side, Side], case: tuple[Callable[[Side], list[bytes]], int]
) -> None:
    fast, plain = pair
    build, requests = case
    _compare(fast, plain, build, requests)


def test_an_idle_connection_closes_after_the_keep_alive_timeout_on_both_paths(
    redis_server: RedisServer,
) -> None:
    """Kept open while requests keep coming (each under the timeout apart, longer in
    all), closed once idle for the timeout: the fast path's lazily re-armed timer too."""
    keepalive = 1.0

    def answered_then_closed_when_idle(side: Side) -> int:
        answers = 0
        with socket.create_connection(("127.0.0.1", side.port), timeout=30) as conn:
            for turn in range(6):
                if turn:
                    time.sleep(keepalive / 4)
                # Before the server's idle timer starts (once it has answered), however
                # late this thread reads the answer.
                idle_from = time.monotonic()
                conn.sendall(request(side, auth="token"))
                data = b""
                while len(_parse(data)) == 0:
                    chunk = conn.recv(65536)
                    assert chunk, f"{side.name}: closed while requests kept coming"
                    data += chunk
                answers += 1
            assert conn.recv(65536) == b"", f"{side.name}: not closed when idle"
            assert time.monotonic() - idle_from >= keepalive * 0.9, side.name
        return answers

    with _pair(redis_server, http_keepalive_timeout=keepalive) as (fast, plain):
        # The two sides at once: each has its own server and timer, and the test waits
        # on their clocks, not on the CPU.
        with ThreadPoolExecutor(2) as pool:
            assert list(pool.map(answered_then_closed_when_idle, (fast, plain))) == [6, 6]
        assert fast.taken.count(True) == 6


def test_an_error_after_admission_is_a_500_that_closes_on_both_paths(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As uvicorn answers an application that raises: 500, then the connection closes."""

    def broken(*args: Any) -> Any:
        raise RuntimeError("a defect in reading the admission script's reply")

    with _pair(redis_server) as (fast, plain):
        monkeypatch.setattr(AcceptPipeline, "settle", broken)
        build = functools.partial(_kept_alive, count=2, auth="token")
        plain_got = _exchange(plain, build(plain), 2)
        fast_got = _exchange(fast, build(fast), 2)
        _same(fast_got, plain_got, "500")
        assert [status for status, _, _ in plain_got.answers] == [500]
        assert plain_got.closed
        assert fast.taken == [True]


def test_every_alert_answered_on_the_fast_path_is_queued_once_under_concurrency(
    pair: tuple[Side, Side],
) -> None:
    """Eight connections, each sending one request and then two at once, in turn (the
    second held while the first waits for Redis, or read with it and left to uvicorn):
    every answer's alert id is queued, once."""
    fast, _ = pair
    taken = len(fast.taken)

    def client(index: int) -> list[str]:
        ids = []
        with socket.create_connection(("127.0.0.1", fast.port), timeout=30) as conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for turn in range(20):
                body = ALERT.replace(b"db-1", b"db-%d-%d" % (index, turn))
                conn.sendall(request(fast, body=body))
                if turn % 2:
                    conn.sendall(request(fast, body=body + b" "))
                data = b""
                while len(_parse(data)) < 1 + turn % 2:
                    chunk = conn.recv(65536)
                    assert chunk, "closed"
                    data += chunk
                for status, _, answer in _parse(data):
                    assert status == 202
                    ids += [accepted["id"] for accepted in json.loads(answer)["accepted"]]
        return ids

    with ThreadPoolExecutor(8) as pool:
        answered = [alert_id for ids in pool.map(client, range(8)) for alert_id in ids]
    assert fast.redis_url is not None
    queued = [
        alert["id"]
        for message in _queued(fast.redis_url)
        for alert in json.loads(message)["args"][0]
    ]
    assert len(answered) == 8 * 30
    assert sorted(queued) == sorted(answered)
    assert True in fast.taken[taken:]


def _slowed(delay: float) -> Callable[..., Any]:
    """`AcceptPipeline.send_admission` with Redis's reply handed on `delay` s late."""
    original = AcceptPipeline.send_admission

    def slow(self: AcceptPipeline, command: bytes, *, cached: bool = True) -> Any:
        loop = asyncio.get_running_loop()
        delayed = loop.create_future()
        reply = asyncio.ensure_future(original(self, command, cached=cached))

        def relay(done: asyncio.Future[Any]) -> None:
            def settle() -> None:
                failure = done.exception()
                if failure is not None:
                    delayed.set_exception(failure)
                else:
                    delayed.set_result(done.result())

            loop.call_later(delay, settle)

        reply.add_done_callback(relay)
        return delayed

    return slow


def _slowed_admission(delay: float, waiting: threading.Event) -> Callable[..., Any]:
    """`Admission.send` (what uvicorn's path awaits) with the reply `delay` s late;
    `waiting` is set while a reply is held back."""
    original = Admission.send

    async def slow(self: Admission, command: bytes, *, cached: bool = True) -> Any:
        result = await original(self, command, cached=cached)
        waiting.set()
        await asyncio.sleep(delay)
        return result

    return slow


def test_a_request_arriving_while_a_fast_one_waits_for_redis_is_held_and_answered_after_it(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis's reply is held back 200 ms (in this process) so that the second request
    surely arrives while the first waits: answers keep their order, both are queued."""
    with _pair(redis_server) as (fast, _):
        monkeypatch.setattr(AcceptPipeline, "send_admission", _slowed(0.2))
        with socket.create_connection(("127.0.0.1", fast.port), timeout=30) as conn:
            conn.sendall(request(fast, auth="token"))
            wait_until(lambda: fast.taken == [True], what="the first request on the fast path")
            second = ALERT.replace(b"db-1", b"db-2")
            conn.sendall(request(fast, body=second, auth="token"))
            data = b""
            while len(_parse(data)) < 2:
                chunk = conn.recv(65536)
                assert chunk, "closed"
                data += chunk
        answers = [json.loads(body)["accepted"][0]["id"] for _, _, body in _parse(data)]
        assert fast.redis_url is not None
        queued = [json.loads(m)["args"][0][0] for m in _queued(fast.redis_url)]
        assert [alert["id"] for alert in queued] == answers
        assert [alert["alert"]["labels"]["host"] for alert in queued] == ["db-1", "db-2"]
        assert fast.taken == [True, True]


def test_a_request_waiting_for_redis_at_shutdown_is_answered_then_closed_on_both_paths(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvicorn's graceful shutdown: what was admitted is answered (`connection: close`),
    then the connection closes; nothing is cut off unanswered."""
    with _pair(redis_server) as (fast, plain):
        waiting = threading.Event()
        monkeypatch.setattr(Admission, "send", _slowed_admission(2.0, waiting))
        got = {}
        for side in (fast, plain):
            waiting.clear()
            conn = socket.create_connection(("127.0.0.1", side.port), timeout=30)
            conn.sendall(request(side, auth="token"))
            assert waiting.wait(10), "the request never waited for Redis's (delayed) reply"
            assert side.server is not None
            side.server.should_exit = True
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
            conn.close()
            got[side.name] = [
                (status, headers.get("connection")) for status, headers, _ in _parse(data)
            ]
        assert got["fast"] == got["plain"] == [(202, ["close"])]
        assert fast.taken == [True]


# -- tracing on ---------------------------------------------------------------------

TRACESTATE = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
_REUSED_KEY = f"Idempotency-Key: {uuid.uuid4()}"
_REPLAYED_KEY = f"Idempotency-Key: {uuid.uuid4()}"


@dataclass
class TracedCase:
    """A case of the tracing-on pair, and whether the SERVER spans continue `TRACEPARENT`."""

    case: Case
    continues: bool


TRACED_CASES = {
    "no traceparent": TracedCase(Case(lambda s: [request(s)], fast=True), False),
    "a traceparent": TracedCase(
        Case(lambda s: [request(s, headers=(f"traceparent: {TRACEPARENT}",))], fast=True), True
    ),
    "a traceparent and a tracestate": TracedCase(
        Case(
            lambda s: [
                request(s, headers=(f"traceparent: {TRACEPARENT}", f"tracestate: {TRACESTATE}"))
            ],
            fast=True,
        ),
        True,
    ),
    "an invalid traceparent (a new trace)": TracedCase(
        Case(lambda s: [request(s, headers=("traceparent: 00-not-a-trace-01",))], fast=True),
        False,
    ),
    "a JWT, an Alertmanager push": TracedCase(
        Case(
            lambda s: [
                request(
                    s,
                    "/api/v2/alerts",
                    AM_ALERTS,
                    auth="token",
                    headers=(f"traceparent: {TRACEPARENT}",),
                )
            ],
            fast=True,
        ),
        True,
    ),
    "kept alive, the second a replay of the first's Idempotency-Key": TracedCase(
        Case(
            functools.partial(
                _kept_alive, count=2, headers=(f"traceparent: {TRACEPARENT}", _REPLAYED_KEY)
            ),
            requests=2,
            fast=True,
        ),
        True,
    ),
    "an Idempotency-Key reused with another body (refused at admission)": TracedCase(
        Case(_reused(_REUSED_KEY), requests=2, fast=True), False
    ),
    "an unknown API key (uvicorn's path on both)": TracedCase(
        Case(
            lambda s: [request(s, auth="bad", headers=(f"traceparent: {TRACEPARENT}",))], fast=False
        ),
        True,
    ),
}


@pytest.fixture(scope="module")
def traced_pair(module_redis_server: RedisServer) -> Iterator[tuple[Side, Side]]:
    """A fast and a plain server whose apps carry the tracing middleware (databases 3
    and 4); spans are recorded while a test holds `recorded_spans`."""
    with _pair(module_redis_server, traced=True, databases=(3, 4)) as (fast, plain):
        for side in (fast, plain):  # a first request verifies (and caches) each side's key
            assert _exchange(side, [request(side)], 1).answers[0][0] == 202
        yield fast, plain


@pytest.fixture
def recorded_spans(monkeypatch: pytest.MonkeyPatch) -> list[SpanRecord]:
    """Tracing on in this process, as `setup_tracing` turns it on, every ended span
    recorded here (in-process) rather than handed to the exporting child."""
    records: list[SpanRecord] = []
    monkeypatch.setattr(telemetry_setup, "_enabled", True)
    monkeypatch.setattr(
        trace, "_TRACER_PROVIDER", RecordingTracerProvider(records.append, sampler=ALWAYS_ON)
    )
    return records


def _traced_exchange(
    side: Side, records: list[SpanRecord], chunks: list[bytes], requests: int
) -> tuple[Exchange, list[Any]]:
    """`_exchange`, and the spans it recorded with the trace context it sent, comparably."""
    start = len(records)
    got = _exchange(side, chunks, requests)
    answered = sum(1 for status, _, _ in got.answers if status >= 200)

    def servers() -> bool:
        # Both paths end a request's SERVER span last, after its answer is written.
        return sum(1 for r in records[start:] if r[3] == SpanKind.SERVER.value) >= answered

    wait_until(servers, what=f"{side.name}: a SERVER span per answer")
    return got, _trace_view(records[start:], got.traceparents)


def _trace_view(records: list[SpanRecord], traceparents: list[str]) -> list[Any]:
    """The spans in start order, with their ids put aside: each one's trace (the incoming
    one or the n-th new one) and parent (the incoming span, or the k-th span here),
    then which span each answer's and queued message's traceparent names."""
    ordered = sorted(records, key=lambda r: (r[4], r[3] != SpanKind.SERVER.value))
    traces: dict[int, str] = {int(TRACEPARENT[3:35], 16): "incoming"}
    spans = {r[1][1]: index for index, r in enumerate(ordered)}
    view: list[Any] = []
    for name, context, parent, kind, start, end, attributes, status, events, *rest in ordered:
        trace_id, _, flags, state = context
        trace_label = traces.setdefault(trace_id, f"<trace {len(traces)}>")
        if parent is None:
            parent_label: Any = None
        elif parent[0] in spans:
            parent_label = ("span", spans[parent[0]], parent[1])
        elif parent == (int(TRACEPARENT[36:52], 16), True):
            parent_label = "the incoming span"
        else:
            parent_label = f"<an unknown parent {parent}>"
        kept_events = [
            (event, {k: v for k, v in values.items() if k != "exception.stacktrace"}, dropped)
            for event, _, values, dropped in events
        ]
        assert start <= end
        shown = (name, kind, sorted(attributes.items()), status, kept_events, rest)
        view.append((*shown, trace_label, parent_label, flags, state))
    by_context = {(f"{r[1][0]:032x}", f"{r[1][1]:016x}"): i for i, r in enumerate(ordered)}
    for value in traceparents:
        match = re.fullmatch(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})", value)
        found = by_context.get((match[1], match[2])) if match else None
        view.append(("carried", value if found is None else ("span", found, match and match[3])))
    return view


@pytest.mark.parametrize("case", list(TRACED_CASES))
def test_with_tracing_on_the_fast_path_records_the_spans_and_queues_the_trace_as_uvicorns_path(
    traced_pair: tuple[Side, Side], recorded_spans: list[SpanRecord], case: str
) -> None:
    fast, plain = traced_pair
    traced = TRACED_CASES[case]
    spec = traced.case
    plain_got, plain_spans = _traced_exchange(
        plain, recorded_spans, spec.build(plain), spec.requests
    )
    taken = len(fast.taken)
    fast_got, fast_spans = _traced_exchange(fast, recorded_spans, spec.build(fast), spec.requests)
    _same(fast_got, plain_got, case)
    assert fast_spans == plain_spans, case
    took = fast.taken[taken:]
    if spec.fast is True:
        assert took, f"{case}: the fast path took none of it"
        assert all(took), f"{case}: the fast path did not take every request"
    else:
        assert True not in took, f"{case}: the fast path took it"
    # What both paths record: per request a SERVER span (continuing the producer's trace
    # when it sent one) and, for an admitted one, its PRODUCER child named by the message.
    servers = [
        span for span in plain_spans if span[0] != "carried" and span[1] == SpanKind.SERVER.value
    ]
    assert len(servers) == len(plain_got.answers)
    for name, _, attributes, *_, trace_label, parent, _, _ in servers:
        assert name == "POST " + dict(attributes)["url.path"]
        assert (trace_label, parent) == (
            ("incoming", "the incoming span") if traced.continues else (trace_label, None)
        )
    carried = [span[1] for span in plain_spans if span[0] == "carried"]
    assert len(carried) >= len(plain_got.queued)  # each queued message's, and answers'
    assert all(isinstance(found, tuple) for found in carried), carried
    for _, index, _ in carried:
        assert plain_spans[index][:2] == (f"send {queues.ALERTS_QUEUE}", SpanKind.PRODUCER.value)


def test_with_tracing_on_an_error_after_admission_is_recorded_alike_on_both_paths(
    traced_pair: tuple[Side, Side],
    recorded_spans: list[SpanRecord],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The 500 uvicorn answers for an application that raises: the error is on the
    PRODUCER span it escaped and on the SERVER span, which has no status code."""

    def broken(*args: Any) -> Any:
        raise RuntimeError("a defect in reading the admission script's reply")

    fast, plain = traced_pair
    monkeypatch.setattr(AcceptPipeline, "settle", broken)
    build = functools.partial(
        _kept_alive, count=2, auth="token", headers=(f"traceparent: {TRACEPARENT}",)
    )
    taken = len(fast.taken)
    plain_got, plain_spans = _traced_exchange(plain, recorded_spans, build(plain), 1)
    fast_got, fast_spans = _traced_exchange(fast, recorded_spans, build(fast), 1)
    _same(fast_got, plain_got, "500")
    assert fast_spans == plain_spans
    assert fast.taken[taken:] == [True]
    assert [status for status, _, _ in plain_got.answers] == [500]
    by_kind = {span[1]: span for span in plain_spans if span[0] != "carried"}
    server, producer = by_kind[SpanKind.SERVER.value], by_kind[SpanKind.PRODUCER.value]
    assert server[3] == (StatusCode.ERROR.value, "RuntimeError")
    assert "http.response.status_code" not in dict(server[2])
    assert producer[3][0] == StatusCode.ERROR.value
    assert [event[0] for event in server[4]] == [event[0] for event in producer[4]] == ["exception"]
