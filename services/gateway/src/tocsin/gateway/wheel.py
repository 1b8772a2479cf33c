"""One timer wheel for every socket of the process, instead of loop timers per socket.

Each socket used to hold one or two asyncio `TimerHandle`s for its whole life
(the next ping or the pong's deadline, the close's abort, the token lease): a
handle is a GC-tracked object with its own context and arguments, pushed on the
loop's heap at every re-arm, and young-generation collections that walked them
were 7-18 % of the CPU of a connect. Here a deadline is an entry in a dict: a
socket's deadline falls in a slot of `RESOLUTION` seconds, and the process has
one loop timer, armed for the earliest slot that holds anything. Nothing per
socket is allocated to arm, re-arm or cancel.

A deadline fires no earlier than asked and at most one slot later. The owner
learns how late the slot itself ran (`lateness`, without the rounding to the
slot): that is the loop's own delay, which the heartbeat forgives.

`TimerWheel` is the pure bookkeeping (slots of integer ticks, no clock, no
loop), `Deadlines` drives one on the running asyncio loop.
"""

from __future__ import annotations

import asyncio
import heapq
import threading
from typing import Generic, Protocol, TypeVar

__all__ = ["RESOLUTION", "Deadlines", "Due", "TimerWheel", "deadlines"]

# A slot's width: a deadline is late by at most this, far inside any heartbeat or
# close time, and the loop wakes for the wheel at most 1 / RESOLUTION times a second.
RESOLUTION = 0.1

Owner = TypeVar("Owner")


