"""Retry policy, Retry-After, HTTP outcome mapping, signatures, rate syntax and templates."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpcore
import pytest

from tocsin.common.models import StoredAlert
from tocsin.notifier.dispatch import DeliveryPolicy, retry_delay
from tocsin.notifier.message import GroupedAlert, Notification
from tocsin.notifier.ratelimit import Rate
from tocsin.notifier.receivers import PermanentDeliveryError, TemporaryDeliveryError
from tocsin.notifier.receivers._http import post, retry_after_seconds
from tocsin.notifier.receivers.slack import SlackReceiver
from tocsin.notifier.receivers.webhook import WebhookReceiver, sign, verify
from tocsin.notifier.templating import Templates
from tocsin.notifier.tools import preview

POLICY = DeliveryPolicy(min_backoff=0.5, max_backoff=30.0)


def test_backoff_grows_exponentially_with_jitter_and_stops_at_the_cap() -> None:
    rng = random.Random(7)
    for attempt in range(12):
        base = min(30.0, 0.5 * 2**attempt)
        delay = retry_delay(attempt, POLICY, rng=rng)
        assert base / 2 <= delay <= base


def test_retry_after_is_honoured_when_longer_than_the_backoff() -> None:
    assert retry_delay(0, POLICY, retry_after=12.0) == 12.0
    assert retry_delay(0, POLICY, retry_after=10**9) == 3600.0


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after_seconds("7") == 7.0
    later = datetime.now(UTC) + timedelta(seconds=60)
    assert 55 <= (retry_after_seconds(format_datetime(later, usegmt=True)) or 0) <= 61
    assert retry_after_seconds("soon") is None


class OneAnswer:
    """httpcore's pool interface answering every request with one response, or raising:
    the outcome mapping is pure logic (the wire is tested in test_sendloop)."""

    def __init__(self, status: int = 200, error: Exception | None = None) -> None:
        self.status = status
        self.error = error

    @contextlib.asynccontextmanager
    async def stream(self, *args: Any, **kwargs: Any) -> AsyncIterator[httpcore.Response]:
        if self.error is not None:
            raise self.error
        yield httpcore.Response(self.status, headers=[(b"Retry-After", b"3")], content=b"answer")


def post_once(pool: OneAnswer) -> None:
    asyncio.run(post(pool, "http://receiver.test/", b"{}", {}, 1.0))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (500, TemporaryDeliveryError),
        (503, TemporaryDeliveryError),
        (429, TemporaryDeliveryError),
        (400, PermanentDeliveryError),
        (404, PermanentDeliveryError),
        (401, PermanentDeliveryError),
    ],
)
def test_5xx_and_429_are_temporary_and_other_4xx_permanent(status: int, outcome: type) -> None:
    with pytest.raises(outcome) as caught:
        post_once(OneAnswer(status))
    if outcome is TemporaryDeliveryError:
        assert caught.value.retry_after == 3.0


def test_a_2xx_is_delivered() -> None:
    post_once(OneAnswer(204))


def test_a_timeout_is_temporary() -> None:
    with pytest.raises(TemporaryDeliveryError, match="timeout"):
        post_once(OneAnswer(error=httpcore.ReadTimeout("slow")))


def test_a_connection_error_is_temporary() -> None:
    with pytest.raises(TemporaryDeliveryError, match="transport error"):
        post_once(OneAnswer(error=httpcore.ConnectError("refused")))


def test_signature_verifies_only_the_signed_body_with_the_right_secret_while_fresh() -> None:
    now = int(time.time())
    header = sign("s3cret", b'{"a":1}', now)
    assert verify("s3cret", b'{"a":1}', header)
    assert not verify("s3cret", b'{"a":2}', header)
    assert not verify("other", b'{"a":1}', header)
    assert not verify("s3cret", b'{"a":1}', sign("s3cret", b'{"a":1}', now - 3600))
    assert not verify("s3cret", b'{"a":1}', "garbage")


def test_rate_limit_syntax() -> None:
    assert Rate.parse("10/s") == Rate(10, 1.0)
    assert Rate.parse("30/1m") == Rate(30, 60.0)
    with pytest.raises(ValueError, match="COUNT/PERIOD"):
        Rate.parse("fast")


def notification() -> Notification:
    alert = StoredAlert(
        id="a1",
        fingerprint="fp",
        name="DiskFull",
        severity="critical",
        status="firing",
        source="",
        service="db",
        summary="disk at 99%",
        labels={},
        annotations={},
        producer="",
        count=1,
        first_seen="",
        last_seen="",
    )
    return Notification(
        id="n1",
        receiver="r",
        receiver_type="webhook",
        group_key="g",
        group_labels={"alertname": "DiskFull"},
        state_hash="s",
        status="firing",
        alerts=[GroupedAlert(transition="firing", status="firing", alert=alert)],
        firing_count=1,
        resolved_count=0,
        truncated=False,
        created_at=0.0,
    )


def test_webhook_body_can_be_a_user_template() -> None:
    receiver = WebhookReceiver(
        "r",
        {
            "url": "http://x.test/",
            "templates": {"body": '{"text": "{{ alerts[0].alert.name }} is {{ status }}"}'},
        },
        Templates(),
        1.0,
    )
    assert receiver.body(notification()) == b'{"text": "DiskFull is firing"}'


def test_templates_are_sandboxed() -> None:
    receiver = SlackReceiver(
        "r",
        {
            "url": "http://x.test/",
            "templates": {"title": "{{ ''.__class__.__mro__[1].__subclasses__() }}"},
        },
        Templates(),
        1.0,
    )
    with pytest.raises(Exception, match=r"unsafe|not safely|access"):
        receiver.payload(notification())


def test_a_template_that_does_not_compile_is_refused_when_the_receiver_is_built() -> None:
    with pytest.raises(ValueError, match="template 'title'"):
        SlackReceiver(
            "r",
            {"url": "http://x.test/", "templates": {"title": "{{ oops"}},
            Templates(),
            1.0,
        )


def test_preview_renders_each_receiver_type_against_the_sample_alert() -> None:
    assert "HighErrorRate" in preview("slack")["payload"]["text"]
    assert preview("pagerduty")["events"][0]["event_action"] == "trigger"
    email = preview("email", alert={"name": "Custom"})
    assert "Custom" in email["subject"]
    assert "<li>" in email["html"]
    with pytest.raises(ValueError, match="unknown receiver type"):
        preview("fax")
