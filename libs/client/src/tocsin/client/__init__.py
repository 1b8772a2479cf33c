"""Tocsin's Python SDK: send alerts to ingest, stream events from the gateway."""

from tocsin.client._exceptions import (
    ConfigurationError,
    FatalCloseError,
    RequestError,
    TocsinError,
)
from tocsin.client._ingest import IngestClient
from tocsin.client._stream import Backoff, Event, EventStream

__all__ = [
    "Backoff",
    "ConfigurationError",
    "Event",
    "EventStream",
    "FatalCloseError",
    "IngestClient",
    "RequestError",
    "TocsinError",
]
