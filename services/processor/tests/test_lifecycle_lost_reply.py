"""An apply that Redis ran twice reports what its first run did.

A call sent into a frozen Redis times out after the client's 5 s socket timeout and
redis-py sends it again on a new connection; after the thaw Redis runs both, and the
caller sees only the second reply (docs/queues.md, "Lost replies"). The second run
found the fingerprint's version moved on and answered "conflict", and the re-decided
message was then "replayed": a new incident got no prediction, an acknowledgement
no outcome. Each test freezes a real Redis under one apply and fails without the fix.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterable, Iterator

import pytest
from redis import Redis
from tests.support import freeze_for

from tocsin.client.devserver import RedisServer
from tocsin.common.models import AlertAction, AlertIn, QueuedAlert
from tocsin.common.redis import sync_client
from tocsin.common.silences import SilenceSet
from tocsin.processor.lifecycle import AlertLifecycle, LifecycleConfig

# Longer than the socket timeout (5 s), so the first send times out and is sent again.
_FROZEN_SECONDS = 7.0


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server
        os.kill(server.pid or 0, signal.SIGCONT)


def _freeze_under_the_next_apply(
    lifecycle: AlertLifecycle, server: RedisServer
) -> list[threading.Event]:
    """Freeze Redis as the next apply is sent; the list gets the freeze's thaw event."""
    thaws: list[threading.Event] = []
    apply = lifecycle._apply

    def frozen_apply(calls: Iterable[object]) -> list[str]:
        if not thaws:
            thaws.append(freeze_for(server.pid or 0, _FROZEN_SECONDS))
        return apply(calls)  # type: ignore[arg-type]

    lifecycle._apply = frozen_apply  # type: ignore[method-assign]
    return thaws


def _message(message_id: str, fingerprint: str) -> QueuedAlert:
    return QueuedAlert(
        id=message_id,
        fingerprint=fingerprint,
        received_at=time.time(),
        producer="p",
        alert=AlertIn(name=f"disk {fingerprint}", severity="critical"),
    )


def test_a_batch_that_ran_twice_reports_its_new_incidents(server: RedisServer) -> None:
    redis: Redis = sync_client(server.url)
    lifecycle = AlertLifecycle(redis, LifecycleConfig())
    thaws = _freeze_under_the_next_apply(lifecycle, server)
    # Two messages of one fingerprint: the second's version is the one left in Redis.
    batch = [_message("a1", "fa"), _message("a2", "fa"), _message("b1", "fb")]
    outcomes = lifecycle.apply_alerts(batch, SilenceSet())
    assert thaws[0].is_set()
    assert [o.outcome for o in outcomes] == ["created", "duplicate", "created"]
    assert [o.notified for o in outcomes] == [("firing",), (), ("firing",)]


def test_an_acknowledgement_that_ran_twice_reports_it(server: RedisServer) -> None:
    redis: Redis = sync_client(server.url)
    lifecycle = AlertLifecycle(redis, LifecycleConfig())
    [created] = lifecycle.apply_alerts([_message("a1", "fa")], SilenceSet())
    thaws = _freeze_under_the_next_apply(lifecycle, server)
    acked = lifecycle.apply_action(
        AlertAction(id="ack-1", action="acknowledge", alert_id=created.alert_id, by="u"),
        time.time(),
    )
    assert thaws[0].is_set()
    assert acked.outcome == "acknowledged"
