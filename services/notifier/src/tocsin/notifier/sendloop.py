"""The send loop: every receiver send of a process runs on one asyncio event loop.

A worker thread renders a notification and hands its `Outbound` here; the
thread returns at once, so a receiver that hangs holds no worker thread. Each
receiver has its own gate (an `asyncio.Semaphore` of `concurrency` slots and
an HTTP client whose pool is as big) and each send one deadline
(`asyncio.timeout`) over connect, request and answer alike, so a receiver that
hangs holds its own slots, each for at most its timeout, and nothing of any
other receiver's.

A send waits for a slot at most `slot_wait` seconds from its hand-over (the
caller's claim, a lease, runs from then) and at most `max_waiting` sends wait
per receiver; beyond either it ends as `ReceiverBusyError` without having been
tried (the pipeline looks again later, from a durable due-time). A worker
thread about to hand over a send to a receiver
whose waiting room is nearly full waits for room (`wait_for_room`), bounded, and
only while that room drains: a receiver that is merely backlogged slows its own
producers instead of bouncing each send off a full room (a put-back costs a Redis
write, a second render and a second hand-over); a receiver that hangs frees no
room, so nobody waits on it for longer than `_STALL_SECONDS`. When a send ends, its
outcome (None when delivered, else the exception) goes to the caller's `settle`
callback. Settles write to
Redis with a blocking client, which must not stall the loop: they run on a few
threads of their own.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

import anyio
import httpcore
import httpx

from tocsin.common.errors import RemoteError
from tocsin.common.telemetry import client_span
from tocsin.notifier import metrics
from tocsin.notifier.receivers import Outbound, TemporaryDeliveryError

__all__ = ["Outcome", "ReceiverBusyError", "SendLoop"]

log = logging.getLogger(__name__)

# None: delivered; otherwise what the send raised (a DeliveryError, ReceiverBusyError, a
# bug).
Outcome = BaseException | None
# Threads that run settle callbacks (Redis calls of a millisecond or so each).
_SETTLE_THREADS = 2
# A worker waits for room only while the room frees at least this often: a receiver
# whose room freed no place for this long is stalled (hanging), and waiting on it would
# delay other receivers' sends on that worker.
_STALL_SECONDS = 0.25
# An idle connection to a receiver is closed after this long (httpx's default).
_KEEPALIVE_SECONDS = 5.0


class ReceiverBusyError(RemoteError):
    """No send slot of the receiver came free in time: the send was not tried."""


class _Gate:
    """One receiver's slots, waiting room and HTTP client (lives on the loop)."""

    def __init__(self, concurrency: int, room_lock: threading.Lock, tls: ssl.SSLContext) -> None:
        self.slots = asyncio.Semaphore(concurrency)
        self.waiting = 0
        # Worker threads waiting for room in `waiting` (`SendLoop.wait_for_room`), and
        # when a place in it last freed (time.monotonic()).
        self.room = threading.Condition(room_lock)
        self.room_waiters = 0
        self.freed_at = 0.0
        # Its own pool, as big as its slots: a receiver that hangs fills only its own.
        self.http = httpcore.AsyncConnectionPool(
            ssl_context=tls,
            max_connections=concurrency,
            max_keepalive_connections=concurrency,
            keepalive_expiry=_KEEPALIVE_SECONDS,
        )


async def _warm_up() -> None:
    anyio.Event().set()


