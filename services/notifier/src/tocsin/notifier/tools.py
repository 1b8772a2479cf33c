"""Functions other programs reach through the `tocsin.notifier` entry point group.

The `tocsin` CLI (`routes test`, `dlq ...`) calls these without importing the
service's modules itself; every argument and result is a builtin (str, dict,
list), so callers need no notifier types. `preview` is served over HTTP instead
(`previewapi`), which the gateway forwards to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import msgspec

from tocsin.common import broker as queues
from tocsin.common.models import StoredAlert
from tocsin.common.redis import sync_client
from tocsin.notifier.deadletters import DeadLetters
from tocsin.notifier.message import GroupedAlert, Notification
from tocsin.notifier.receivers import build_receiver
from tocsin.notifier.routesource import activate
from tocsin.notifier.templating import DEFAULTS, Templates

__all__ = ["dlq_list", "dlq_purge", "dlq_retry", "preview", "routes_test"]

SAMPLE_ALERT: dict[str, Any] = {
    "id": "0190f0c0a0b0sample0000000",
    "fingerprint": "v1:sample",
    "name": "HighErrorRate",
    "severity": "critical",
    "status": "firing",
    "source": "prometheus",
    "service": "checkout",
    "summary": "5xx ratio above 5% for 10 minutes",
    "labels": {"team": "payments", "env": "prod"},
    "annotations": {"runbook": "https://runbooks.example/checkout-5xx"},
    "producer": "sample",
    "count": 1,
    "first_seen": "2026-01-01T00:00:00Z",
    "last_seen": "2026-01-01T00:00:00Z",
}


def routes_test(routes_file: str, labels: dict[str, str]) -> list[dict[str, Any]]:
    """The routes (and receivers) an alert with `labels` reaches; raises ValueError if invalid."""
    active = activate(Path(routes_file).read_text(), routes_file, Templates(), 1.0)
    reached = []
    for route in active.config.routes_for(labels):
        spec = active.config.receivers[route.receiver]
        reached.append(
            {
                "receiver": route.receiver,
                "type": spec.type,
                "route": route.path,
                "group": route.group_labels(labels),
                "group_wait": route.group_wait,
                "group_interval": route.group_interval,
                "repeat_interval": route.repeat_interval,
            }
        )
    return reached


def _requeue(redis_url: str) -> Any:
    broker = queues.build_broker(redis_url, queues=(queues.NOTIFICATIONS_QUEUE,))

    def requeue(actor: str, args: list[Any]) -> None:
        broker.enqueue(queues.build_message(queues.NOTIFICATIONS_QUEUE, actor, tuple(args)))

    return requeue


def dlq_list(redis_url: str) -> list[dict[str, Any]]:
    letters = DeadLetters(sync_client(redis_url)).letters()
    result = []
    for letter in letters:
        entry: dict[str, Any] = msgspec.to_builtins(letter)
        del entry["args"]
        notification = letter.args[0] if letter.args and isinstance(letter.args[0], dict) else {}
        entry["group_labels"] = notification.get("group_labels", {})
        entry["alerts"] = len(notification.get("alert_ids", []))
        result.append(entry)
    return result


def dlq_retry(redis_url: str, ids: list[str] | None = None) -> list[str]:
    """Requeue dead letters (all when `ids` is None); returns the ids requeued."""
    return DeadLetters(sync_client(redis_url)).retry(_requeue(redis_url), ids)


def dlq_purge(redis_url: str, ids: list[str] | None = None) -> int:
    return DeadLetters(sync_client(redis_url)).purge(ids)


def preview(
    receiver_type: str,
    templates: dict[str, str] | None = None,
    alert: dict[str, Any] | None = None,
    status: str = "firing",
) -> dict[str, Any]:
    """Render a receiver type's message against a sample (or given) alert, sending nothing.

    Raises ValueError for an unknown type, a bad alert or a template that does not render.
    """
    if receiver_type not in DEFAULTS:
        raise ValueError(f"unknown receiver type {receiver_type!r}")
    try:
        stored = msgspec.convert({**SAMPLE_ALERT, **(alert or {})}, StoredAlert)
    except msgspec.ValidationError as exc:
        raise ValueError(f"alert: {exc}") from None
    state: Literal["firing", "resolved"] = "resolved" if status == "resolved" else "firing"
    notification = Notification(
        id="preview",
        receiver="preview",
        receiver_type=receiver_type,
        group_key="preview",
        group_labels={"alertname": stored.name},
        state_hash="preview",
        status=state,
        alerts=[GroupedAlert(transition=state, status=state, alert=stored)],
        firing_count=1 if state == "firing" else 0,
        resolved_count=0 if state == "firing" else 1,
        truncated=False,
        created_at=0.0,
        alert_ids=[stored.id],
    )
    options: dict[str, Any] = {
        "url": "http://preview.invalid/",
        "routing_key": "preview",
        "host": "preview.invalid",
        "from": "tocsin@preview.invalid",
        "to": ["oncall@preview.invalid"],
        "templates": templates or {},
    }
    receiver: Any = build_receiver(receiver_type, "preview", options, Templates(), 1.0)
    try:
        if receiver_type == "webhook":
            return {"body": receiver.body(notification).decode()}
        if receiver_type in ("slack", "msteams"):
            return {"payload": receiver.payload(notification)}
        if receiver_type == "pagerduty":
            return {"events": [receiver.event(notification, a) for a in notification.alerts]}
        message = receiver.message(notification)
        parts = {p.get_content_type(): p.get_content() for p in message.iter_parts()}
        return {
            "subject": message["Subject"],
            "text": parts.get("text/plain", ""),
            "html": parts.get("text/html", ""),
        }
    except Exception as exc:
        if isinstance(exc, ValueError):
            raise
        raise ValueError(f"template does not render: {exc}") from None
