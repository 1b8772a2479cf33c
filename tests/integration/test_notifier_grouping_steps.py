"""The grouping steps against a real server: each schedules what must follow it, once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from tests.integration.test_notifier_delivery import alert

from tocsin.client.devserver import RedisServer
from tocsin.common.queue import queue_keys
from tocsin.common.queue.due import DueTimes
from tocsin.notifier.grouping import Groups, GroupTimers, Handoff
from tocsin.notifier.message import GroupedAlert

TIMERS = GroupTimers(group_wait=30, group_interval=300)


Steps = tuple[redis.Redis, DueTimes, Groups]


@pytest.fixture
def steps(redis_server: RedisServer) -> Iterator[Steps]:
    """A client of the test's server, the notifications queue's due-times, the groups."""
    client = redis.Redis.from_url(redis_server.url)
    due = DueTimes(client, "notifications")
    yield client, due, Groups(client, due)
    client.close()


def due_ids(client: redis.Redis, due: DueTimes) -> set[bytes]:
    return set(client.zrange(due.keys.entries, 0, -1))


def test_adding_an_alert_and_scheduling_its_groups_flush_are_one_step(
    steps: Steps,
) -> None:
    client, due, groups = steps
    item = GroupedAlert(transition="firing", status="firing", alert=alert("A", "fp-a"), at=1.0)
    scheduled, _ = groups.add("g", item, TIMERS, Handoff("flush-1", b"{}"), 1.0)
    assert scheduled
    # A redelivered accept (the process died after the step) finds the flush scheduled.
    again, _ = groups.add("g", item, TIMERS, Handoff("flush-2", b"{}"), 1.0)
    assert not again
    assert due_ids(client, due) == {b"flush-1"}
    assert client.get("tocsin:notify:group:g:pending") == b"flush-1"


def test_a_redelivered_flush_hands_nothing_over_twice_and_starts_no_second_chain(
    steps: Steps,
) -> None:
    client, due, groups = steps
    item = GroupedAlert(transition="firing", status="firing", alert=alert("A", "fp-a"), at=1.0)
    groups.add("g", item, TIMERS, Handoff("flush-1", b"{}"), 1.0)
    client.delete(due.keys.entries, due.keys.messages)  # as if the mover took it
    snapshot = groups.read("g", "flush-1")
    assert snapshot.alerts["fp-a"].status == "firing"
    groups.commit(
        "g",
        send=Handoff("send-1", b"{}"),
        firing_hash="h1",
        now=2.0,
        forget={},
        timers=TIMERS,
        next_flush=Handoff("flush-2", b"{}"),
    )
    queue = queue_keys("notifications")
    assert client.lrange(queue.pending, 0, -1) == [b"send-1"]
    assert due_ids(client, due) == {b"flush-2"}
    # The same flush delivered again (its worker died after the commit): the mark now
    # belongs to flush-2, so the copy neither clears it nor schedules a third flush.
    groups.read("g", "flush-1")
    groups.commit(
        "g",
        send=None,
        firing_hash="h1",
        now=3.0,
        forget={},
        timers=TIMERS,
        next_flush=Handoff("flush-3", b"{}"),
    )
    assert due_ids(client, due) == {b"flush-2"}
    assert client.get("tocsin:notify:group:g:pending") == b"flush-2"
    assert client.lrange(queue.pending, 0, -1) == [b"send-1"]


def test_a_commit_that_redis_runs_twice_leaves_a_new_group_under_its_key_alone(
    steps: Steps,
) -> None:
    # Redis frozen past the client's socket timeout: redis-py sends the commit again and
    # Redis runs both after the thaw, with other replicas' steps between them. The first
    # run forgot the group's last alert and removed it; another alert then started a new
    # group under the key. The second run must not mark that group notified (its first
    # page would wait group_interval instead of group_wait) nor hand the send over again.
    client, _, groups = steps
    resolved = GroupedAlert(
        transition="resolved", status="resolved", alert=alert("A", "fp-a"), at=1.0
    )
    groups.add("g", resolved, TIMERS, Handoff("flush-1", b"{}"), 1.0)
    snapshot = groups.read("g", "flush-1")

    def commit() -> int:
        return groups.commit(
            "g",
            send=Handoff("send-1", b"{}"),
            firing_hash="h1",
            now=2.0,
            forget={"fp-a": snapshot.raw["fp-a"]},
            timers=TIMERS,
            next_flush=Handoff("flush-2", b"{}"),
        )

    assert commit() == 0
    assert not client.exists("tocsin:notify:group:g")
    firing = GroupedAlert(transition="firing", status="firing", alert=alert("B", "fp-b"), at=3.0)
    groups.add("g", firing, TIMERS, Handoff("flush-9", b"{}"), 3.0)
    assert commit() == 1  # the second run: the new group's one alert, untouched
    assert groups.read("g", "flush-9").state.seq == 0
    assert not client.hexists("tocsin:notify:group:g", "last_sent_at")
    assert client.lrange(queue_keys("notifications").pending, 0, -1) == [b"send-1"]
