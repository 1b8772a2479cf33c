"""The lifecycle rules per producer, on the pure model (docs/lifecycle.md, one test per rule)."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import count
from typing import Any

from services.processor.tests.memory_store import MemoryStore

from tocsin.common.models import AlertAction, AlertIn, QueuedAlert
from tocsin.processor.rules import Policy

T0 = 1_800_000_000.0
_serial = count()


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(T0 + seconds, UTC)


def message(
    path: str = "native",
    status: str = "firing",
    received: float = 0.0,
    fp: str = "fp",
    **alert: Any,
) -> QueuedAlert:
    fields: dict[str, Any] = {"name": "disk", "severity": "warning", "status": status, **alert}
    return QueuedAlert(
        id=f"m{next(_serial)}",
        fingerprint=fp,
        received_at=T0 + received,
        producer="p",
        alert=AlertIn(**fields),
        path=path,  # type: ignore[arg-type]
    )


def send(store: MemoryStore, queued: QueuedAlert, now: float | None = None) -> str:
    when = queued.received_at if now is None else T0 + now
    return store.message(queued, silenced=False, now=when).outcome


def test_alertmanager_webhook_alert_is_never_resolved_by_a_timer() -> None:
    store = MemoryStore(Policy(resolve_timeout=5.0))
    send(store, message("alertmanager", starts_at=at(0)))
    assert store.sweep(T0 + 86_400) == []
    assert store.current("fp").status == "firing"  # type: ignore[union-attr]


def test_alertmanager_resolved_message_resolves_at_its_ends_at() -> None:
    store = MemoryStore()
    send(store, message("alertmanager", starts_at=at(0)))
    assert (
        send(store, message("alertmanager", "resolved", 70, starts_at=at(0), ends_at=at(60)))
        == "resolved"
    )
    record = store.current("fp")
    assert record is not None
    assert record.status == "resolved"
    assert record.resolved_at == "2027-01-15T08:01:00.000Z"
    assert store.notifications == [(record.id, "firing"), (record.id, "resolved")]


def test_alertmanager_fallback_timeout_resolves_webhook_alerts_when_set() -> None:
    store = MemoryStore(Policy(alertmanager_resolve_timeout=600.0))
    send(store, message("alertmanager", starts_at=at(0)))
    assert [d.outcome for d in store.sweep(T0 + 599)] == []
    assert [d.outcome for d in store.sweep(T0 + 601)] == ["resolved"]


def test_push_resolves_at_ends_at_unless_refreshed_before_it() -> None:
    store = MemoryStore()
    send(store, message("prometheus", starts_at=at(0), ends_at=at(60)))
    send(store, message("prometheus", received=50, starts_at=at(0), ends_at=at(120)))
    assert store.sweep(T0 + 100) == []
    [expired] = store.sweep(T0 + 130)
    assert expired.outcome == "resolved"
    record = store.current("fp")
    assert record is not None
    assert record.resolved_at == "2027-01-15T08:02:00.000Z", "resolved at endsAt, not at the sweep"
    assert record.count == 2


def test_push_without_ends_at_resolves_after_the_resolve_timeout() -> None:
    store = MemoryStore(Policy(resolve_timeout=300.0))
    send(store, message("prometheus", starts_at=at(0)))
    assert store.sweep(T0 + 299) == []
    assert [d.outcome for d in store.sweep(T0 + 300)] == ["resolved"]


def test_pagerduty_resolve_of_an_unknown_key_creates_nothing() -> None:
    store = MemoryStore()
    assert send(store, message("pagerduty", "resolved")) == "unknown"
    assert store.records == {}
    assert store.states == {}


def test_pagerduty_acknowledge_of_an_unknown_key_creates_nothing() -> None:
    store = MemoryStore()
    action = AlertAction(id="a1", action="acknowledge", fingerprint="fp", by="pd")
    assert store.action(action, T0).outcome == "unknown"
    assert store.records == {}


def test_pagerduty_resolve_is_not_an_occurrence_and_no_timer_resolves_a_trigger() -> None:
    store = MemoryStore(Policy(resolve_timeout=5.0))
    send(store, message("pagerduty"))
    assert store.sweep(T0 + 86_400) == []
    assert send(store, message("pagerduty", "resolved", 10)) == "resolved"
    record = store.current("fp")
    assert record is not None
    assert (record.status, record.count) == ("resolved", 1)


def test_firing_redelivered_after_its_resolve_is_stale_and_pages_nothing() -> None:
    store = MemoryStore()
    firing = message("alertmanager", starts_at=at(0))
    send(store, firing)
    send(store, message("alertmanager", "resolved", 60, starts_at=at(0), ends_at=at(55)))
    notified = list(store.notifications)
    # The same incident's firing message, under a new message id (a producer re-send).
    again = message("alertmanager", received=0, starts_at=at(0))
    assert send(store, again, now=120) == "outdated"
    record = store.current("fp")
    assert record is not None
    assert record.status == "resolved"
    assert store.notifications == notified
    assert store.timelines[record.id][-1] == "stale"


def test_firing_without_starts_at_older_than_the_resolve_is_stale() -> None:
    store = MemoryStore()
    send(store, message(received=0))
    send(store, message(status="resolved", received=30))
    assert send(store, message(received=20), now=40) == "outdated"
    assert store.current("fp").status == "resolved"  # type: ignore[union-attr]


def test_new_starts_at_after_a_resolve_is_a_new_incident() -> None:
    store = MemoryStore()
    send(store, message("alertmanager", starts_at=at(0)))
    first = store.current("fp")
    send(store, message("alertmanager", "resolved", 60, starts_at=at(0), ends_at=at(55)))
    assert send(store, message("alertmanager", received=200, starts_at=at(190))) == "created"
    second = store.current("fp")
    assert first is not None
    assert second is not None
    assert second.id != first.id
    assert store.notifications[-1] == (second.id, "firing")


def test_slow_resends_of_one_incident_page_once() -> None:
    store = MemoryStore(Policy(window=60.0))
    for minute in range(0, 600, 120):  # every 2 minutes, beyond the 1-minute window
        send(store, message("alertmanager", received=minute, starts_at=at(0)))
    assert [kind for _, kind in store.notifications] == ["firing"]
    assert store.current("fp").count == 5  # type: ignore[union-attr]


def test_without_starts_at_a_repeat_after_the_window_fires_again() -> None:
    store = MemoryStore(Policy(window=60.0))
    send(store, message(received=0))
    assert send(store, message(received=120)) == "refired"
    assert [kind for _, kind in store.notifications] == ["firing", "firing"]


def test_resolve_older_than_the_open_incident_is_stale() -> None:
    store = MemoryStore()
    send(store, message("alertmanager", starts_at=at(100), received=100))
    old = message("alertmanager", "resolved", 110, starts_at=at(0), ends_at=at(50))
    assert send(store, old) == "outdated"
    assert store.current("fp").status == "firing"  # type: ignore[union-attr]


def test_out_of_order_firing_counts_but_does_not_change_severity() -> None:
    store = MemoryStore()
    send(store, message(received=10, severity="critical"))
    assert send(store, message(received=5, severity="info"), now=11) == "duplicate"
    record = store.current("fp")
    assert record is not None
    assert (record.severity, record.count) == ("critical", 2)


def test_throttled_updates_are_followed_by_a_trailing_update_with_the_last_count() -> None:
    store = MemoryStore(Policy(update_interval=1.0))
    outcomes = [store.message(message(received=i * 0.1), False, T0 + i * 0.1) for i in range(4)]
    assert [d.outcome for d in outcomes] == ["created", "duplicate", "duplicate", "duplicate"]
    assert [d.merged for d in outcomes] == [False, False, True, True]
    assert store.events[-1][2] == 2
    assert store.trailing("fp", since=T0 + 0.3, now=T0 + 1.2).outcome == "updated"
    assert store.events[-1] == ("alert.updated", outcomes[0].alert_id, 4)


def test_a_trailing_update_already_carried_by_a_later_event_is_not_sent() -> None:
    store = MemoryStore(Policy(update_interval=1.0))
    for i in range(3):
        store.message(message(received=i * 0.1), False, T0 + i * 0.1)
    store.message(message(received=1.5), False, T0 + 1.5)  # published: carries count 4
    assert store.trailing("fp", since=T0 + 0.2, now=T0 + 1.6).outcome == "unchanged"


def test_timestamps_are_rfc3339_utc_milliseconds_with_z() -> None:
    store = MemoryStore()
    send(store, message(starts_at=datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)))
    record = store.current("fp")
    assert record is not None
    assert record.starts_at == "2026-01-02T03:04:05.123Z"
    assert record.first_seen.endswith("Z")
    assert len(record.first_seen) == len("2026-01-02T03:04:05.123Z")
