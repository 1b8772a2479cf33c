"""Receivers: one interface, one folder per type (webhook, slack, email, pagerduty, msteams).

A send has two halves: `prepare` renders the notification (templates, CPU-bound,
on the worker thread that runs the send step) into an `Outbound`, whose `send`
coroutine does the network part on the send loop (`tocsin.notifier.sendloop`).

Exceptions a receiver raises::

    DeliveryError               the send did not succeed
    ├── TemporaryDeliveryError  timeout, connection error, 5xx, 429: retry (after `retry_after`)
    └── PermanentDeliveryError  other 4xx, bad configuration: retrying cannot help
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import httpcore

from tocsin.notifier.message import Notification
from tocsin.notifier.receivers._errors import (
    DeliveryError,
    PermanentDeliveryError,
    TemporaryDeliveryError,
)
from tocsin.notifier.templating import Templates

__all__ = [
    "DeliveryError",
    "Outbound",
    "PermanentDeliveryError",
    "Receiver",
    "ReceiverFactory",
    "TemporaryDeliveryError",
    "build_receiver",
]


class Outbound(Protocol):
    """A rendered notification, ready to go out; `send` raises a `DeliveryError` on failure."""

    async def send(self, http: httpcore.AsyncConnectionPool) -> None:
        """Deliver it, using `http` (the receiver's own client) if it speaks HTTP."""
        ...


class Receiver(Protocol):
    """Renders one notification for one destination (`prepare`), or raises a ValueError."""

    kind: str
    name: str

    @property
    def timeout(self) -> float:
        """Longest one send may take, in seconds."""
        ...

    def prepare(self, notification: Notification) -> Outbound: ...


ReceiverFactory = Callable[[str, Mapping[str, Any], "Templates", float], Receiver]


def _factories() -> dict[str, ReceiverFactory]:
    from tocsin.notifier.receivers.email import EmailReceiver
    from tocsin.notifier.receivers.msteams import TeamsReceiver
    from tocsin.notifier.receivers.pagerduty import PagerDutyReceiver
    from tocsin.notifier.receivers.slack import SlackReceiver
    from tocsin.notifier.receivers.webhook import WebhookReceiver

    return {
        "webhook": WebhookReceiver,
        "slack": SlackReceiver,
        "email": EmailReceiver,
        "pagerduty": PagerDutyReceiver,
        "msteams": TeamsReceiver,
    }


def build_receiver(
    kind: str,
    name: str,
    options: Mapping[str, Any],
    templates: Templates,
    timeout: float,
) -> Receiver:
    """A receiver of type `kind`; raises ValueError on bad options."""
    factory = _factories().get(kind)
    if factory is None:
        raise ValueError(f"unknown receiver type {kind!r}")
    return factory(name, options, templates, timeout)
