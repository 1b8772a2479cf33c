"""Pure logic of the gateway: channel grants, frame parsing, close-code classes."""

from __future__ import annotations

import fnmatch
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tocsin.gateway.access import ChannelGrant
from tocsin.gateway.frames import event_frame
from tocsin.gateway.protocol import CloseCode, is_reconnect_class


@pytest.mark.parametrize(
    ("patterns", "channel", "allowed"),
    [
        (["*"], "alerts.team.storage", True),
        (["alerts"], "alerts", True),
        (["alerts"], "alerts.team.storage", False),
        (["alerts.team.*"], "alerts.team.storage", True),
        (["alerts.team.*"], "alerts.teamx", False),
        (["alerts.team.*"], "alerts.service.db", False),
        (["alerts.severity.critical", "system"], "system", True),
        (["alerts.team.[ab]*"], "alerts.team.billing", True),
        (["alerts.team.[ab]*"], "alerts.team.core", False),
        ([], "alerts", False),
    ],
)
def test_a_grant_allows_exactly_the_channels_its_globs_match(
    patterns: list[str], channel: str, allowed: bool
) -> None:
    assert ChannelGrant(patterns).allows(channel) is allowed


def test_grant_patterns_are_case_sensitive() -> None:
    assert not ChannelGrant(["alerts.team.*"]).allows("Alerts.team.x")


@given(
    channel=st.from_regex(r"[A-Za-z0-9_.:\-]{1,40}", fullmatch=True),
    offset=st.integers(min_value=1, max_value=2**53),
    data=st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=4),
)
def test_an_event_frame_reads_offset_and_epoch_and_keeps_the_bytes(
    channel: str, offset: int, data: dict[str, str]
) -> None:
    raw = (
        f'{{"type":"event","channel":"{channel}","offset":{offset},'
        f'"epoch":"1764000000123456","data":{json.dumps(data)}}}'
    ).encode()
    frame = event_frame(channel, raw)
    assert (frame.channel, frame.offset, frame.epoch) == (channel, offset, "1764000000123456")
    assert frame.text.encode() == raw
    assert frame.size == len(raw)


def test_a_frame_without_an_offset_is_refused() -> None:
    with pytest.raises(ValueError):  # noqa: PT011 -- bytes.index says only "subsequence"
        event_frame("alerts", b'{"type":"event","channel":"alerts"}')


def test_ingest_time_prefers_received_at_then_last_seen() -> None:
    with_number = event_frame(
        "alerts",
        b'{"type":"event","channel":"alerts","offset":1,"epoch":"1","data":'
        b'{"type":"alert.created","received_at":1764000000.25,"alert":{}}}',
    )
    assert with_number.ingest_time() == 1764000000.25
    with_text = event_frame(
        "alerts",
        b'{"type":"event","channel":"alerts","offset":1,"epoch":"1","data":'
        b'{"alert":{"last_seen":"2025-11-24T16:00:00Z"}}}',
    )
    assert with_text.ingest_time() == 1764000000.0


def test_close_codes_fall_in_their_two_documented_classes() -> None:
    reconnect = {c for c in CloseCode if is_reconnect_class(c)}
    assert reconnect == {
        CloseCode.SERVER_RESTART,
        CloseCode.SLOW_CONSUMER,
        CloseCode.HEARTBEAT_TIMEOUT,
        CloseCode.TOKEN_EXPIRED,
        CloseCode.TOO_MANY_CONNECTIONS,
        CloseCode.BACKEND_UNAVAILABLE,
    }
    assert all(4000 <= c <= 4499 for c in CloseCode)
    assert CloseCode.SLOW_CONSUMER.reason == "slow_consumer"


@given(
    globs=st.lists(
        st.text(alphabet="ab.*?[]!^-\\", min_size=0, max_size=8), min_size=1, max_size=3
    ),
    channel=st.text(alphabet="ab.-[]!^\\\n", max_size=8),
)
def test_channel_globs_on_re2_mean_what_fnmatch_means(globs: list[str], channel: str) -> None:
    expected = any(fnmatch.fnmatchcase(channel, glob) for glob in globs)
    assert ChannelGrant(globs).allows(channel) is expected
