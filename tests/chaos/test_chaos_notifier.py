"""Chaos scenarios of the notifier: a crash inside accept, a Redis SIGKILL, receivers that hang
or are away for a while.

Each scenario runs real processes (a Redis-compatible server with AOF on, the notifier, real
HTTP receivers), injects its fault, waits for things to settle and prints sent / accepted /
delivered / lost / duplicated / time to settle. The short version runs in `make test`;
`TOCSIN_CHAOS_LONG=1` (`make chaos`) runs the long one, at the issue's scale.

Every alert is its own group, so each accepted alert owes exactly one firing notification.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import RedisError
from tests.integration.test_notifier_delivery import Enqueuer, Receiver, alert, routes_file
from tests.support import metric, wait_until

from tocsin.common.server import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

LONG = os.environ.get("TOCSIN_CHAOS_LONG") == "1"


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """The Redis of these scenarios keeps an append-only file, as production does."""
    with RedisServer(appendonly=True) as server:
        yield server


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver().start()
    yield started
    started.stop()


@dataclass
class Tally:
    """What a scenario sent and what arrived, printed in the chaos suite's one format."""

    scenario: str
    sent: int = 0
    accepted: int = 0
    delivered: int = 0
    duplicated: int = 0
    settle: float = 0.0

    @property
    def lost(self) -> int:
        return self.accepted - self.delivered

    def report(self) -> None:
        print(
            f"\nchaos notifier/{self.scenario}: sent={self.sent} accepted={self.accepted} "
            f"delivered={self.delivered} lost={self.lost} duplicated={self.duplicated} "
            f"settle={self.settle:.1f}s"
        )


def firing_fingerprints(receiver: Receiver) -> Counter[str]:
    """How many notifications reached `receiver` for each alert."""
    with receiver.lock:
        bodies = [arrival.json() for arrival in receiver.arrivals]
    return Counter(a["alert"]["fingerprint"] for body in bodies for a in body["alerts"])


def latencies(receiver: Receiver, count: int, timeout: float) -> list[float]:
    """Wait for `count` alerts' notifications; each one's seconds from enqueue to arrival
    (seen by polling every 20 ms, so within that of the truth)."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < count:
        assert time.monotonic() < deadline, f"{len(seen)} of {count} notifications arrived"
        with receiver.lock:
            bodies = [arrival.json() for arrival in receiver.arrivals]
        now = time.time()
        for body in bodies:
            for item in body["alerts"]:
                seen.setdefault(item["alert"]["fingerprint"], now - body["enqueued_at"])
        time.sleep(0.02)
    return sorted(seen.values())


def count_arrivals(tally: Tally, receiver: Receiver) -> None:
    seen = firing_fingerprints(receiver)
    tally.delivered = len(seen)
    tally.duplicated = sum(seen.values()) - len(seen)


def one_group_per_alert(receiver: Receiver, tmp_path: Path, group_wait: str = "200ms") -> str:
    return routes_file(
        tmp_path,
        f"""
route:
  receiver: hook
  group_by: [alertname]
  group_wait: {group_wait}
  group_interval: 1h
  repeat_interval: 4h
receivers:
  - {{name: hook, type: webhook, url: "{receiver.url}", timeout_seconds: 2}}
