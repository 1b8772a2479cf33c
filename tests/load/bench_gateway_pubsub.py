"""Gateway pub/sub reading: CPU per event read, redis-py's `PubSub.get_message` against the
broker's `PushReader` (a few seconds).

The reader (this process) is pinned to one core, Redis and the publisher to the other.
Two shapes of traffic, each read both ways, alternating, three times:

- backlog: 20,000 events of 300 bytes published while the reader waits, then read
  (a burst: many events per socket read);
- paced: 2,000 events/s for 2 s (a steady flow: a few events per read).

Figures: the reader's CPU microseconds per event (user + system, this process).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Awaitable, Callable

import redis.asyncio as redis_async

from tests.load.harness import run_load, socket_bench_layout
from tocsin.gateway.pushes import PushReader, stream_of

CHANNEL = "live:bench"
BACKLOG = 20_000
PACED_RATE = 2_000
PACED_SECONDS = 2.0
ROUNDS = 3

PUBLISHER = """
import sys, time
import redis
url, channel, count, rate = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
client = redis.Redis.from_url(url)
payload = b"x" * 300
if rate <= 0:
    pipe = client.pipeline(transaction=False)
    for n in range(count):
        pipe.publish(channel, payload)
        if n % 1000 == 999:
            pipe.execute()
    pipe.execute()
else:
    start = time.perf_counter()
    for n in range(count):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        client.publish(channel, payload)
"""

Reader = Callable[[], Awaitable[int]]


async def _read_with_redis_py(pubsub: redis_async.client.PubSub) -> int:
    message = await pubsub.get_message(timeout=1.0)
    return 0 if message is None else 1


def _push_reader(reader: PushReader) -> Reader:
    async def read() -> int:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                return len(await reader.read())
        return 0

    return read


async def _measure(url: str, core: int, way: str, count: int, rate: float) -> float:
    client = redis_async.Redis.from_url(url)
    pubsub = client.pubsub()
    try:
        await pubsub.subscribe(CHANNEL)
        confirmation = await pubsub.get_message(timeout=5.0)
        assert confirmation is not None
        read: Reader
        if way == "redis-py":

            async def read() -> int:
                return await _read_with_redis_py(pubsub)
        else:
            read = _push_reader(PushReader(stream_of(pubsub)))
        publisher = await asyncio.create_subprocess_exec(
            sys.executable, "-c", PUBLISHER, url, CHANNEL, str(count), str(rate),
            preexec_fn=lambda: os.sched_setaffinity(0, {core}),
        )  # fmt: skip
        if rate <= 0:
            await publisher.wait()  # the whole backlog waits in the socket and Redis' buffer
        started = time.process_time()
        received = 0
        while received < count:
            got = await read()
            if got == 0 and publisher.returncode is not None:
                break
            received += got
        cpu = time.process_time() - started
        await publisher.wait()
        if received < count:
            print(f"  ({way}: {received} of {count} events read)")
        return cpu / max(received, 1) * 1e6
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await client.aclose()


async def run(url: str, load_core: int) -> None:
    rows: dict[tuple[str, str], list[float]] = {}
    for _ in range(ROUNDS):
        for shape, count, rate in (
            ("backlog", BACKLOG, 0.0),
            ("paced", int(PACED_RATE * PACED_SECONDS), float(PACED_RATE)),
        ):
            for way in ("redis-py", "PushReader"):
                figure = await _measure(url, load_core, way, count, rate)
                rows.setdefault((shape, way), []).append(figure)
    print(f"\nPub/sub events read: CPU us per event of the reading process ({ROUNDS} runs)")
    print(f"{'traffic':<10} {'reader':<12} {'us/event per run':>30}")
    for (shape, way), figures in rows.items():
        runs = " / ".join(f"{f:.1f}" for f in figures)
        print(f"{shape:<10} {way:<12} {runs:>30}")


def main() -> None:
    with socket_bench_layout() as (redis_server, server_core, load_core):
        os.sched_setaffinity(0, {server_core})
        run_load(run(redis_server.url, load_core))


if __name__ == "__main__":
    main()
