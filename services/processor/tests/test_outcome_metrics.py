"""Outcome metrics are tallied per batch yet count exactly one per outcome."""

from __future__ import annotations

from prometheus_client import REGISTRY

from tocsin.processor.lifecycle import Outcome
from tocsin.processor.processing import _count


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_tallied_outcomes_count_each_message_transition_and_notification_once() -> None:
    outcomes = [
        Outcome("created", "a1", ("firing",)),
        Outcome("created", "a2", ("firing",)),
        Outcome("duplicate", "a1", ()),
        Outcome("duplicate", "a1", ()),
        Outcome("duplicate", "a2", ()),
        Outcome("resolved", "a2", ("resolved",)),
        Outcome("replayed", "a1", ()),
    ]
    names = (
        ("tocsin_processor_messages_total", {"outcome": "created"}, 2),
        ("tocsin_processor_messages_total", {"outcome": "duplicate"}, 3),
        ("tocsin_processor_messages_total", {"outcome": "replayed"}, 1),
        ("tocsin_processor_deduplicated_total", {}, 3),
        ("tocsin_processor_transitions_total", {"kind": "created"}, 2),
        ("tocsin_processor_transitions_total", {"kind": "resolved"}, 1),
        ("tocsin_processor_transitions_total", {"kind": "replayed"}, 0),
        ("tocsin_processor_notifications_total", {"transition": "firing"}, 2),
        ("tocsin_processor_notifications_total", {"transition": "resolved"}, 1),
        ("tocsin_cache_invalidations_total", {"tag": "alerts"}, 3),
    )
    before = [sample(name, **labels) for name, labels, _ in names]
    _count(outcomes)
    for (name, labels, expected), was in zip(names, before, strict=True):
        assert sample(name, **labels) - was == expected, (name, labels)