class SendLoop:
    """Runs receiver sends on one event loop thread, per-receiver slots and deadlines."""

    def __init__(self, concurrency: int, *, slot_wait: float, max_waiting: int) -> None:
        self._concurrency = max(1, concurrency)
        self._slot_wait = slot_wait
        self._max_waiting = max(0, max_waiting)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="send-loop", daemon=True)
        self._settlers = ThreadPoolExecutor(_SETTLE_THREADS, thread_name_prefix="send-settle")
        self._gates: dict[str, _Gate] = {}
        # One TLS context (httpx's default trust) for every receiver's client: each
        # context loads the CA bundle, tens of ms of the loop's time per receiver.
        self._tls = httpx.create_ssl_context()
        self._lock = threading.Lock()
        self._pending = 0  # sends handed over and not yet settled
        self._idle = threading.Condition(self._lock)
        # Shared by every gate's `room` condition (waits are short and rare).
        self._room_lock = threading.Lock()
        # Workers wait for room below this mark, so the few that pass it at once still
        # fit under `max_waiting`, which the loop enforces.
        self._room_mark = self._max_waiting - self._max_waiting // 4

    def start(self) -> SendLoop:
        self._thread.start()
        # httpcore's first async request imports anyio's asyncio back-end (a few hundred
        # ms on a loaded machine): done now, before the service is ready, not on the
        # loop while the first page waits.
        asyncio.run_coroutine_threadsafe(_warm_up(), self._loop).result(timeout=60)
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def submit(
        self,
        receiver: str,
        kind: str,
        outbound: Outbound,
        timeout: float,
        settle: Callable[[Outcome], None],
        *,
        slot_wait: float | None = None,
        trace: Mapping[str, str] | None = None,
    ) -> None:
        """Send `outbound` to `receiver` within `timeout` s once one of its slots is
        free; `settle(outcome)` runs after. It waits for a slot until `slot_wait` s
        (default: the loop's) from now.

        Returns at once. The caller's context (its trace) goes with the send, which
        is a CLIENT span `send {kind}` with `trace` among its attributes.
        """
        with self._lock:
            self._pending += 1
        context = contextvars.copy_context()
        # The loop's clock is time.monotonic (asyncio's default), so the deadline holds
        # however long the loop takes to pick the send up.
        slot_deadline = time.monotonic() + (self._slot_wait if slot_wait is None else slot_wait)

        def start() -> None:
            self._loop.create_task(
                self._send(
                    receiver,
                    kind,
                    outbound,
                    (slot_deadline, timeout),
                    settle,
                    trace or {},
                ),
                context=context,
            )

        try:
            self._loop.call_soon_threadsafe(start)
        except BaseException:
            self._settled()
            raise

    async def _send(
        self,
        receiver: str,
        kind: str,
        outbound: Outbound,
        waits: tuple[float, float],
        settle: Callable[[Outcome], None],
        trace: Mapping[str, str],
    ) -> None:
        outcome: Outcome = None
        try:
            with client_span(f"send {kind}", {"tocsin.receiver": receiver, **trace}):
                outcome = await self._attempt(receiver, kind, outbound, waits)
        except BaseException as exc:  # a bug in a receiver must still settle its send
            outcome = exc
        self._settlers.submit(self._settle, settle, outcome)

    async def _attempt(
        self,
        receiver: str,
        kind: str,
        outbound: Outbound,
        waits: tuple[float, float],
    ) -> Outcome:
        """Wait for a slot (until `waits[0]`, loop time), send (within `waits[1]` s)."""
        slot_deadline, deadline = waits
        gate = self._gates.get(receiver)
        if gate is None:
            gate = self._gates[receiver] = _Gate(self._concurrency, self._room_lock, self._tls)
        if gate.slots.locked() and gate.waiting >= self._max_waiting:
            return ReceiverBusyError(receiver)
        gate.waiting += 1
        try:
            async with asyncio.timeout_at(slot_deadline):
                await gate.slots.acquire()
        except TimeoutError:
            return ReceiverBusyError(receiver)
        finally:
            gate.waiting -= 1
            gate.freed_at = time.monotonic()
            if gate.room_waiters:  # read unlocked: a waiter missed wakes at its stall bound
                with gate.room:
                    gate.room.notify()
        metrics.SENDS_OPEN.labels(kind).inc()
        try:
            async with asyncio.timeout(deadline):
                await outbound.send(gate.http)
        except TimeoutError:
            return TemporaryDeliveryError(f"no answer within {deadline:g}s")
        except Exception as exc:
            return exc
        finally:
            metrics.SENDS_OPEN.labels(kind).dec()
            gate.slots.release()
        return None

    def _crowded(self, gate: _Gate) -> bool:
        # Read without the loop's help: a hint, off by a send or two at worst.
        return gate.slots.locked() and gate.waiting >= self._room_mark

    def wait_for_room(self, receiver: str, timeout: float) -> bool:
        """Whether a send to `receiver` handed over now would find room to wait for a
        slot; if its waiting room is nearly full, wait up to `timeout` s for room, but
        only while places keep freeing (at least every `_STALL_SECONDS`). False: the
        caller puts the send back rather than rendering it for nothing."""
        gate = self._gates.get(receiver)
        if gate is None or not self._crowded(gate):
            return True
        deadline = time.monotonic() + timeout
        with gate.room:
            gate.room_waiters += 1
            try:
                while self._crowded(gate):
                    now = time.monotonic()
                    if now >= deadline or now - gate.freed_at > _STALL_SECONDS:
                        return False
                    gate.room.wait(min(_STALL_SECONDS, deadline - now))
            finally:
                gate.room_waiters -= 1
        return True

    def _settle(self, settle: Callable[[Outcome], None], outcome: Outcome) -> None:
        try:
            settle(outcome)
        except Exception:
            # The send's due-time guard runs it again once its claim's lease lapses.
            log.exception("settling a send failed; its guard will run it again")
        finally:
            self._settled()

    def _settled(self) -> None:
        with self._lock:
            self._pending -= 1
            if self._pending == 0:
                self._idle.notify_all()

    def drain(self, timeout: float) -> bool:
        """Wait up to `timeout` s for every handed-over send to be settled; True if all were."""
        with self._lock:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self) -> None:
        """Stop the loop; sends still open are dropped (their guards run them again)."""

        async def close_clients() -> None:
            for gate in list(self._gates.values()):
                await gate.http.aclose()

        if self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(close_clients(), self._loop).result(timeout=2)
            except Exception:
                log.debug("closing the receivers' HTTP clients failed", exc_info=True)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=2)
        self._settlers.shutdown(wait=False, cancel_futures=True)
