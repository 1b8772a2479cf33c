"""Dramatiq's TimeLimit, whose watcher sleeps until the earliest deadline.

Dramatiq's watcher thread wakes every second (its `interval`) whether a job
runs or not: in every consumer process, a wake-up a second at rest. This one
waits until the earliest deadline of a running job, or until a job starts,
and stops an overdue job the same way: `TimeLimitExceeded` raised in the job's
thread, which fails the message like any error.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

from dramatiq.middleware import TimeLimit
from dramatiq.middleware.threading import is_gevent_active, raise_thread_exception
from dramatiq.middleware.time_limit import TimeLimitExceeded

__all__ = ["RestingTimeLimit"]

# Longest single wait of the watcher (a limit may be infinite; a wait may not).
_LONGEST_WAIT_SECONDS = 3600.0


class RestingTimeLimit(TimeLimit):
    """`TimeLimit` with a watcher that sleeps until a deadline (see the module)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        if not is_gevent_active():  # type: ignore[no-untyped-call]
            self.manager = _DeadlineWatcher(self.logger)  # type: ignore[assignment]


class _DeadlineWatcher(threading.Thread):
    """Raises `TimeLimitExceeded` in a job's thread at its deadline; idle in between."""

    def __init__(self, logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
        super().__init__(name="time-limits", daemon=True)
        self._logger = logger
        self._deadlines: dict[int, float] = {}  # thread id -> monotonic deadline
        self._changed = threading.Condition()
        self._wake_at = math.inf  # when the watcher's current wait ends (monotonic)

    def add_timeout(self, thread_id: int, ttl: float) -> None:
        deadline = time.monotonic() + ttl / 1000
        with self._changed:
            self._deadlines[thread_id] = deadline
            # Only a deadline before the watcher's wake-up needs it now: jobs of one
            # limit start in deadline order, and waking a thread per job is a context
            # switch per message.
            if deadline < self._wake_at:
                self._changed.notify()

    def remove_timeout(self, thread_id: int) -> None:
        # No need to wake the watcher: at the removed deadline it finds nothing due.
        with self._changed:
            self._deadlines.pop(thread_id, None)

    def run(self) -> None:
        with self._changed:
            while True:
                now = time.monotonic()
                for thread_id, deadline in list(self._deadlines.items()):
                    if now >= deadline:
                        del self._deadlines[thread_id]
                        self._logger.warning(
                            "job past its time limit, stopping thread %r", thread_id
                        )
                        raise_thread_exception(  # type: ignore[no-untyped-call]
                            thread_id, TimeLimitExceeded
                        )
                earliest = min(self._deadlines.values(), default=now + _LONGEST_WAIT_SECONDS)
                wait = min(earliest - now, _LONGEST_WAIT_SECONDS)
                self._wake_at = now + wait
                self._changed.wait(wait)
