"""A worker's shutdown event survives signals that keep coming while it stops.

Found by `test_dev_stack`'s SIGKILL case (a processor still running minutes after
`tocsin dev` died): SIGTERMs landed while the main thread was inside `Event.set()`,
and the handler, run between two bytecodes of that same thread, waited for the
event's lock that the interrupted `set()` held, for ever. A real process here sets
its event over and over while another bombards it with SIGTERM and SIGINT; before
the fix it died of nested handlers (RecursionError) or hung.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time

_WORKER = """
import sys
import time
from tocsin.common.ops import shutdown_event

stop = shutdown_event()
print("ready", flush=True)
stop.wait()
# Stopping: the main thread is in and out of Event.set() while signals keep landing.
deadline = time.monotonic() + 3
while time.monotonic() < deadline:
    stop.set()
print("stopped", flush=True)
# Exit only once the test has stopped signalling: a signal that lands while the
# interpreter finalizes meets the default handlers, as in any exiting process.
sys.stdin.read()
"""


def test_signals_that_keep_coming_while_a_worker_stops_do_not_hang_it() -> None:
    worker = subprocess.Popen(
        [sys.executable, "-c", _WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    stopped = threading.Event()
    sent = 0

    def bombard() -> None:
        nonlocal sent
        while not stopped.is_set() and worker.poll() is None:
            os.kill(worker.pid, signal.SIGTERM if sent % 2 else signal.SIGINT)
            sent += 1
            time.sleep(0.0005)

    try:
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "ready"
        sender = threading.Thread(target=bombard)
        sender.start()
        readable, _, _ = select.select([worker.stdout], [], [], 15)
        line = worker.stdout.readline().strip() if readable else "(hung)"
        stopped.set()
        sender.join()
        assert line == "stopped", f"after {sent} signals: {line!r}, exit {worker.poll()}"
        assert worker.stdin is not None
        worker.stdin.close()
        assert worker.wait(10) == 0
        assert sent > 100
    finally:
        stopped.set()
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
