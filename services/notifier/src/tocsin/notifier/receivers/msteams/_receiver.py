"""Teams incoming-webhook payloads (an Adaptive Card attachment)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import msgspec

from tocsin.notifier.message import Notification
from tocsin.notifier.receivers._http import post, require
from tocsin.notifier.receivers._options import template_overrides
from tocsin.notifier.templating import Templates, template_context

__all__ = ["TeamsReceiver"]

_encoder = msgspec.json.Encoder()


class TeamsReceiver:
    """Posts a message with one Adaptive Card: a title and the alert lines."""

    kind = "msteams"

    def __init__(
        self,
        name: str,
        options: Mapping[str, Any],
        templates: Templates,
        http: httpx.Client,
        timeout: float,
    ) -> None:
        self.name = name
        self._url = require(options, "url", self.kind)
        self._overrides = template_overrides(options, templates)
        self._templates = templates
        self._http = http
        self._timeout = float(options.get("timeout_seconds") or timeout)

    def payload(self, notification: Notification) -> dict[str, Any]:
        context = template_context(notification)
        title = self._templates.render(self.kind, "title", context, self._overrides).strip()
        text = self._templates.render(self.kind, "text", context, self._overrides).strip()
        color = "attention" if notification.status == "firing" else "good"
        card = {
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard",
            "version": "1.4",
            "body": [
                {
                    "type": "TextBlock",
                    "text": title,
                    "weight": "bolder",
                    "size": "medium",
                    "color": color,
                    "wrap": True,
                },
                {"type": "TextBlock", "text": text, "wrap": True},
            ],
        }
        return {
            "type": "message",
            "attachments": [
                {"contentType": "application/vnd.microsoft.card.adaptive", "content": card}
            ],
        }

    def notify(self, notification: Notification) -> None:
        body = _encoder.encode(self.payload(notification))
        post(self._http, self._url, body, {"content-type": "application/json"}, self._timeout)
