"""Tocsin's Python SDK: send alerts to ingest, stream events from the gateway."""

from tocsin.client._exceptions import (
    AuthenticationError,
    ConfigurationError,
    FatalCloseError,
    NotFoundError,
    ProtocolError,
    RequestError,
    StackNotRunningError,
    SubscriptionError,
    TocsinError,
    TokenExpiredError,
    UnreachableError,
)
from tocsin.client._ingest import IngestClient
from tocsin.client._stream import Backoff, Event, EventStream, Reset, Subscribed

__all__ = [
    "AuthenticationError",
    "Backoff",
    "ConfigurationError",
    "Event",
    "EventStream",
    "FatalCloseError",
    "IngestClient",
    "NotFoundError",
    "ProtocolError",
    "RequestError",
    "Reset",
    "StackNotRunningError",
    "Subscribed",
    "SubscriptionError",
    "TocsinError",
    "TokenExpiredError",
    "UnreachableError",
]
