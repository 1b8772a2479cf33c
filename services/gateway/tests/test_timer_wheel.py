"""The shared timer wheel: its bookkeeping as pure logic against a plain clock, checked
against a model (a sorted list of deadlines), then its asyncio driver on a real loop."""

from __future__ import annotations

import asyncio
import gc
import random

from tocsin.gateway.wheel import Deadlines, TimerWheel


def test_a_deadline_is_due_at_the_end_of_its_slot_never_before() -> None:
    wheel: TimerWheel[str] = TimerWheel(0.1)
    wheel.set("a", 1.04)
    assert wheel.expire(1.04) == []
    assert wheel.expire(1.0999) == []
    assert wheel.expire(1.1) == [("a", 11)]
    assert "a" not in wheel
    assert wheel.expire(5.0) == []


def test_setting_again_moves_the_deadline_and_cancel_drops_it() -> None:
    wheel: TimerWheel[str] = TimerWheel(1.0)
    wheel.set("ping", 3.0)
    wheel.set("ping", 10.0)
    wheel.set("close", 4.0)
    wheel.cancel("close")
    wheel.cancel("never-set")
    assert len(wheel) == 1
    assert wheel.next_slot() == 10
    assert wheel.expire(9.0) == []
    assert wheel.expire(10.0) == [("ping", 10)]
    assert wheel.next_slot() is None


def test_owners_due_in_one_call_come_earliest_slot_first() -> None:
    wheel: TimerWheel[int] = TimerWheel(1.0)
    for owner, when in enumerate((5.0, 2.0, 4.0, 2.5)):
        wheel.set(owner, when)
    assert wheel.expire(5.0) == [(1, 2), (3, 3), (2, 4), (0, 5)]


