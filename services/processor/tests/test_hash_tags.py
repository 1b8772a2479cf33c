"""The keys of one apply call's alert share a Redis Cluster slot (hash tags by fingerprint)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from redis import Redis
from redis.crc import key_slot

from tocsin.client.devserver import RedisServer
from tocsin.common import keys
from tocsin.common.models import AlertAction, AlertIn, QueuedAlert, new_alert_id
from tocsin.common.redis import sync_client
from tocsin.common.silences import SilenceSet
from tocsin.processor.lifecycle import AlertLifecycle, LifecycleConfig


@pytest.fixture
def redis() -> Iterator[Redis]:
    with RedisServer() as server:
        yield sync_client(server.url)


def _slot(key: str) -> int:
    return int(key_slot(key.encode()))


def test_a_minted_alert_id_puts_its_keys_in_its_fingerprints_slot() -> None:
    for fingerprint in ("c0ffee1234567890", "pd-dedup-key with spaces", "{braces}", ""):
        alert_id = new_alert_id(fingerprint)
        slots = {
            _slot(keys.dedup(fingerprint)),
            _slot(keys.applied("any-message", fingerprint)),
            _slot(keys.alert(alert_id)),
            _slot(keys.timeline(alert_id)),
        }
        assert len(slots) == 1, fingerprint
        assert len(alert_id) == 32
        assert set(alert_id) <= set("0123456789abcdef")


def test_minted_ids_stay_time_ordered_and_unique() -> None:
    ids = [new_alert_id("fp") for _ in range(1000)]
    assert len(set(ids)) == 1000
    earlier = new_alert_id("fp")
    time.sleep(0.002)
    assert new_alert_id("another fingerprint")[:12] > earlier[:12]


def test_fingerprints_spread_over_the_cluster_slots() -> None:
    slots = {_slot(keys.dedup(f"fingerprint-{n}")) for n in range(2000)}
    assert len(slots) > 1800  # 2,000 fingerprints over 16,384 slots rarely collide


def test_an_alerts_record_timeline_state_and_applied_ids_share_one_slot(
    redis: Redis,
) -> None:
    lifecycle = AlertLifecycle(redis, LifecycleConfig())
    fingerprint = "a1b2c3d4e5f60718"
    queued = QueuedAlert(
        id=new_alert_id(fingerprint),
        fingerprint=fingerprint,
        received_at=time.time(),
        producer="p",
        alert=AlertIn(name="disk", severity="critical", service="db", labels={"team": "core"}),
    )
    [outcome] = lifecycle.apply_alerts([queued], SilenceSet())
    assert outcome.outcome == "created"
    acked = lifecycle.apply_action(
        AlertAction(id="ack-1", action="acknowledge", alert_id=queued.id, by="u"), time.time()
    )
    assert acked.outcome == "acknowledged"
    tag = keys.fingerprint_tag(fingerprint)
    per_alert = [key.decode() for key in redis.scan_iter(match=f"*{{{tag}}}*")]
    assert sorted(k.split("{")[0] for k in per_alert) == [
        "tocsin:alert:",
        "tocsin:applied:",
        "tocsin:applied:",
        "tocsin:dedup:",
        "tocsin:timeline:",
    ]
    assert len({_slot(key) for key in per_alert}) == 1
    assert redis.get(keys.alert(queued.id)) is not None
