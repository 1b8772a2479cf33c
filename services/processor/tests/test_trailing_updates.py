"""Owed trailing updates go out once per fingerprint, one interval after the first merge."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tocsin.processor.lifecycle import Outcome
from tocsin.processor.processing import TrailingUpdates


class Recorder:
    """Stands in for the lifecycle: records what it is asked to publish."""

    def __init__(self) -> None:
        self.published: list[list[tuple[str, float]]] = []

    def publish_trailing(self, owed: Sequence[tuple[str, float]]) -> list[Outcome]:
        self.published.append(list(owed))
        return [Outcome("updated", fp, ()) for fp, _ in owed]


def test_owed_updates_are_published_once_after_the_interval_with_the_last_merge_time() -> None:
    clock = [100.0]
    recorder = Recorder()
    trailing = TrailingUpdates(recorder, 1.0, clock=lambda: clock[0])  # type: ignore[arg-type]
    trailing.owe("a")
    clock[0] = 100.4
    trailing.owe("b")
    clock[0] = 100.6
    trailing.owe("a")  # a later merge: the publish must postdate it, the due stays
    assert trailing.flush_due() == []
    clock[0] = 101.0
    assert [o.alert_id for o in trailing.flush_due()] == ["a"]
    clock[0] = 101.5
    assert [o.alert_id for o in trailing.flush_due()] == ["b"]
    assert trailing.flush_due() == []
    published: Any = recorder.published
    assert published == [[], [("a", 100.6)], [("b", 100.4)], []]
