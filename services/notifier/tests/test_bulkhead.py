"""Bulkheads: per-receiver send slots and the send deadline."""

from __future__ import annotations

import threading

import pytest

from tocsin.notifier.bulkhead import Bulkheads, ReceiverBusyError
from tocsin.notifier.receivers import TemporaryDeliveryError


def test_a_receiver_with_every_slot_held_is_busy_while_another_receiver_still_sends() -> None:
    bulkheads = Bulkheads(concurrency=2)
    release = threading.Event()
    try:
        for _ in range(2):
            with pytest.raises(TemporaryDeliveryError):
                bulkheads.run("hanging", release.wait, deadline=0.05)
        with pytest.raises(ReceiverBusyError):
            bulkheads.run("hanging", lambda: None, deadline=1.0)
        sent: list[str] = []
        bulkheads.run("healthy", lambda: sent.append("page"), deadline=1.0)
        assert sent == ["page"]
    finally:
        release.set()
        bulkheads.close()


def test_a_slot_held_past_the_deadline_is_given_back_when_the_send_ends() -> None:
    bulkheads = Bulkheads(concurrency=1)
    release = threading.Event()
    try:
        with pytest.raises(TemporaryDeliveryError, match="no answer within"):
            bulkheads.run("slow", release.wait, deadline=0.05)
        with pytest.raises(ReceiverBusyError):
            bulkheads.run("slow", lambda: None, deadline=1.0)
        release.set()
        sent: list[int] = []
        # The slot comes back once the timed-out send has really ended.
        for _ in range(100):
            try:
                bulkheads.run("slow", lambda: sent.append(1), deadline=1.0)
                break
            except ReceiverBusyError:
                continue
        assert sent == [1]
    finally:
        release.set()
        bulkheads.close()


def test_what_a_send_raises_reaches_the_caller() -> None:
    bulkheads = Bulkheads(concurrency=1)

    def refuse() -> None:
        raise TemporaryDeliveryError("HTTP 503", retry_after=2.0)

    try:
        with pytest.raises(TemporaryDeliveryError) as raised:
            bulkheads.run("flaky", refuse, deadline=1.0)
        assert raised.value.retry_after == 2.0
        bulkheads.run("flaky", lambda: None, deadline=1.0)  # its slot was given back
    finally:
        bulkheads.close()