""",
    )


def send_alerts(enqueue: Enqueuer, count: int, prefix: str, every: float = 0.0) -> int:
    """Enqueue `count` firing alerts like a producer that retries until each is accepted."""
    accepted = 0
    for n in range(count):
        deadline = time.monotonic() + 60
        while True:
            try:
                enqueue.transition(alert(f"{prefix}{n}", f"fp-{prefix}{n}"))
                accepted += 1
                break
            except RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        time.sleep(every)
    return accepted


FAST = {
    "TOCSIN_ROUTES_POLL_SECONDS": "0.2",
    "TOCSIN_IDLE_POLL_MS": "10",
    # A killed worker's fetched messages come back after a second of silence.
    "TOCSIN_HEARTBEAT_TIMEOUT_MS": "1000",
}


@pytest.mark.parametrize("crash_point", ["accept", "flush"])
def test_notifier_killed_inside_accept_or_flush_loses_no_page(
    redis_server: RedisServer,
    start_service: Any,
    receiver: Receiver,
    tmp_path: Path,
    crash_point: str,
) -> None:
    tally = Tally(f"killed-inside-{crash_point}", sent=20 if LONG else 5)
    routes = one_group_per_alert(receiver, tmp_path)
    crashing = start_service(
        "notifier", TOCSIN_ROUTES_FILE=routes, TOCSIN_TEST_CRASH_AT=crash_point, **FAST
    )
    tally.accepted = send_alerts(Enqueuer(redis_server.url), tally.sent, crash_point)
    # The process dies the first time it reaches the crash point (the state written by the
    # step before it is in Redis, the message that got there is unacknowledged).
    assert crashing.process.wait(timeout=30) == 137
    restarted = time.monotonic()
    start_service("notifier", TOCSIN_ROUTES_FILE=routes, **FAST)
    wait_until(
        lambda: len(firing_fingerprints(receiver)) == tally.accepted,
        timeout=60,
        what="every alert's page after the restart",
    )
    tally.settle = time.monotonic() - restarted
    time.sleep(1.0)  # room for a duplicate to show up
    count_arrivals(tally, receiver)
    tally.report()
    assert tally.lost == 0
    assert tally.duplicated == 0


def test_redis_sigkill_with_aof_during_notification_flow_strands_no_notification(
    redis_server: RedisServer, start_service: Any, receiver: Receiver, tmp_path: Path
) -> None:
    tally = Tally("redis-sigkill-aof", sent=50 if LONG else 20)
    outage = 5.0 if LONG else 1.0
    routes = one_group_per_alert(receiver, tmp_path, group_wait="1s")
    start_service("notifier", TOCSIN_ROUTES_FILE=routes, **FAST)
    enqueue = Enqueuer(redis_server.url)
    results: list[int] = []
    producer = threading.Thread(
        target=lambda: results.append(send_alerts(enqueue, tally.sent, "aof", every=0.05))
    )
    producer.start()
    # Kill Redis while alerts are being accepted, grouped, flushed and sent.
    wait_until(lambda: len(receiver.arrivals) >= 2, timeout=30, what="the flow to start")
    redis_server.kill()
    time.sleep(outage)
    redis_server.start()
    restarted = time.monotonic()
    producer.join(timeout=120)
    tally.accepted = results[0]
    wait_until(
        lambda: len(firing_fingerprints(receiver)) >= tally.accepted,
        timeout=90,
        what="every accepted alert's notification",
    )
    tally.settle = time.monotonic() - restarted
    time.sleep(1.0)
    count_arrivals(tally, receiver)
    tally.report()
    assert tally.lost == 0


def test_a_hanging_receiver_does_not_delay_a_healthy_one(
    redis_server: RedisServer, start_service: Any, receiver: Receiver, tmp_path: Path
) -> None:
    tally = Tally("hanging-receiver", sent=40 if LONG else 12)
    # It answers nothing for longer than the send timeout: each send to it times out.
    hanging = Receiver(hold=60.0).start()
    try:
        routes = routes_file(
            tmp_path,
            f"""
route:
  receiver: healthy
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1h
  routes:
    - {{receiver: hanging, continue: true}}
    - {{receiver: healthy}}
receivers:
  - {{name: healthy, type: webhook, url: "{receiver.url}", timeout_seconds: 8}}
  - {{name: hanging, type: slack, url: "{hanging.url}", timeout_seconds: 8}}
""",
        )
        notifier = start_service("notifier", TOCSIN_ROUTES_FILE=routes, **FAST)
        enqueue = Enqueuer(redis_server.url)
        started = time.monotonic()
        tally.accepted = send_alerts(enqueue, tally.sent, "hang")
        healthy = latencies(receiver, tally.accepted, timeout=60)
        tally.settle = time.monotonic() - started
        # Every healthy page arrived before a single send to the hanging receiver had
        # even timed out: none of them waited behind it (with shared send threads they
        # queue behind the hanging sends until those time out).
        timed_out = metric(notifier.url, "tocsin_notifier_failed_total", receiver_type="slack")
        count_arrivals(tally, receiver)
        tally.report()
        print(
            f"  healthy latency, enqueue to arrival (group_wait 1s): "
            f"p50 {healthy[len(healthy) // 2]:.2f}s, max {healthy[-1]:.2f}s"
        )
        assert tally.lost == 0
        assert timed_out == 0
        assert len(hanging.arrivals) >= 1  # it was tried, and is still hanging
    finally:
        hanging.stop()


def test_a_receiver_outage_shorter_than_the_retry_budget_loses_nothing(
    redis_server: RedisServer, start_service: Any, receiver: Receiver, tmp_path: Path
) -> None:
    tally = Tally("receiver-outage", sent=50 if LONG else 10)
    outage = 70.0 if LONG else 4.0
    backoff = (
        {}  # the defaults: 0.5 s doubling to 30 s, a 15 min budget
        if LONG
        else {
            "TOCSIN_RETRY_MIN_BACKOFF_MS": "100",
            "TOCSIN_RETRY_MAX_BACKOFF_MS": "1000",
            "TOCSIN_RETRY_BUDGET_SECONDS": "30",
        }
    )
    with receiver.lock:
        receiver.answers.extend([503] * 100_000)
    routes = one_group_per_alert(receiver, tmp_path)
    notifier = start_service("notifier", TOCSIN_ROUTES_FILE=routes, **FAST, **backoff)
    tally.accepted = send_alerts(Enqueuer(redis_server.url), tally.sent, "outage")
    time.sleep(outage)
    with receiver.lock:
        receiver.answers.clear()
        refused = len(receiver.arrivals)
        receiver.arrivals.clear()
    back = time.monotonic()
    wait_until(
        lambda: len(firing_fingerprints(receiver)) == tally.accepted,
        timeout=120 if LONG else 60,
        what="every notification once the receiver is back",
    )
    tally.settle = time.monotonic() - back
    time.sleep(1.0)
    count_arrivals(tally, receiver)
    tally.report()
    print(f"  {refused} attempts refused during the {outage:g}s outage")
    assert tally.lost == 0
    assert tally.duplicated == 0
    assert metric(notifier.url, "tocsin_notifier_dead_lettered_total") == 0
