"""The queue layer's public names, pinned: other services and engineers build on them."""

from __future__ import annotations

import tocsin.common.queue as queue


def test_queue_layer_exports_exactly_its_public_names_sorted() -> None:
    assert queue.__all__ == [
        "WAKEUP_TOKENS_KEPT",
        "BatchHandler",
        "Consumer",
        "Delivery",
        "QueueConsumerSettings",
        "QueueKeys",
        "QueueWakeup",
        "QueueWorker",
        "Recovery",
        "dead_letter_keys",
        "encode_message",
        "enqueue",
        "queue_keys",
    ]
    for name in queue.__all__:
        assert getattr(queue, name) is not None
