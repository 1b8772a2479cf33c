"""The webhook receiver: Tocsin's JSON body (or a user template), signed with HMAC-SHA256."""

from tocsin.notifier.receivers.webhook._receiver import (
    SIGNATURE_HEADER,
    WebhookReceiver,
    sign,
    verify,
)

__all__ = ["SIGNATURE_HEADER", "WebhookReceiver", "sign", "verify"]
