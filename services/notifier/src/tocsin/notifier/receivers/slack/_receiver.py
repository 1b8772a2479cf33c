"""Slack incoming-webhook payloads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import msgspec

from tocsin.notifier.message import Notification
from tocsin.notifier.receivers._http import post, require
from tocsin.notifier.receivers._options import template_overrides
from tocsin.notifier.templating import Templates, template_context

__all__ = ["SlackReceiver"]

_encoder = msgspec.json.Encoder()
# Slack refuses a section text over 3000 characters.
_SECTION_LIMIT = 3000


class SlackReceiver:
    """Posts a header block, a section with the alert lines, and `text` as the fallback."""

    kind = "slack"

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
        self._channel = str(options.get("channel") or "")
        self._overrides = template_overrides(options, templates)
        self._templates = templates
        self._http = http
        self._timeout = float(options.get("timeout_seconds") or timeout)

    def payload(self, notification: Notification) -> dict[str, Any]:
        context = template_context(notification)
        title = self._templates.render(self.kind, "title", context, self._overrides).strip()
        text = self._templates.render(self.kind, "text", context, self._overrides).strip()
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

    def notify(self, notification: Notification) -> None:
        body = _encoder.encode(self.payload(notification))
        post(self._http, self._url, body, {"content-type": "application/json"}, self._timeout)
