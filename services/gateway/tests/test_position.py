"""`Position`, the merge by offset: history and buffered live frames overlap,
the subscription sends each offset once, in order, and says when to recover."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from tocsin.gateway.frames import Frame, event_frame
from tocsin.gateway.position import Position, Step


def frame(offset: int, epoch: str = "e1") -> Frame:
    raw = json.dumps(
        {"type": "event", "channel": "alerts", "offset": offset, "epoch": epoch, "data": {}},
        separators=(",", ":"),
    ).encode()
    return event_frame("alerts", raw)


def recovered(position: Position, history: list[int]) -> list[int]:
    """What a recovery sends: history merged first, then the live frames it buffered."""
    sent = [f.offset for f in map(frame, history) if position.merge(f) is Step.SEND]
    return sent + [f.offset for f in position.finish() if position.merge(f) is Step.SEND]


@settings(max_examples=80)
@given(
    start=st.integers(min_value=0, max_value=50),
    missed=st.integers(min_value=0, max_value=30),
    overlap=st.integers(min_value=0, max_value=30),
    more=st.integers(min_value=0, max_value=30),
)
def test_overlapping_history_and_live_frames_send_each_offset_once_in_order(
    start: int, missed: int, overlap: int, more: int
) -> None:
    last_history = start + missed
    first_live = max(start + 1, last_history + 1 - overlap)
    position = Position()
    # Live frames arrive while the stream is read: all of them are held.
    steps = {position.live(frame(o)) for o in range(first_live, last_history + more + 1)}
    assert steps <= {Step.BUFFERED}
    position.restart_at("e1", start)
    sent = recovered(position, list(range(start + 1, last_history + 1)))
    assert sent == list(range(start + 1, last_history + more + 1))
    assert not position.recovering
    assert position.offset == last_history + more


def test_the_next_offset_is_sent_and_a_repeat_is_skipped() -> None:
    position = Position("e1", 4, recovering=False)
    assert position.live(frame(5)) is Step.SEND
    assert position.live(frame(5)) is Step.SKIP
    assert position.live(frame(3)) is Step.SKIP
    assert position.offset == 5


def test_a_hole_in_the_live_flow_starts_a_recovery_holding_the_frame() -> None:
    position = Position("e1", 4, recovering=False)
    assert position.live(frame(7)) is Step.GAP
    assert position.recovering
    assert position.live(frame(8)) is Step.BUFFERED
    assert recovered(position, [5, 6, 7]) == [5, 6, 7, 8]


def test_a_new_epoch_is_a_restart_once_an_epoch_is_known() -> None:
    position = Position("e1", 40, recovering=False)
    assert position.live(frame(1, epoch="e2")) is Step.NEW_EPOCH
    assert (position.epoch, position.offset) == ("e2", 1)
    assert position.live(frame(2, epoch="e2")) is Step.SEND
    fresh = Position(recovering=False)
    assert fresh.live(frame(9, epoch="e3")) is Step.SEND


def test_a_second_recovery_is_refused_while_one_runs() -> None:
    position = Position("e1", 1, recovering=False)
    assert position.recover()
    assert not position.recover()
    position.finish()
    assert position.recover()


def test_dropping_the_buffer_ends_the_recovery_and_forgets_its_frames() -> None:
    position = Position()
    position.live(frame(1))
    position.drop_buffer()
    assert not position.recovering
    assert position.finish() == []