def test_the_wheel_agrees_with_a_sorted_model_under_random_operations() -> None:
    rng = random.Random(20261130)
    resolution = 0.25
    wheel: TimerWheel[int] = TimerWheel(resolution)
    model: dict[int, float] = {}
    now = 0.0
    for _ in range(20_000):
        action = rng.random()
        owner = rng.randrange(200)
        if action < 0.5:
            when = now + rng.uniform(0, 5)
            wheel.set(owner, when)
            model[owner] = when
        elif action < 0.65:
            wheel.cancel(owner)
            model.pop(owner, None)
        else:
            now += rng.uniform(0, 0.5)
            fired = wheel.expire(now)
            # Due: every deadline whose slot ended by now; none of the others.
            expected = {o for o, when in model.items() if _slot_end(when, resolution) <= now}
            assert {o for o, _ in fired} == expected
            for o, slot in fired:
                assert slot * resolution >= model[o] - 1e-9, "fired before its deadline"
                assert slot * resolution - model[o] < resolution + 1e-9, "more than a slot late"
                del model[o]
            slots = [slot for _, slot in fired]
            assert slots == sorted(slots)
        assert len(wheel) == len(model)
        upcoming = wheel.next_slot()
        if model:
            assert upcoming == min(-int(-when // resolution) for when in model.values())
        else:
            assert upcoming is None


def _slot_end(when: float, resolution: float) -> float:
    return -(-when // resolution) * resolution


class Recorder:
    """An owner that notes when (loop time) and how late its deadline came."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.fired: list[tuple[float, float]] = []

    def expire(self, lateness: float) -> None:
        self.fired.append((self.loop.time(), lateness))


async def test_one_loop_timer_serves_every_owner_and_none_fires_early() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(0.05)
    owners = [Recorder(loop) for _ in range(1000)]
    asked = {}
    for n, owner in enumerate(owners):
        asked[owner] = loop.time() + 0.01 * (n % 20)
        deadlines.after(owner, 0.01 * (n % 20))
    # The loop's heap (a CPython asyncio detail) holds one timer for the wheel.
    handles = [h for h in getattr(loop, "_scheduled", []) if not h.cancelled()]
    ours = [h for h in handles if getattr(h, "_callback", None) == deadlines._tick]
    assert len(ours) == 1, "more than one loop timer for the wheel"
    for _ in range(100):
        if all(owner.fired for owner in owners):
            break
        await asyncio.sleep(0.02)
    for owner in owners:
        [(at, lateness)] = owner.fired
        assert at >= asked[owner] - 1e-3
        assert lateness >= 0
    assert len(deadlines) == 0


async def test_an_owner_that_rearms_itself_while_firing_fires_again_later() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(0.02)
    beats: list[float] = []

    class Heart:
        def expire(self, lateness: float) -> None:
            beats.append(loop.time())
            if len(beats) < 3:
                deadlines.after(self, 0.03)

    heart = Heart()
    deadlines.after(heart, 0.03)
    for _ in range(100):
        if len(beats) == 3:
            break
        await asyncio.sleep(0.01)
    assert len(beats) == 3
    assert beats[1] - beats[0] >= 0.03 - 1e-3
    assert beats[2] - beats[1] >= 0.03 - 1e-3
    assert heart not in deadlines


async def test_a_cancelled_deadline_never_fires_and_a_failing_owner_spares_the_rest() -> None:
    loop = asyncio.get_running_loop()
    errors: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    deadlines = Deadlines(0.02)

    class Broken:
        def expire(self, lateness: float) -> None:
            raise RuntimeError("broken owner")

    cancelled, kept = Recorder(loop), Recorder(loop)
    deadlines.after(Broken(), 0.01)
    deadlines.after(cancelled, 0.01)
    deadlines.after(kept, 0.01)
    deadlines.cancel(cancelled)
    await asyncio.sleep(0.2)
    assert kept.fired
    assert not cancelled.fired
    assert [type(e.get("exception")) for e in errors] == [RuntimeError]


async def test_a_late_loop_shows_in_the_lateness_owners_are_told() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(0.02)
    owner = Recorder(loop)
    deadlines.after(owner, 0.01)
    # The loop is held past the slot, as a stalled (or SIGSTOPped) gateway would be.
    started = loop.time()
    while loop.time() - started < 0.3:
        pass
    await asyncio.sleep(0.05)
    [(_, lateness)] = owner.fired
    assert lateness > 0.25


async def test_arming_and_rearming_deadlines_allocates_no_tracked_object_per_owner() -> None:
    sockets = 2000
    deadlines = Deadlines(0.1)
    owners = [Recorder(asyncio.get_running_loop()) for _ in range(sockets)]
    deadlines.after(owners[0], 30.0)  # the wheel's own loop timer, once
    gc.collect()
    before = len(gc.get_objects())
    for owner in owners:
        deadlines.after(owner, 30.0)
    for owner in owners:
        deadlines.after(owner, 10.0)  # a ping sent: the pong's deadline
    after = len(gc.get_objects())
    # Only the few slot dicts are new, however many owners there are.
    assert after - before < 10
    for owner in owners:
        deadlines.cancel(owner)


def test_setting_many_at_once_agrees_with_setting_each() -> None:
    rng = random.Random(7)
    one_by_one: TimerWheel[int] = TimerWheel(0.1)
    together: TimerWheel[int] = TimerWheel(0.1)
    for _ in range(50):
        base = rng.uniform(0, 100)
        delays = {rng.randrange(300): rng.choice((0.0, 0.05, 2.0, 10.0)) for _ in range(40)}
        for owner, delay in delays.items():
            one_by_one.set(owner, base + delay)
        together.set_all(base, delays)
        for owner in rng.sample(range(300), 5):
            one_by_one.cancel(owner)
            together.cancel(owner)
        assert len(one_by_one) == len(together)
        assert one_by_one.next_slot() == together.next_slot()
    assert one_by_one.expire(1e6) == together.expire(1e6)


async def test_a_deadline_rearmed_during_a_pass_and_cancelled_in_it_never_fires() -> None:
    deadlines = Deadlines(0.02)
    fired: list[str] = []

    class Pinger:
        def expire(self, lateness: float) -> None:
            fired.append("pinger")
            deadlines.after(self, 0.02)  # its pong's deadline, gathered till the pass ends

    class Closer:
        def expire(self, lateness: float) -> None:
            fired.append("closer")
            deadlines.cancel(pinger)  # the socket went meanwhile

    pinger, closer = Pinger(), Closer()
    deadlines.after(pinger, 0.0)
    deadlines.after(closer, 0.0)
    for _ in range(50):
        if len(fired) >= 2:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    assert sorted(fired) == ["closer", "pinger"]
    assert pinger not in deadlines
    assert len(deadlines) == 0
