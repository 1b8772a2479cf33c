"""Delivery outcomes a receiver reports by raising."""

from __future__ import annotations

from tocsin.common.errors import RemoteError

__all__ = ["DeliveryError", "PermanentDeliveryError", "TemporaryDeliveryError"]


class DeliveryError(RemoteError):
    """A send that did not succeed."""


class TemporaryDeliveryError(DeliveryError):
    """Worth retrying: a timeout, a connection error, a 5xx or a 429."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """Retrying cannot help: a 4xx other than 429, or a receiver misconfiguration."""
