"""Slack incoming-webhook payloads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from tocsin.notifier.message import Notification
from tocsin.notifier.receivers._base import TemplatedReceiver
from tocsin.notifier.receivers._http import HttpPost, HttpPosts, require
from tocsin.notifier.templating import template_context

__all__ = ["SlackReceiver"]

_encoder = msgspec.json.Encoder()
_JSON = {"content-type": "application/json"}
# Slack refuses a section text over 3000 characters.
_SECTION_LIMIT = 3000


class SlackReceiver(TemplatedReceiver):
    """Posts a header block, a section with the alert lines, and `text` as the fallback."""

    kind = "slack"

    def configure(self, options: Mapping[str, Any]) -> None:
        self._url = require(options, "url", self.kind)
        self._channel = str(options.get("channel") or "")

    def payload(self, notification: Notification) -> dict[str, Any]:
        context = template_context(notification)
        title = self.render("title", context).strip()
        text = self.render("text", context).strip()
        payload: dict[str, Any] = {
            "text": f"{title}\n{text}",
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
                {"type": "section", "text": {"type": "mrkdwn", "text": text[:_SECTION_LIMIT]}},
            ],
        }
        if self._channel:
            payload["channel"] = self._channel
        return payload

    def prepare(self, notification: Notification) -> HttpPosts:
        body = _encoder.encode(self.payload(notification))
        return HttpPosts([HttpPost(self._url, body, _JSON)], self._timeout)
