"""Chaos: processors SIGKILLed while alerts flow; a killed processor's messages run again soon.

Outcome (docs: README, "Chaos suite"): every accepted alert is stored exactly
once (its record's count is 1), and the messages a killed processor held run
again on another processor within the dead-worker timeout (8 s) plus a beat.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.chaos.harness import Producer, Stack, Tally, long_chaos, settle, settle_stored
from tocsin.common import keys
from tocsin.common.queue import queue_keys

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("seconds", "kills"),
    [pytest.param(6, 2, id="short"), pytest.param(120, 20, id="long", marks=long_chaos)],
)
def test_processor_sigkill_loop_loses_and_doubles_nothing(
    stack: Stack, seconds: float, kills: int
) -> None:
    processor = stack.start("processor")
    ingest = stack.start("ingest")
    producer = Producer(ingest.url, stack.api_key())
    redis = stack.redis.client()
    with producer.in_background(seconds, rate=50):
        for _ in range(kills):
            time.sleep(seconds / (kills + 1))
            stack.restart(processor)
        last_kill = time.monotonic()
    settled = settle_stored(redis, producer, 60, "")
    tally = Tally.of_alerts(
        f"processor SIGKILL x{kills}", producer, redis,
        settle_seconds=max(settled, settled + last_kill - time.monotonic()),
    )  # fmt: skip
    tally.report()
    assert tally.accepted > 0
    tally.assert_clean()


def _held_by(redis: Any, pid: int) -> set[bytes]:
    """The alert messages processor `pid` has fetched and not acked: its workers are named
    in the heartbeats, so a poll reads their ack sets directly, quick enough to catch a
    batch that is held for a millisecond or two."""
    held: set[bytes] = set()
    for worker in redis.zrange(f"{keys.DRAMATIQ_NAMESPACE}:__heartbeats__", 0, -1):
        if f":{pid}:" in worker.decode():
            held |= redis.smembers(f"{keys.DRAMATIQ_NAMESPACE}:__acks__.{worker.decode()}.alerts")
    return held


@pytest.mark.parametrize(
    "rounds", [pytest.param(1, id="short"), pytest.param(5, id="long", marks=long_chaos)]
)
def test_killed_processors_messages_run_again_on_another_within_15_s(
    stack: Stack, rounds: int
) -> None:
    stack.start("processor", TOCSIN_BATCH_MAX_MESSAGES="5")  # the survivor
    ingest = stack.start("ingest")
    producer = Producer(ingest.url, stack.api_key())
    redis = stack.redis.client()
    names = queue_keys("alerts")
    rerun_after: list[float] = []
    for _ in range(rounds):
        victim = stack.start("processor", TOCSIN_BATCH_MAX_MESSAGES="5")
        held: set[bytes] = set()
        killed_at = deadline = time.monotonic() + 60
        # Alerts flow in bursts until the victim is caught holding fetched, unacked
        # messages, and it is killed then, mid-stream (the survivor takes its share of
        # every burst, so one may pass without catching the victim).
        while not held and time.monotonic() < deadline:
            with producer.in_background(4, rate=100) as sending:
                while not held and sending.is_alive():
                    held = _held_by(redis, victim.pid)
                if held:
                    stack.kill(victim)
                    killed_at = time.monotonic()
        assert held, "the victim never held a message: the scenario proved nothing"
        # Generous for a loaded machine; the figure printed is what counts (goal: 15 s).
        settle(
            lambda held=held: not any(redis.hexists(names.messages, i) for i in held),
            60,
            "the killed worker's messages applied",
        )
        rerun_after.append(time.monotonic() - killed_at)
    settled = settle_stored(redis, producer, 60, "")
    tally = Tally.of_alerts("processor killed holding messages", producer, redis,
                            settle_seconds=settled)  # fmt: skip
    tally.notes["rerun_within_s"] = f"{max(rerun_after):.1f}"
    tally.report()
    tally.assert_clean()
