"""Chaos scenarios of the notifier: a crash inside accept, flush or send, a Redis SIGKILL,
receivers that hang, are slow, or are away for a while.

Each scenario runs real processes (the harness's Redis with AOF on, the notifier, real HTTP
receivers), injects its fault, waits for things to settle and prints the harness's tally. The
short form runs in `make test`; under `make chaos` (`TOCSIN_CHAOS=long`) the same scenarios
run at the issue's scale.

Notifications are enqueued directly, as the processor hands them over, so `stored` counts
the accepted transitions. Every alert is its own group: each accepted alert owes exactly one
firing notification, and a second one is a duplicate.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.exceptions import RedisError

from tests.chaos.harness import LONG, ChaosRedis, Stack, Tally, settle
from tests.integration.test_notifier_delivery import Enqueuer, Receiver, alert, routes_file
from tests.support import metric

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver().start()
    yield started
    started.stop()


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


def settle_pages(
    tally: Tally,
    receiver: Receiver,
    timeout: float,
    what: str,
    *,
    since: float | None = None,
    quiet: float = 1.0,
) -> None:
    """Wait until every accepted alert's page reached `receiver`, set the settle time
    (from `since`, default now), leave `quiet` s for a repeat to show up, then count."""
    started = time.monotonic() if since is None else since
    settle(lambda: len(firing_fingerprints(receiver)) >= tally.accepted, timeout, what)
    tally.settle_seconds = time.monotonic() - started
    time.sleep(quiet)
    count_arrivals(tally, receiver)


def count_arrivals(tally: Tally, receiver: Receiver) -> None:
    seen = firing_fingerprints(receiver)
    tally.stored = tally.accepted
    tally.delivered = len(seen)
    tally.lost = tally.accepted - len(seen)
    tally.duplicated = sum(seen.values()) - len(seen)


def one_group_per_alert(
    receiver: Receiver, tmp_path: Path, group_wait: str = "200ms", timeout: int = 2
) -> str:
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
  - {{name: hook, type: webhook, url: "{receiver.url}", timeout_seconds: {timeout}}}
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
    # A killed worker's fetched messages come back after a second of silence.
    "TOCSIN_QUEUE_HEARTBEAT_TIMEOUT_MS": "1000",
}


@pytest.mark.parametrize("crash_point", ["accept", "flush", "send"])
def test_notifier_killed_inside_accept_flush_or_send_loses_no_page(
    chaos_redis: ChaosRedis,
    stack: Stack,
    receiver: Receiver,
    tmp_path: Path,
    crash_point: str,
) -> None:
    tally = Tally(f"notifier/killed-inside-{crash_point}", sent=20 if LONG else 5)
    routes = one_group_per_alert(receiver, tmp_path)
    crashing = stack.start(
        "notifier", TOCSIN_ROUTES_FILE=routes, TOCSIN_TEST_CRASH_AT=crash_point, **FAST
    )
    tally.accepted = send_alerts(Enqueuer(chaos_redis.url), tally.sent, crash_point)
    # The process dies the first time it reaches the crash point (the state written by the
    # step before it is in Redis, the message that got there is unacknowledged; at
    # "send", its guard is scheduled and the send not yet handed over).
    assert crashing.process is not None
    assert crashing.process.wait(timeout=30) == 137
    stack.start("notifier", TOCSIN_ROUTES_FILE=routes, **FAST)
    settle_pages(tally, receiver, 60, "every alert's page after the restart")
    tally.report()
    tally.assert_clean()


def test_notifier_killed_while_claimed_sends_wait_for_a_slot_sends_each_once(
    chaos_redis: ChaosRedis, stack: Stack, receiver: Receiver, tmp_path: Path
) -> None:
    """The send step claims a send (and schedules its guard) before handing it over, so
    sends waiting on the loop for a slot hold their claims: killed there, each is sent
    once by its guard after its lease; only the one on the wire may repeat (same id)."""
    tally = Tally("notifier/killed-while-sends-wait", sent=6 if LONG else 3)
    # Waiters give up their wait for the slot 2 s before the send could no longer settle
    # within its lease: with a lease of 15 s and a timeout of 8 s, 5 s in which to see
    # every send waiting (and the guards after a kill run 15 s later, within the 20 s goal).
    routes = one_group_per_alert(receiver, tmp_path, timeout=8)
    lease = {"TOCSIN_CLAIM_LEASE_SECONDS": "15"}
    # One slot: the first send is held on the wire, the others wait for the slot.
    receiver.hold = 30.0
    doomed = stack.start(
        "notifier", TOCSIN_ROUTES_FILE=routes, TOCSIN_RECEIVER_CONCURRENCY="1", **lease, **FAST
    )
    tally.accepted = send_alerts(Enqueuer(chaos_redis.url), tally.sent, "waiting")
    client = chaos_redis.client()

    def claims_sending() -> int:
        values = [client.get(key) for key in client.scan_iter("tocsin:notify:claim:*")]
        return sum(1 for value in values if value and value.startswith(b"sending|"))

    settle(
        lambda: len(receiver.arrivals) == 1 and claims_sending() == tally.accepted,
        30,
        "one send on the wire and every other one claimed, waiting for the slot",
    )
    stack.kill(doomed)
    killed_at = time.monotonic()
    receiver.hold = 0.0
    stack.start("notifier", TOCSIN_ROUTES_FILE=routes, **lease, **FAST)
    settle_pages(tally, receiver, 60, "every alert's page after the restart", since=killed_at)
    with receiver.lock:
        first, *later = [arrival.json() for arrival in receiver.arrivals]
    tally.report()
    assert tally.lost == 0
    # The send that was on the wire comes again with its notification id; no other repeats.
    repeats = [body for body in later if body["id"] == first["id"]]
    assert tally.duplicated == len(repeats) <= 1
    assert len({body["id"] for body in later}) == len(later)


def test_redis_sigkill_with_aof_during_notification_flow_strands_no_notification(
    chaos_redis: ChaosRedis, stack: Stack, receiver: Receiver, tmp_path: Path
) -> None:
    tally = Tally("notifier/redis-sigkill-aof", sent=50 if LONG else 20)
    outage = 5.0 if LONG else 1.0
    routes = one_group_per_alert(receiver, tmp_path, group_wait="1s")
    stack.start("notifier", TOCSIN_ROUTES_FILE=routes, **FAST)
    enqueue = Enqueuer(chaos_redis.url)
    results: list[int] = []
    producer = threading.Thread(
        target=lambda: results.append(send_alerts(enqueue, tally.sent, "aof", every=0.05))
    )
    producer.start()
    # Kill Redis while alerts are being accepted, grouped, flushed and sent.
    settle(lambda: len(receiver.arrivals) >= 2, 30, "the flow to start")
    chaos_redis.kill()
    time.sleep(outage)
    chaos_redis.restart()
    restarted = time.monotonic()
    producer.join(timeout=120)
    tally.accepted = results[0]
    settle_pages(tally, receiver, 90, "every accepted alert's notification", since=restarted)
    tally.report()
    # A send cut off by the kill may be repeated (same notification id): reported, allowed.
    assert tally.lost == 0, tally.report()


class SilentListener:
    """A receiver that hangs: it accepts TCP connections, reads what comes, never answers."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.connections: list[socket.socket] = []
        self.lock = threading.Lock()
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.getsockname()[1]}/hook"

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            with self.lock:
                self.connections.append(connection)
            threading.Thread(target=self._swallow, args=(connection,), daemon=True).start()

    def _swallow(self, connection: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while connection.recv(65536):
                pass

    def open_connections(self) -> int:
        """Connections accepted whose client has not hung up."""
        with self.lock:
            alive = 0
            for connection in self.connections:
                try:
                    alive += connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
                except BlockingIOError:
                    alive += 1
                except OSError:
                    pass
            return alive

    def close(self) -> None:
        self.closed.set()
        # Shut down, not only closed: a thread blocked in `accept` or `recv` keeps its socket
        # open, and the notifier's sends would wait out their timeout (8 s) at its stop.
        with self.lock:
            for sock in (self.server, *self.connections):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


def test_a_hanging_receiver_holds_no_worker_thread_and_does_not_delay_a_healthy_one(
    chaos_redis: ChaosRedis, stack: Stack, receiver: Receiver, tmp_path: Path
) -> None:
    tally = Tally("notifier/hanging-receiver", sent=40 if LONG else 12)
    hanging = SilentListener()
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
  - {{name: hanging, type: slack, url: "{hanging.url}", timeout_seconds: 30}}
""",
        )
        # Short form: one worker thread for the whole process, so a send that held a
        # thread while its receiver hangs would leave none for the healthy receiver's
        # pages. Long form: the default 8, where the healthy latency is the figure (one
        # thread would also do all 80 groups' accepts and flushes on its own).
        threads = 8 if LONG else 1
        notifier = stack.start(
            "notifier",
            TOCSIN_ROUTES_FILE=routes,
            TOCSIN_SEND_THREADS=str(threads),
            TOCSIN_RECEIVER_CONCURRENCY="4",
            **FAST,
        )
        enqueue = Enqueuer(chaos_redis.url)
        started = time.monotonic()
        tally.accepted = send_alerts(enqueue, tally.sent, "hang")
        healthy = latencies(receiver, tally.accepted, timeout=60)
        tally.settle_seconds = time.monotonic() - started
        # Every healthy page arrived before a single send to the hanging receiver had
        # even timed out (30 s): none of them waited behind it.
        timed_out = metric(notifier.url, "tocsin_notifier_failed_total", receiver_type="slack")
        hanging_open = metric(notifier.url, "tocsin_notifier_sends_open", receiver_type="slack")
        held_connections = hanging.open_connections()
        count_arrivals(tally, receiver)
        tally.notes["healthy_p50_s"] = f"{healthy[len(healthy) // 2]:.2f}"
        tally.notes["healthy_max_s"] = f"{healthy[-1]:.2f}"  # its group_wait is 1 s
        tally.notes["hanging_sends_open"] = int(hanging_open)
        tally.notes["hanging_connections"] = held_connections
        tally.notes["worker_threads"] = threads
        tally.report()
        tally.assert_clean()
        assert timed_out == 0
        # The hanging receiver was tried and holds its own slots, never more than its
        # concurrency, while the process's only worker thread served the healthy one.
        assert 1 <= hanging_open <= 4
        assert 1 <= held_connections <= 4
    finally:
        hanging.close()


def test_a_slow_receiver_that_answers_within_its_timeout_gets_every_page_once(
    chaos_redis: ChaosRedis, stack: Stack, tmp_path: Path
) -> None:
    tally = Tally("notifier/slow-receiver", sent=30 if LONG else 10)
    # Each answer takes 1 s, its timeout is 4 s, and only 2 sends may be open at once:
    # most sends wait for a slot, some longer than the slot wait (then they come back).
    slow = Receiver(hold=1.0).start()
    try:
        routes = routes_file(
            tmp_path,
            f"""
route:
  receiver: slow
  group_by: [alertname]
  group_wait: 200ms
  group_interval: 1h
  repeat_interval: 4h
receivers:
  - {{name: slow, type: webhook, url: "{slow.url}", timeout_seconds: 4}}
""",
        )
        notifier = stack.start(
            "notifier", TOCSIN_ROUTES_FILE=routes, TOCSIN_RECEIVER_CONCURRENCY="2", **FAST
        )
        started = time.monotonic()
        tally.accepted = send_alerts(Enqueuer(chaos_redis.url), tally.sent, "slow")
        settle_pages(tally, slow, 120, "every page to the slow receiver", since=started, quiet=1.5)
        tally.notes["put_back_busy"] = int(
            metric(notifier.url, "tocsin_notifier_receiver_busy_total")
        )
        tally.report()
        tally.assert_clean()
        assert metric(notifier.url, "tocsin_notifier_failed_total") == 0
        assert metric(notifier.url, "tocsin_notifier_dead_lettered_total") == 0
    finally:
        slow.stop()


def test_a_receiver_outage_shorter_than_the_retry_budget_loses_nothing(
    chaos_redis: ChaosRedis, stack: Stack, receiver: Receiver, tmp_path: Path
) -> None:
    tally = Tally("notifier/receiver-outage", sent=50 if LONG else 10)
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
    notifier = stack.start("notifier", TOCSIN_ROUTES_FILE=routes, **FAST, **backoff)
    tally.accepted = send_alerts(Enqueuer(chaos_redis.url), tally.sent, "outage")
    time.sleep(outage)
    with receiver.lock:
        receiver.answers.clear()
        refused = len(receiver.arrivals)
        receiver.arrivals.clear()
    settle_pages(
        tally, receiver, 120 if LONG else 60, "every notification once the receiver is back"
    )
    tally.notes["outage_s"] = f"{outage:g}"
    tally.notes["refused_attempts"] = refused
    tally.report()
    tally.assert_clean()
    assert metric(notifier.url, "tocsin_notifier_dead_lettered_total") == 0
