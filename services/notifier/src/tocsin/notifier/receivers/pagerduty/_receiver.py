"""PagerDuty Events API v2 events, one per alert, keyed by the alert's dedup key.

PagerDuty deduplicates on `dedup_key`, so resending an event after a partial
failure of a group is harmless.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from tocsin.notifier.message import GroupedAlert, Notification
from tocsin.notifier.receivers._base import TemplatedReceiver
from tocsin.notifier.receivers._http import HttpPost, HttpPosts, require
from tocsin.notifier.templating import template_context

__all__ = ["DEFAULT_URL", "PagerDutyReceiver"]

DEFAULT_URL = "https://events.pagerduty.com/v2/enqueue"
_encoder = msgspec.json.Encoder()
_JSON = {"content-type": "application/json"}


def _action(item: GroupedAlert) -> str:
    if item.status == "resolved":
        return "resolve"
    return "acknowledge" if item.transition == "acknowledged" else "trigger"


class PagerDutyReceiver(TemplatedReceiver):
    """Sends each listed alert of a notification as one Events API v2 event."""

    kind = "pagerduty"

    def configure(self, options: Mapping[str, Any]) -> None:
        self._routing_key = require(options, "routing_key", self.kind)
        self._url = str(options.get("url") or DEFAULT_URL)

    def event(self, notification: Notification, item: GroupedAlert) -> dict[str, Any]:
        alert = item.alert
        event: dict[str, Any] = {
            "routing_key": self._routing_key,
            "event_action": _action(item),
            "dedup_key": alert.fingerprint,
        }
        if event["event_action"] == "trigger":
            context = template_context(notification, alert=msgspec.to_builtins(alert))
            summary = self.render("summary", context)
            payload: dict[str, Any] = {
                "summary": summary.strip()[:1024] or alert.name,
                "source": alert.source or alert.service or "tocsin",
                "severity": alert.severity,
                "custom_details": {"labels": alert.labels, "annotations": alert.annotations},
            }
            if alert.service:
                payload["component"] = alert.service
            event["payload"] = payload
            event["client"] = "Tocsin"
            if alert.generator_url:
                event["client_url"] = alert.generator_url
        return event

    def prepare(self, notification: Notification) -> HttpPosts:
        # A digest still sends every listed alert; the rest keep their last state.
        events = [
            HttpPost(self._url, _encoder.encode(self.event(notification, item)), _JSON)
            for item in notification.alerts
        ]
        return HttpPosts(events, self._timeout)
