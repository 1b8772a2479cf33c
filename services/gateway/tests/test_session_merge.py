"""The merge by offset: history and buffered live frames overlap, the socket sees each once."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tocsin.common.auth import Claims
from tocsin.gateway.frames import event_frame
from tocsin.gateway.metrics import Stats
from tocsin.gateway.node import Node
from tocsin.gateway.session import Position, Session
from tocsin.gateway.settings import GatewaySettings


def frame(offset: int, epoch: str = "e1") -> Any:
    raw = json.dumps(
        {"type": "event", "channel": "alerts", "offset": offset, "epoch": epoch, "data": {}},
        separators=(",", ":"),
    ).encode()
    return event_frame("alerts", raw)


async def merged(start: int, history: list[int], live: list[int]) -> list[int]:
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(json.loads(message["text"]))

    async def receive() -> Any:
        await asyncio.Event().wait()

    node = Node(GatewaySettings(), None, None, None, Stats())  # type: ignore[arg-type]
    claims = Claims("someone", frozenset(), ("*",), None, {})
    session = Session(node, claims, send, receive)
    position = Position()
    position.epoch, position.offset, position.buffer = "e1", start, None
    session.positions["alerts"] = position
    # What `_recover` does: history first, then the live frames buffered meanwhile.
    for offset in history + live:
        session._accept(position, frame(offset))
    if session._writer is not None:
        await session._writer
    return [f["offset"] for f in sent]


@settings(max_examples=60, deadline=None)
@given(
    start=st.integers(min_value=0, max_value=50),
    missed=st.integers(min_value=0, max_value=30),
    overlap=st.integers(min_value=0, max_value=30),
    more=st.integers(min_value=0, max_value=30),
)
def test_overlapping_history_and_live_frames_deliver_each_offset_once_in_order(
    start: int, missed: int, overlap: int, more: int
) -> None:
    last_history = start + missed
    first_live = max(start + 1, last_history + 1 - overlap)
    history = list(range(start + 1, last_history + 1))
    live = list(range(first_live, last_history + more + 1))
    offsets = asyncio.run(merged(start, history, live))
    assert offsets == list(range(start + 1, last_history + more + 1))


def test_a_new_epoch_is_announced_as_not_recovered_before_its_events() -> None:
    sent: list[dict[str, Any]] = []

    async def run() -> None:
        async def send(message: Any) -> None:
            sent.append(json.loads(message["text"]))

        async def receive() -> Any:
            await asyncio.Event().wait()

        node = Node(GatewaySettings(), None, None, None, Stats())  # type: ignore[arg-type]
        session = Session(node, Claims("x", frozenset(), ("*",), None, {}), send, receive)
        position = Position()
        position.epoch, position.offset, position.buffer = "e1", 40, None
        session.positions["alerts"] = position
        session.deliver(frame(1, epoch="e2"))
        session.deliver(frame(2, epoch="e2"))
        if session._writer is not None:
            await session._writer

    asyncio.run(run())
    assert [(f["type"], f.get("recovered")) for f in sent] == [
        ("subscribed", False),
        ("event", None),
        ("event", None),
    ]
    assert (sent[0]["epoch"], sent[0]["offset"]) == ("e2", 0)
