"""The lifecycle's notification messages are the documents Dramatiq's own encoding makes."""

from __future__ import annotations

import json

import msgspec
import pytest

from tocsin.common.broker import DELIVER_NOTIFICATION_ACTOR, NOTIFICATIONS_QUEUE
from tocsin.common.models import StoredAlert
from tocsin.common.queue import encode_message
from tocsin.processor.lifecycle import notification_message

RECORD = StoredAlert(
    id="a1", fingerprint="f", name="disk é", severity="critical", status="firing", source="s",
    service="db", summary="full", labels={"host": "db-1"}, annotations={}, producer="p",
    count=1, first_seen="2026-01-01T00:00:00.000Z", last_seen="2026-01-01T00:00:00.000Z",
)  # fmt: skip


@pytest.mark.parametrize(
    "traceparent", ["", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"]
)
def test_notification_message_decodes_as_encode_message_would_write_it(traceparent: str) -> None:
    text = msgspec.json.encode(RECORD)
    ours = notification_message("a1:1", "firing", text, 1_800_000_000.123, traceparent)
    request = {"id": "a1:1", "transition": "firing", "alert": msgspec.to_builtins(RECORD),
               "at": 1_800_000_000.123}  # fmt: skip
    theirs = encode_message(
        NOTIFICATIONS_QUEUE,
        DELIVER_NOTIFICATION_ACTOR,
        (request,),
        message_id="a1:1",
        options={"traceparent": traceparent} if traceparent else None,
        timestamp_ms=1_800_000_000_123,
    )
    assert json.loads(ours) == json.loads(theirs)
