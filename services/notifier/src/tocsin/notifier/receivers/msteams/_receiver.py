"""Teams incoming-webhook payloads (an Adaptive Card attachment)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from tocsin.notifier.message import Notification
from tocsin.notifier.receivers._base import TemplatedReceiver
from tocsin.notifier.receivers._http import HttpPost, HttpPosts, require
from tocsin.notifier.templating import template_context

__all__ = ["TeamsReceiver"]

_encoder = msgspec.json.Encoder()
_JSON = {"content-type": "application/json"}


class TeamsReceiver(TemplatedReceiver):
    """Posts a message with one Adaptive Card: a title and the alert lines."""

    kind = "msteams"

    def configure(self, options: Mapping[str, Any]) -> None:
        self._url = require(options, "url", self.kind)

    def payload(self, notification: Notification) -> dict[str, Any]:
        context = template_context(notification)
        title = self.render("title", context).strip()
        text = self.render("text", context).strip()
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

    def prepare(self, notification: Notification) -> HttpPosts:
        body = _encoder.encode(self.payload(notification))
        return HttpPosts([HttpPost(self._url, body, _JSON)], self._timeout)