class TimerWheel(Generic[Owner]):
    """Owners' deadlines bucketed in slots of `resolution` seconds; one deadline per owner.

    Times are plain numbers on whatever clock the caller uses. A deadline at
    `when` belongs to the slot that ends at or after it, and is due once `now`
    reaches that slot's end.
    """

    __slots__ = ("_heap", "_slot_of", "_slots", "resolution")

    def __init__(self, resolution: float) -> None:
        self.resolution = resolution
        self._slots: dict[int, dict[Owner, None]] = {}
        self._slot_of: dict[Owner, int] = {}
        # Slot numbers that were filled, earliest first; a slot emptied by cancels
        # stays until it comes up (cheaper than removing it from the heap).
        self._heap: list[int] = []

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, owner: object) -> bool:
        return owner in self._slot_of

    def slot_time(self, slot: int) -> float:
        """When `slot` is due."""
        return slot * self.resolution

    def set(self, owner: Owner, when: float) -> int:
        """Give `owner` the deadline `when` (replacing the one it had); returns its slot."""
        slot = -int(-when // self.resolution)  # the slot that ends at or after `when`
        old = self._slot_of.get(owner)
        if old == slot:
            return slot
        if old is not None:
            del self._slots[old][owner]
        self._slot_of[owner] = slot
        entries = self._slots.get(slot)
        if entries is None:
            entries = self._slots[slot] = {}
            heapq.heappush(self._heap, slot)
        entries[owner] = None
        return slot

    def cancel(self, owner: Owner) -> None:
        """Drop `owner`'s deadline, if it has one."""
        slot = self._slot_of.pop(owner, None)
        if slot is not None:
            del self._slots[slot][owner]

    def next_slot(self) -> int | None:
        """The earliest slot that holds a deadline, or None when none is set."""
        heap, slots = self._heap, self._slots
        while heap:
            slot = heap[0]
            if slots[slot]:
                return slot
            heapq.heappop(heap)
            del slots[slot]
        return None

    def expire(self, now: float) -> list[tuple[Owner, int]]:
        """Take every deadline due at `now` off the wheel: (owner, its slot), earliest first."""
        return [(owner, slot) for slot, owners in self.expire_slots(now) for owner in owners]

    def expire_slots(self, now: float) -> list[tuple[int, dict[Owner, None]]]:
        """Take every slot due at `now` off the wheel: (slot, its owners), earliest first.

        A slot's owners come as the wheel held them (nothing built per owner): the
        driver's pass over thousands of heartbeats due at once stays a plain loop.
        """
        due: list[tuple[int, dict[Owner, None]]] = []
        heap, slots, slot_of = self._heap, self._slots, self._slot_of
        last = int(now // self.resolution)
        while heap and heap[0] <= last:
            slot = heapq.heappop(heap)
            owners = slots.pop(slot)
            if owners:
                for owner in owners:
                    del slot_of[owner]
                due.append((slot, owners))
        return due

    def set_all(self, base: float, delays: dict[Owner, float]) -> None:
        """`set(owner, base + delay)` for many owners at once (owner: delay).

        Owners asking the same delay (a heartbeat pass asks one for all of them)
        cost one slot computation between them, and nothing is built per owner.
        """
        slots, slot_of, resolution = self._slots, self._slot_of, self.resolution
        last_delay = float("nan")
        slot = 0
        entries: dict[Owner, None] = {}
        for owner, delay in delays.items():
            if delay != last_delay:
                last_delay = delay
                slot = -int(-(base + delay) // resolution)
                got = slots.get(slot)
                if got is None:
                    got = slots[slot] = {}
                    heapq.heappush(self._heap, slot)
                entries = got
            old = slot_of.get(owner)
            if old is not None:
                if old == slot:
                    continue
                del slots[old][owner]
            slot_of[owner] = slot
            entries[owner] = None


class Due(Protocol):
    """What a deadline on `Deadlines` calls when it comes."""

    def expire(self, lateness: float) -> None:
        """The deadline came; the wheel's slot ran `lateness` seconds after its time."""


class Deadlines:
    """A `TimerWheel` on the running loop's clock, with one loop timer for all of it.

    The timer is armed for the earliest filled slot; when it runs, every due
    owner's `expire` is called, and the timer is armed for what is next. With
    nothing on the wheel, nothing wakes the loop.
    """

    __slots__ = ("_armed", "_asked", "_handle", "_loop", "_thread", "_wheel")

    def __init__(self, resolution: float = RESOLUTION) -> None:
        self._wheel: TimerWheel[Due] = TimerWheel(resolution)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = 0  # the thread `_loop` runs in
        self._handle: asyncio.TimerHandle | None = None
        self._armed: int | None = None
        # While the timer's pass runs: the delays its owners asked for (owner: delay),
        # set on the wheel together when the pass ends (see `_tick`).
        self._asked: dict[Due, float] | None = None

    def __len__(self) -> int:
        return len(self._wheel) + (len(self._asked) if self._asked else 0)

    def __contains__(self, owner: object) -> bool:
        return owner in self._wheel or (self._asked is not None and owner in self._asked)

    def after(self, owner: Due, delay: float) -> None:
        """Call `owner.expire` `delay` seconds from now (at most one slot later)."""
        asked = self._asked
        if asked is not None:  # within the pass, so on its loop
            self._wheel.cancel(owner)
            asked[owner] = delay
            return
        loop = self._running()
        slot = self._wheel.set(owner, loop.time() + delay)
        if self._armed is None or slot < self._armed:
            self._arm(loop, slot)

    def cancel(self, owner: Due) -> None:
        """Forget `owner`'s deadline (the loop timer stays armed; it finds nothing)."""
        if self._loop is not None:
            self._wheel.cancel(owner)
            if self._asked:
                self._asked.pop(owner, None)

    def _running(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        # The loop held, while it runs in this thread (a thread runs one loop at a
        # time): asking asyncio costs a getpid per call on 3.11, and this runs per pong.
        if loop is not None and self._thread == threading.get_ident() and loop.is_running():
            return loop
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # Another loop (tests run several in one process): its sockets are gone.
            if self._handle is not None:
                self._handle.cancel()
            self._loop, self._handle, self._armed = loop, None, None
            self._thread = threading.get_ident()
            self._wheel = TimerWheel(self._wheel.resolution)
        return loop

    def _arm(self, loop: asyncio.AbstractEventLoop, slot: int) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed = slot
        self._handle = loop.call_at(self._wheel.slot_time(slot), self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        armed = self._armed
        self._handle = self._armed = None
        if loop is not self._loop or armed is None:
            return
        wheel = self._wheel
        # The loop runs a timer up to its clock's resolution early: the slot is due anyway.
        now = max(loop.time(), wheel.slot_time(armed))
        # Owners re-arming while they fire (a ping sent, its pong's deadline next) are
        # gathered, and set after the pass from the clock read once then: no earlier
        # than each asked, and thousands due in one slot cost one slot computation.
        asked: dict[Due, float] = {}
        self._asked = asked
        try:
            for slot, owners in wheel.expire_slots(now):
                lateness = now - wheel.slot_time(slot)
                for owner in owners:
                    try:
                        owner.expire(lateness)
                    except Exception as exc:  # one owner's fault must not cost the others
                        loop.call_exception_handler(
                            {"message": "a deadline's owner failed", "exception": exc}
                        )
        finally:
            self._asked = None
        if asked:
            wheel.set_all(loop.time(), asked)
        upcoming = wheel.next_slot()
        if upcoming is not None and (self._armed is None or upcoming < self._armed):
            self._arm(loop, upcoming)


# The process's one wheel: sockets' heartbeats and closes, and their token leases.
deadlines = Deadlines()
