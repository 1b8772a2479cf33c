"""Dramatiq's Redis layout, written down once, and the message encoding.

Dramatiq's RedisBroker keeps, per queue, under its namespace (`tocsin:dramatiq`):

| key | type | holds |
| --- | --- | --- |
| `{ns}:{queue}` | list | ids of messages waiting to be fetched |
| `{ns}:{queue}.msgs` | hash | message id -> encoded message (Dramatiq's `Message.encode()`) |
| `{ns}:{queue}.DQ`, `.DQ.msgs` | list, hash | delayed messages (an `eta` option), same shape |
| `{ns}:__acks__.{worker}.{queue}` | set | ids fetched by a worker and not yet acked |
| `{ns}:__heartbeats__` | sorted set | worker id by its last heartbeat (ms) |
| `{ns}:{queue}.XQ`, `.XQ.msgs` | sorted set, hash | dead-lettered message ids by time, data |

Tocsin adds per queue `tocsin:wake:{queue}`, a short list of wake-up tokens
pushed with every enqueue, on which idle consumers block instead of polling;
and, for messages admitted with a weight (ingest: the alerts a message
carries), `{ns}:{queue}.weights` (hash id -> weight) and `{ns}:{queue}.backlog`
(the sum of the weights not yet acked), so the backlog bound counts alerts.
Enqueueing is `HSET {queue}.msgs id data`, `RPUSH {queue} id`, then
`RPUSH` a token and `LTRIM` the list to `WAKEUP_TOKENS_KEPT`. A Lua script that
hands messages over as part of a larger atomic step (the processor's apply
step) declares the three keys of `QueueKeys` in its KEYS and receives messages
already encoded by `encode_message`, so no script builds a message's JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from dramatiq.common import current_millis, q_name

from tocsin.common import keys

__all__ = [
    "WAKEUP_TOKENS_KEPT",
    "QueueKeys",
    "dead_letter_keys",
    "encode_message",
    "queue_keys",
]

# How many wake-up tokens a queue's wake-up list keeps: enough to wake every
# idle consumer, few enough that an idle list costs nothing.
WAKEUP_TOKENS_KEPT = 8

_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """The Redis keys through which messages are handed to one queue."""

    pending: str  # list of waiting message ids
    messages: str  # hash: message id -> encoded message
    wakeup: str  # list of wake-up tokens idle consumers block on
    # hash: message id -> its weight (alerts it carries), for messages admitted with one
    weights: str = ""
    # string: the sum of the weights of messages not yet acked (the backlog, in alerts)
    backlog: str = ""

    def as_list(self) -> list[str]:
        """The keys in the order scripts declare them (KEYS[n..n+2])."""
        return [self.pending, self.messages, self.wakeup]


def queue_keys(queue: str) -> QueueKeys:
    """The keys of `queue` under Tocsin's Dramatiq namespace."""
    pending = f"{keys.DRAMATIQ_NAMESPACE}:{queue}"
    return QueueKeys(
        pending=pending,
        messages=f"{pending}.msgs",
        wakeup=keys.queue_wakeup(queue),
        weights=f"{pending}.weights",
        backlog=f"{pending}.backlog",
    )


def dead_letter_keys(queue: str) -> tuple[str, str]:
    """The dead-letter set and message hash of `queue` (a delay queue's are its queue's)."""
    dead = f"{keys.DRAMATIQ_NAMESPACE}:{q_name(queue)}.XQ"
    return dead, f"{dead}.msgs"


def encode_message(
    queue: str,
    actor: str,
    args: tuple[Any, ...],
    *,
    message_id: str,
    options: dict[str, Any] | None = None,
    timestamp_ms: int | None = None,
) -> bytes:
    """A message for `actor`, encoded as Dramatiq's broker would enqueue it.

    `message_id` doubles as the Redis message id, so a step that runs twice
    (a redelivery after a crash) writes the same message, not a second one.
    """
    # Dramatiq's `Message.encode()` is `json.dumps(message.asdict())`; msgspec writes
    # the same object (same members, same order) several times faster and also
    # takes msgspec Structs in `args`. The contract tests hold the two equal.
    return _encoder.encode({
        "queue_name": queue,
        "actor_name": actor,
        "args": args,
        "kwargs": {},
        "options": {**(options or {}), "redis_message_id": message_id},
        "message_id": message_id,
        "message_timestamp": timestamp_ms if timestamp_ms is not None else current_millis(),
    })  # fmt: skip
