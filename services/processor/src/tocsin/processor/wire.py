"""Pipelines of commands the caller packed itself, sent on a pooled redis-py connection.

redis-py packs every argument of every command on each call (a type check and a
generator step per argument, then its own pipeline bookkeeping); with dozens of
arguments per lifecycle apply call that was a third of the processor's Python
time per alert. The lifecycle instead packs its calls from RESP chunks it keeps
(`RespChunks`: the script SHA, the shared keys, the index and channel keys) and
sends a batch here: written as it is packed, then the replies read in order.

Failures behave as a redis-py pipeline's: a connection error disconnects and the
whole batch is sent again under the client's retry policy (the lifecycle's calls
are guarded by version and message id, so a call that ran before the failure
changes nothing the second time: docs/queues.md, "Lost replies"), and an error reply raises the
first error once every reply has been read, so the connection stays in step.
`tests/test_wire.py` checks the replies against redis-py's own pipeline.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from redis import Redis
from redis.exceptions import ResponseError

from tocsin.common.pipelining import bulk

__all__ = ["RespChunks", "bulks", "execute_packed", "pack_command"]


class RespChunks:
    """RESP bulk strings of values that recur from call to call, encoded once.

    Bounded: index keys carry producer-chosen values (service, team), so the
    cache starts over when it reaches `limit` entries.
    """

    def __init__(self, limit: int = 10_000) -> None:
        self._chunks: dict[str, bytes] = {}
        self._limit = limit

    def __call__(self, value: str) -> bytes:
        chunk = self._chunks.get(value)
        if chunk is None:
            if len(self._chunks) >= self._limit:
                self._chunks.clear()
            chunk = self._chunks[value] = bulk(value.encode())
        return chunk


def bulks(values: Sequence[bytes]) -> bytes:
    """`values` as consecutive RESP bulk strings (one call for many: no call per value)."""
    return b"".join([b"$%d\r\n%b\r\n" % (len(value), value) for value in values])


def pack_command(name: bytes, bulks: Sequence[bytes]) -> bytes:
    """A command `name` whose arguments are already RESP bulk strings."""
    return b"*%d\r\n%b%b" % (len(bulks) + 1, bulk(name), b"".join(bulks))


def execute_packed(redis: Redis, commands: Iterable[bytes], flush_every: int = 8) -> list[Any]:
    """Send `commands` (each a packed RESP command); their replies, in order.

    `commands` may be a generator: every `flush_every` commands go out as they are
    built, so Redis runs the first while the caller packs the next ones (the two
    sit on different cores), and the replies are read once all are sent.
    """
    pool = redis.connection_pool
    connection = pool.get_connection()
    pending = iter(commands)
    sent: list[bytes] = []

    def attempt() -> list[Any]:
        if sent:  # a retry on a new connection: what was sent before goes again
            connection.send_packed_command([b"".join(sent)])  # type: ignore[no-untyped-call]
        batch: list[bytes] = []
        for command in pending:
            batch.append(command)
            if len(batch) == flush_every:
                # Counted as sent before the write: if it fails, the retry sends it.
                sent.extend(batch)
                connection.send_packed_command([b"".join(batch)])  # type: ignore[no-untyped-call]
                batch = []
        if batch:
            sent.extend(batch)
            connection.send_packed_command([b"".join(batch)])  # type: ignore[no-untyped-call]
        replies: list[Any] = []
        for _ in sent:
            try:
                replies.append(connection.read_response())
            except ResponseError as error:
                replies.append(error)
        return replies

    def drop(_error: BaseException) -> None:
        connection.disconnect()  # type: ignore[no-untyped-call]

    try:
        replies: list[Any] = connection.retry.call_with_retry(attempt, drop)
    except BaseException:
        # Replies may be left unread: the connection is out of step, so drop it.
        connection.disconnect()  # type: ignore[no-untyped-call]
        raise
    finally:
        pool.release(connection)
    for reply in replies:
        if isinstance(reply, ResponseError):
            raise reply
    return replies
