"""Admitting a request's work onto the alerts queue in one atomic Redis script.

`Admission.admit_command` replays an earlier answer for a repeated Idempotency-Key,
refuses work when the queue's backlog (in alerts) is past its bound or the
producer's token bucket is empty, and otherwise enqueues one message through
the queue layer's keys (`tocsin.common.queue`): Dramatiq's layout, a wake-up
token an idle processor blocks on, and the message's weight in alerts, which
counts in the backlog until the processor acks it. It runs over one pipelined
connection, without a blocking client on ingest's event loop.
"""

from __future__ import annotations

import enum
import hashlib
import random
from collections.abc import Awaitable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from tocsin.common import keys
from tocsin.common.pipelining import PipelinedRedis, RedisReplyError, bulk
from tocsin.common.queue import WAKEUP_TOKENS_KEPT, queue_keys
from tocsin.common.queue import encode_message as queue_encode

__all__ = ["Admission", "Outcome", "Verdict", "encode_message", "needs_script", "verdict"]

_ADMIT_LUA = resources.files("tocsin.ingest").joinpath("admission/admit.lua").read_text()
_ADMIT_SHA = hashlib.sha1(_ADMIT_LUA.encode()).hexdigest()
# `EVALSHA sha 7` / `EVAL script 7`: 7 keys then 10 arguments, 20 array items in all.
_EVALSHA_HEAD = b"*20\r\n" + bulk(b"EVALSHA") + bulk(_ADMIT_SHA.encode()) + bulk(b"7")
_EVAL_HEAD = b"*20\r\n" + bulk(b"EVAL") + bulk(_ADMIT_LUA.encode()) + bulk(b"7")


class Outcome(enum.Enum):
    """What became of a request at admission."""

    ENQUEUED = 0
    REPLAYED = 1
    RATE_LIMITED = 2
    BACKLOGGED = 3
    # The Idempotency-Key was first used for another request (endpoint or body).
    KEY_REUSED = 4


@dataclass(frozen=True)
class Verdict:
    """The outcome, with the first answer (replayed) or the wait in seconds (refused)."""

    outcome: Outcome
    replay: bytes = b""
    retry_after: int = 0


_OUTCOMES = tuple(sorted(Outcome, key=lambda outcome: outcome.value))  # by the script's number
_ENQUEUED = Verdict(Outcome.ENQUEUED)
# Producers whose rate-bucket key is kept encoded (names are few; the bound is for safety).
_PRODUCERS_KEPT = 10_000

# The version (4) and variant (RFC 4122) bits of a version-4 UUID.
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def _unique_id() -> str:
    """A random version-4 UUID string, from the seeded PRNG rather than a system call.

    Formatted directly rather than through `uuid.UUID`: two are made per request.
    """
    digits = f"{random.getrandbits(128) & _UUID4_CLEAR | _UUID4_SET:032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def encode_message(
    queue: str, actor: str, args: tuple[Any, ...], options: dict[str, Any]
) -> tuple[str, bytes]:
    """A new message for the queue layer; returns its id and encoded form.

    The id is fresh per request, and is both the message id and the Redis id:
    Dramatiq's retries re-enqueue a copy under an id of their own.
    """
    message_id = _unique_id()
    return message_id, queue_encode(queue, actor, args, message_id=message_id, options=options)


