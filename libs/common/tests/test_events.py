"""The publish script and channel names, against a real server."""

import json

import pytest
import redis

from tocsin.client.devserver import RedisServer
from tocsin.common import keys
from tocsin.common.events import EventPublisher, InvalidChannelError, alert_channels


def test_publish_assigns_consecutive_offsets_per_channel(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    pubsub = client.pubsub()
    pubsub.subscribe(keys.live("alerts"))
    pubsub.get_message(timeout=1)
    publisher = EventPublisher(client, stream_cap=100)
    first = publisher.publish(["alerts", "alerts.team.ops"], '{"n":1}', "00-abc-def-01")
    second = publisher.publish(["alerts"], '{"n":2}')
    assert first[:2] == [1, 1]
    assert second[0] == 2
    assert first[2] == second[1], "the epoch of a channel is stable"
    live = pubsub.get_message(timeout=2)
    assert live is not None
    frame = json.loads(live["data"])
    assert frame == {
        "type": "event",
        "channel": "alerts",
        "offset": 1,
        "epoch": first[2].decode(),
        "data": {"n": 1},
        "traceparent": "00-abc-def-01",
    }
    history = client.xrange(keys.channel_stream("alerts"))
    assert [entry_id for entry_id, _ in history] == [b"1-1", b"2-1"]


def test_a_lost_channel_gets_a_new_epoch_and_restarts_its_offsets(
    redis_server: RedisServer,
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    publisher = EventPublisher(client)
    before = publisher.publish(["alerts"], "{}")
    redis_server.restart()
    client = redis.Redis.from_url(redis_server.url)
    after = EventPublisher(client).publish(["alerts"], "{}")
    assert after[0] == 1
    assert after[1] != before[1]


def test_channel_names_that_would_break_json_are_refused(redis_server: RedisServer) -> None:
    publisher = EventPublisher(redis.Redis.from_url(redis_server.url))
    with pytest.raises(InvalidChannelError):
        publisher.publish(['alerts"x'], "{}")


def test_alert_channels_sanitise_values() -> None:
    assert alert_channels("web api", "critical", "") == [
        "alerts",
        "alerts.severity.critical",
        "alerts.service.web_api",
    ]
