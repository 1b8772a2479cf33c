"""A session's delivery through its public seam: `deliver` in, frames out of its outbox."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tocsin.common.auth import Claims
from tocsin.gateway.frames import Frame, event_frame
from tocsin.gateway.metrics import Stats
from tocsin.gateway.node import Node
from tocsin.gateway.position import Position
from tocsin.gateway.protocol import CloseCode
from tocsin.gateway.session import Session, SessionState
from tocsin.gateway.settings import GatewaySettings


def frame(offset: int, epoch: str = "e1") -> Frame:
    raw = json.dumps(
        {"type": "event", "channel": "alerts", "offset": offset, "epoch": epoch, "data": {}},
        separators=(",", ":"),
    ).encode()
    return event_frame("alerts", raw)


async def session_at(
    sent: list[dict[str, Any]], epoch: str, offset: int, **settings: Any
) -> Session:
    async def send(message: Any) -> None:
        if message["type"] == "websocket.send":
            sent.append(json.loads(message["text"]))

    async def receive() -> Any:
        await asyncio.Event().wait()

    node = Node(GatewaySettings(**settings), None, None, None, Stats())  # type: ignore[arg-type]
    session = Session(node, Claims("someone", frozenset(), ("*",), None), send, receive)
    session.positions["alerts"] = Position(epoch, offset, recovering=False)
    return session


def test_a_new_epoch_is_announced_as_not_recovered_before_its_events() -> None:
    sent: list[dict[str, Any]] = []

    async def run() -> None:
        session = await session_at(sent, "e1", 40)
        session.deliver(frame(1, epoch="e2"))
        session.deliver(frame(2, epoch="e2"))
        if session.writer is not None:
            await session.writer

    asyncio.run(run())
    assert [(f["type"], f.get("recovered")) for f in sent] == [
        ("subscribed", False),
        ("event", None),
        ("event", None),
    ]
    assert (sent[0]["epoch"], sent[0]["offset"]) == ("e2", 0)


def test_in_order_events_are_sent_once_and_repeats_are_not() -> None:
    sent: list[dict[str, Any]] = []

    async def run() -> None:
        session = await session_at(sent, "e1", 0)
        for offset in (1, 2, 2, 1, 3):
            session.deliver(frame(offset))
        if session.writer is not None:
            await session.writer
        assert session.delivered == 3

    asyncio.run(run())
    assert [f["offset"] for f in sent] == [1, 2, 3]


def test_an_outbox_past_its_bound_closes_the_session_as_a_slow_consumer() -> None:
    sent: list[dict[str, Any]] = []

    async def run() -> None:
        session = await session_at(sent, "e1", 0, outbound_queue_frames=4)
        # No wire: every frame queues, and the writer has not run yet.
        for offset in range(1, 7):
            session.deliver(frame(offset))
        assert session.state is SessionState.CLOSING
        assert session.close_code is CloseCode.SLOW_CONSUMER
        assert session.queued_frames == 0
        assert session.node.stats.dropped["slow_consumer"] == 4

    asyncio.run(run())
