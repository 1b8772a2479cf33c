"""Receivers: one interface, one folder per type (webhook, slack, email, pagerduty, msteams).

Exceptions a receiver raises::

    DeliveryError               the send did not succeed
    ├── TemporaryDeliveryError  timeout, connection error, 5xx, 429: retry (after `retry_after`)
    └── PermanentDeliveryError  other 4xx, bad configuration: retrying cannot help
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import httpx

from tocsin.notifier.message import Notification
from tocsin.notifier.receivers._errors import (
    DeliveryError,
    PermanentDeliveryError,
    TemporaryDeliveryError,
)
from tocsin.notifier.templating import Templates

__all__ = [
    "DeliveryError",
    "PermanentDeliveryError",
    "Receiver",
    "ReceiverFactory",
    "TemporaryDeliveryError",
    "build_receiver",
]


class Receiver(Protocol):
    """Sends one notification to one destination, or raises a `DeliveryError`."""

    kind: str
    name: str

    @property
    def timeout(self) -> float:
        """Longest one send may take, in seconds."""
        ...

    def notify(self, notification: Notification) -> None: ...


ReceiverFactory = Callable[[str, Mapping[str, Any], "Templates", httpx.Client, float], Receiver]


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
    http: httpx.Client,
    timeout: float,
) -> Receiver:
    """A receiver of type `kind`; raises ValueError on bad options."""
    factory = _factories().get(kind)
    if factory is None:
        raise ValueError(f"unknown receiver type {kind!r}")
    return factory(name, options, templates, http, timeout)
