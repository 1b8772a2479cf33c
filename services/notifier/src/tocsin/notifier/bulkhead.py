"""Bulkheads: each receiver sends on its own few threads, under a deadline.

A receiver that hangs holds only its own slots: a send that finds all of them
taken waits a moment for one (a fast receiver frees one within milliseconds),
then raises `ReceiverBusyError` (the pipeline tries again a little later, from a
due-time, holding no thread meanwhile), and a send that outlives its deadline is reported as a
temporary failure while its thread is left to end on its own (it keeps its slot
until then, so a hung receiver never has more than `concurrency` sends open).
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from tocsin.common.errors import RemoteError
from tocsin.notifier.receivers import TemporaryDeliveryError

__all__ = ["Bulkheads", "ReceiverBusyError"]

# How long a send waits for a slot before it gives its thread back.
_SLOT_WAIT_SECONDS = 0.05


class ReceiverBusyError(RemoteError):
    """Every send slot of the receiver is taken."""


class _Bulkhead:
    def __init__(self, name: str, concurrency: int) -> None:
        self.slots = threading.BoundedSemaphore(concurrency)
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"send-{name}")


class Bulkheads:
    """Per-receiver send slots: at most `concurrency` sends open to one receiver at once."""

    def __init__(self, concurrency: int) -> None:
        self._concurrency = max(1, concurrency)
        self._bulkheads: dict[str, _Bulkhead] = {}
        self._lock = threading.Lock()

    def _for(self, receiver: str) -> _Bulkhead:
        with self._lock:
            bulkhead = self._bulkheads.get(receiver)
            if bulkhead is None:
                bulkhead = self._bulkheads[receiver] = _Bulkhead(receiver, self._concurrency)
            return bulkhead

    def run(self, receiver: str, send: Callable[[], None], deadline: float) -> None:
        """Run `send` in one of `receiver`'s slots and wait at most `deadline` seconds.

        Raises `ReceiverBusyError` when no slot is free, `TemporaryDeliveryError` past the
        deadline, and whatever `send` raised otherwise.
        """
        bulkhead = self._for(receiver)
        if not bulkhead.slots.acquire(timeout=_SLOT_WAIT_SECONDS):
            raise ReceiverBusyError(receiver)
        try:
            # The caller's context (its trace span) goes with the send.
            future: Future[None] = bulkhead.pool.submit(contextvars.copy_context().run, send)
        except BaseException:
            bulkhead.slots.release()
            raise
        future.add_done_callback(lambda _: bulkhead.slots.release())
        try:
            future.result(timeout=deadline)
        except FutureTimeout:
            raise TemporaryDeliveryError(f"no answer within {deadline:g}s") from None

    def close(self) -> None:
        with self._lock:
            for bulkhead in self._bulkheads.values():
                bulkhead.pool.shutdown(wait=False, cancel_futures=True)
