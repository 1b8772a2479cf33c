"""Webhook sends and their signature.

The signature header is `X-Tocsin-Signature: t=<unix seconds>,v1=<hex>` where
`<hex>` is HMAC-SHA256(secret, f"{t}." + body). Signing the timestamp with the
body lets a receiver refuse replays older than its tolerance.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import Any

import msgspec

from tocsin.notifier.message import Notification
from tocsin.notifier.receivers._base import TemplatedReceiver
from tocsin.notifier.receivers._http import HttpPost, HttpPosts, require
from tocsin.notifier.templating import template_context

__all__ = ["SIGNATURE_HEADER", "WebhookReceiver", "sign", "verify"]

SIGNATURE_HEADER = "X-Tocsin-Signature"
_encoder = msgspec.json.Encoder()


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The signature header value for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, body: bytes, header: str, tolerance: float = 300.0) -> bool:
    """Whether `header` signs `body` with `secret` and is younger than `tolerance` seconds."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


class WebhookReceiver(TemplatedReceiver):
    """POSTs the notification to `url`, with custom `headers` and an optional `secret`."""

    kind = "webhook"

    def configure(self, options: Mapping[str, Any]) -> None:
        self._url = require(options, "url", self.kind)
        self._secret = str(options.get("secret") or "")
        headers = options.get("headers") or {}
        if not isinstance(headers, dict):
            raise ValueError("webhook `headers` must be a mapping")
        self._headers = {str(k): str(v) for k, v in headers.items()}
        self._content_type = str(options.get("content_type") or "application/json")

    def body(self, notification: Notification) -> bytes:
        if "body" in self._overrides:
            context = template_context(notification)
            return self.render("body", context).encode()
        return _encoder.encode(notification)

    def prepare(self, notification: Notification) -> HttpPosts:
        body = self.body(notification)
        headers = {
            **self._headers,
            "content-type": self._content_type,
            "x-tocsin-notification-id": notification.id,
        }
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(self._secret, body, int(time.time()))
        return HttpPosts([HttpPost(self._url, body, headers)], self._timeout)
