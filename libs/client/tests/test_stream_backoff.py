"""The SDK's back-off and close-code classes (pure logic)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tocsin.client import Backoff
from tocsin.client._stream import _retry_after, is_reconnect_class


def test_backoff_defaults_are_half_a_second_doubling_capped_at_twenty() -> None:
    backoff = Backoff()
    assert (backoff.base, backoff.factor, backoff.cap) == (0.5, 2.0, 20.0)


@given(st.integers(min_value=0, max_value=40))
def test_each_delay_is_full_jitter_below_the_capped_exponential(attempts: int) -> None:
    backoff = Backoff(attempt=attempts)
    delay = backoff.next_delay()
    assert 0 <= delay <= min(20.0, 0.5 * 2.0**attempts)
    assert backoff.attempt == attempts + 1


def test_reset_starts_the_sequence_again() -> None:
    backoff = Backoff()
    for _ in range(10):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() <= 0.5


def test_only_4400_to_4499_forbid_reconnecting() -> None:
    assert all(is_reconnect_class(code) for code in (1000, 1006, 1011, 1012, 4000, 4001, 4003))
    assert not any(is_reconnect_class(code) for code in (4400, 4401, 4403, 4413, 4499))


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("2", 2.0), ("0", 0.0), (None, 0.0), ("soon", 0.0), ("-5", 0.0), ("3600", 60.0)],
)
def test_a_refusal_asks_to_wait_its_retry_after_seconds_bounded(
    header: str | None, seconds: float
) -> None:
    assert _retry_after(header) == seconds
