"""The outbox (queue, writer, wire fast path, bounds) and the token lease, each alone."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from tocsin.common.auth import Claims, TokenError
from tocsin.gateway.frames import Frame, control_frame
from tocsin.gateway.lease import TokenLease
from tocsin.gateway.outbox import Outbox, WriterState
from tocsin.gateway.protocol import CloseCode
from tocsin.gateway.wheel import deadlines


class Socket:
    """A wire that takes frames while `open`, and an ASGI send that waits on `drained`."""

    def __init__(self) -> None:
        self.open = True
        self.written: list[bytes] = []
        self.sent: list[str] = []
        self.drained = asyncio.Event()
        self.drained.set()

    def write(self, data: bytes) -> bool:
        if self.open:
            self.written.append(data)
        return self.open

    async def send(self, message: Any) -> None:
        await self.drained.wait()
        self.sent.append(message["text"])


def text(number: int) -> Frame:
    return control_frame(json.dumps({"n": number}))


async def test_frames_go_straight_to_the_wire_while_nothing_waits() -> None:
    socket = Socket()
    outbox = Outbox(socket.send, socket, 8, 1 << 20)  # type: ignore[arg-type]
    for number in range(3):
        outbox.push(text(number))
    assert len(socket.written) == 3
    assert outbox.writer is None
    assert outbox.writer_state is WriterState.IDLE


async def test_a_backlog_is_sent_in_order_by_one_writer_and_later_frames_queue_behind_it() -> None:
    socket = Socket()
    socket.open = False
    socket.drained.clear()
    outbox = Outbox(socket.send, socket, 8, 1 << 20)  # type: ignore[arg-type]
    outbox.push(text(1))
    await asyncio.sleep(0)
    assert outbox.writer_state is WriterState.BLOCKED
    socket.open = True  # the wire would take it now, but order comes first
    outbox.push(text(2))
    assert socket.written == []
    socket.drained.set()
    writer = outbox.writer
    assert writer is not None
    await writer
    assert [json.loads(t)["n"] for t in socket.sent] == [1]
    assert [json.loads(w[2:])["n"] for w in socket.written] == [2]
    assert outbox.writer_state is WriterState.IDLE


async def test_a_queue_past_its_frame_bound_overflows_and_drop_empties_it() -> None:
    socket = Socket()
    socket.open = False
    socket.drained.clear()
    overflowed: list[int] = []

    class Bounded(Outbox):
        def overflow(self) -> None:
            overflowed.append(self.queued_frames)
            self.drop()

    outbox = Bounded(socket.send, socket, 3, 1 << 20)  # type: ignore[arg-type]
    outbox.push(text(0))
    await asyncio.sleep(0)  # the writer takes frame 0 and blocks on the socket
    for number in range(1, 5):
        outbox.push(text(number))
    assert overflowed == [3]
    assert outbox.queued_frames == 0
    await asyncio.sleep(0)
    assert outbox.writer is None  # the blocked writer was stopped


async def test_a_queue_past_its_byte_bound_overflows() -> None:
    socket = Socket()
    socket.open = False
    outbox = Outbox(socket.send, None, 100, 20)
    outbox.push(text(1))  # 8 bytes
    outbox.push(text(2))  # 16
    outbox.push(text(3))  # 24: past the bound, the queue is dropped
    assert outbox.queued_frames == 0


class Holder:
    """The socket a lease keeps: what it was told, and whether it was closed."""

    def __init__(self) -> None:
        self.told: list[dict[str, Any]] = []
        self.closed = asyncio.Event()
        self.close_code: CloseCode | None = None

    def send_control(self, text: str) -> None:
        self.told.append(json.loads(text))

    def close(self, code: CloseCode) -> None:
        self.close_code = code
        self.closed.set()


class Verifier:
    def __init__(self, claims: Claims | None) -> None:
        self.claims = claims

    def verify(self, token: str) -> Claims:
        if self.claims is None:
            raise TokenError("token_invalid", "bad signature")
        return self.claims


def claims(subject: str, expires_at: float | None, channels: tuple[str, ...] = ("*",)) -> Claims:
    return Claims(subject, frozenset({"read"}), channels, expires_at)


async def test_an_expired_token_is_warned_about_then_the_socket_closed_after_the_grace() -> None:
    holder = Holder()
    lease = TokenLease(
        claims("someone", time.time() - 1),
        Verifier(None),  # type: ignore[arg-type]
        holder,
        warning=30.0,
        grace=0.0,
    )
    lease.start()
    await asyncio.wait_for(holder.closed.wait(), 10)
    assert holder.close_code is CloseCode.TOKEN_EXPIRED
    assert [frame["type"] for frame in holder.told] == ["token_expiring"]
    assert holder.told[0]["grace"] == 0.0


async def test_a_refresh_keeps_the_subject_and_replaces_grant_and_timer() -> None:
    holder = Holder()
    verifier = Verifier(claims("someone", time.time() + 3600, ("ops.*",)))
    lease = TokenLease(
        claims("someone", time.time() - 1, ("*",)),
        verifier,  # type: ignore[arg-type]
        holder,
        warning=0.0,
        grace=0.0,
    )
    lease.start()
    answer = json.loads(lease.refresh("new"))
    assert answer["type"] == "refreshed"
    # The verifier's own claims, not a copy: one Claims per token in the gateway.
    assert lease.claims is verifier.claims
    assert lease.grant.allows("ops.db")
    assert not lease.grant.allows("billing")
    await asyncio.sleep(0.05)
    assert holder.close_code is None  # the old timer was replaced
    lease.cancel()


@pytest.mark.parametrize(
    ("verified", "message"),
    [(None, "bad signature"), (claims("someone-else", None), "a refresh must keep the subject")],
)
async def test_a_refused_refresh_answers_token_invalid_and_keeps_the_lease(
    verified: Claims | None, message: str
) -> None:
    lease = TokenLease(
        claims("someone", None),
        Verifier(verified),  # type: ignore[arg-type]
        Holder(),
        warning=0.0,
        grace=0.0,
    )
    answer = json.loads(lease.refresh("token"))
    assert (answer["type"], answer["code"], answer["message"]) == (
        "error",
        "token_invalid",
        message,
    )
    assert lease.claims.subject == "someone"


async def test_a_lease_sits_on_the_shared_wheel_until_cancelled() -> None:
    lease = TokenLease(
        claims("someone", time.time() + 3600),
        Verifier(None),  # type: ignore[arg-type]
        Holder(),
        warning=30.0,
        grace=0.0,
    )
    lease.start()
    assert lease in deadlines
    lease.cancel()
    assert lease not in deadlines, "the wheel would keep an ended session alive"