class Admission:
    """The alerts queue as ingest sees it: bounded, rate limited per producer, idempotent."""

    def __init__(
        self,
        redis: PipelinedRedis,
        queue: str,
        *,
        rate_per_second: float,
        burst: int,
        max_backlog: int,
        idempotency_ttl: int,
    ) -> None:
        self._redis = redis
        names = queue_keys(queue)
        self._placeholder_key = names.pending
        self._queue_keys = b"".join(
            bulk(key.encode()) for key in (*names.as_list(), names.weights, names.backlog)
        )
        self._rate_and_burst = bulk(repr(float(rate_per_second)).encode()) + bulk(b"%d" % burst)
        self._backlog_bound = bulk(b"%d" % max_backlog)
        self._ttl = bulk(b"%d" % idempotency_ttl)
        self._tokens_kept = bulk(b"%d" % WAKEUP_TOKENS_KEPT)
        # Each producer's rate-bucket key as a bulk string, made once rather than per request.
        self._rate_buckets: dict[str, bytes] = {}

    async def admit_command(self, command: bytes) -> Verdict:
        """Run `command` (from `command`): enqueue its message unless refused.

        Raises a `StoreError` (see `PipelinedRedis`): `OutcomeUnknownError` when the
        connection failed after the script was sent, `StoreUnavailableError` when Redis
        cannot be reached or stops answering before, `RedisReplyError` when it refuses
        the script.
        """
        try:
            result = await self.send(command)
        except RedisReplyError as exc:
            if not needs_script(exc):
                raise
            result = await self.send(command, cached=False)
        return verdict(result)

    def command(
        self,
        producer: str,
        message_id: str,
        message: bytes,
        *,
        cost: int,
        answer: bytes,
        idempotency_key: str = "",
        request_digest: bytes = b"",
    ) -> bytes:
        """The script's keys and arguments for `admit_command` (or `send`).

        `answer` is kept for replays of `idempotency_key`; `request_digest` (64 hex
        digits: endpoint and body) is stored with it: the key replays only for the
        same request, and is `KEY_REUSED` for any other, as the IETF Idempotency-Key
        draft asks.
        """
        idempotency = keys.idempotency(producer, idempotency_key) if idempotency_key else ""
        rate_bucket = self._rate_buckets.get(producer)
        if rate_bucket is None:
            if len(self._rate_buckets) >= _PRODUCERS_KEPT:
                self._rate_buckets.clear()
            rate_bucket = self._rate_buckets[producer] = bulk(keys.rate_bucket(producer).encode())
        # The command is assembled from bulk strings prepared once per Admission:
        # this runs for every request, so it avoids re-encoding the constant parts.
        return b"".join((
            rate_bucket,
            self._queue_keys,
            bulk((idempotency or self._placeholder_key).encode()),
            self._rate_and_burst,
            bulk(b"%d" % cost),
            self._backlog_bound,
            bulk(message_id.encode()),
            bulk(message),
            # The script compares and strips the digest's 64 characters before a replay.
            bulk(request_digest.rjust(64, b"0") + answer if idempotency else answer),
            self._ttl,
            bulk(b"1" if idempotency else b"0"),
            self._tokens_kept,
        ))  # fmt: skip

    def send(self, command: bytes, *, cached: bool = True) -> Awaitable[Any]:
        """Run the script on `command` (from `command`); its reply is read by `verdict`.

        `cached` sends the script's hash (EVALSHA); a reply that `needs_script`
        asks for the call again with `cached=False`, which sends the script
        itself (EVAL, which also caches it on the server).
        """
        return self._redis.execute_encoded((_EVALSHA_HEAD if cached else _EVAL_HEAD) + command)


def needs_script(exc: RedisReplyError) -> bool:
    """Whether the server refused EVALSHA for not knowing the script (first call, restart)."""
    return str(exc).startswith("NOSCRIPT")


def verdict(result: list[Any]) -> Verdict:
    """The admission script's reply as a `Verdict`."""
    outcome = _OUTCOMES[result[0]]
    if outcome is Outcome.ENQUEUED:
        return _ENQUEUED
    value: bytes = result[1] if isinstance(result[1], bytes) else str(result[1]).encode()
    if outcome is Outcome.REPLAYED:
        return Verdict(outcome, replay=value)
    if outcome is Outcome.RATE_LIMITED:
        return Verdict(outcome, retry_after=max(1, -(-int(value) // 1000)))
    return Verdict(outcome)
