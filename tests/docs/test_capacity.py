"""The sizing guide (docs/capacity.md) against its module (tests/load/capacity.py), and the
scale benchmark's pure bookkeeping (tests/load/scale_metrics.py)."""

from __future__ import annotations

import dataclasses
import random
import re
from pathlib import Path

import pytest

from tests.load import capacity
from tests.load.scale_metrics import (
    LATE,
    PROMPT,
    SLOW,
    Histogram,
    PongLedger,
    Tally,
    percentile,
    read_delay_bound,
)

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "capacity.md"
_COST_ROW = re.compile(r"^\|\s*`(\w+)`\s*\|\s*([0-9][0-9,.]*)\s*\|", re.MULTILINE)
_EXAMPLE_ROW = re.compile(r"^\|\s*example:[^|]*\|(.*)\|\s*$", re.MULTILINE)


def _number(text: str) -> float:
    return float(text.replace(",", "").strip())


def test_every_unit_cost_in_the_guide_is_the_one_the_bench_uses() -> None:
    quoted = {name: _number(value) for name, value in _COST_ROW.findall(GUIDE.read_text())}
    fields = {
        f.name: getattr(capacity.UNIT_COSTS, f.name) for f in dataclasses.fields(capacity.UnitCosts)
    }
    assert quoted == pytest.approx(fields)


def test_the_guides_worked_examples_are_what_the_formulas_give() -> None:
    rows = _EXAMPLE_ROW.findall(GUIDE.read_text())
    assert len(rows) >= 3, "the worked examples table is missing"
    for row in rows:
        cells = [c.strip() for c in row.split("|")]
        sockets, alerts, reach, connects, stored = (_number(c) for c in cells[:5])
        sizing = capacity.size(
            capacity.Load(
                sockets=int(sockets),
                alerts_per_second=alerts,
                subscribers_per_event=reach,
                connects_per_second=connects,
                stored_alerts=int(stored),
                channels=int(_number(cells[5])),
                pools=int(_number(cells[6])),
            )
        )
        printed = [_number(c) for c in cells[7:]]
        assert printed == pytest.approx(
            [
                sizing.gateways,
                sizing.ingest,
                sizing.processors,
                round(sizing.redis_cores, 2),
                round(sizing.redis_gib, 2),
                sizing.redis_primaries,
            ],
            abs=0.011,
        ), row


def test_gateways_are_bounded_by_descriptors_even_when_cpu_is_idle() -> None:
    load = capacity.Load(sockets=100_000, alerts_per_second=0, subscribers_per_event=0)
    assert capacity.size(load).gateways == 6  # 100,000 / 19,800 rounded up


def test_an_intake_beyond_one_gateway_is_refused_rather_than_sized() -> None:
    load = capacity.Load(sockets=1000, alerts_per_second=100_000, subscribers_per_event=1)
    with pytest.raises(ValueError, match="shard"):
        capacity.size(load)


def test_the_histogram_percentile_is_within_two_percent_of_the_exact_one() -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(-4, 1.2) for _ in range(20_000)]
    histogram = Histogram()
    for value in values:
        histogram.add(value)
    for fraction in (0.5, 0.9, 0.99, 0.999):
        exact = percentile(values, fraction)
        assert histogram.percentile(fraction) == pytest.approx(exact, rel=0.021)
    assert histogram.maximum == max(values)
    assert histogram.percentile(1.0) == max(values)


def test_merged_histograms_equal_one_fed_everything_and_survive_json() -> None:
    left, right, whole = Histogram(), Histogram(), Histogram()
    for n in range(1, 500):
        (left if n % 3 else right).add(n / 1000)
        whole.add(n / 1000)
    left.merge(Histogram.from_json(right.to_json()))
    assert left == whole
    assert Histogram().percentile(0.5) != Histogram().percentile(0.5)  # NaN when empty


def test_the_tally_counts_gaps_as_lost_repeats_as_duplicates_and_the_missing_tail() -> None:
    tally = Tally()
    last = tally.resubscribed(0, 10, first=True, recovered=True)  # starts at the head
    for offset in (11, 12, 12, 15, 14, 16):
        last = tally.event(last, offset)
    tally.tail(last, 18)
    assert (tally.events, tally.duplicates, tally.lost, last) == (4, 2, 2 + 2, 16)


def test_a_resume_announced_past_the_socket_or_unrecovered_counts_what_was_skipped() -> None:
    tally = Tally()
    assert tally.resubscribed(20, 20, first=False, recovered=True) == 20
    assert tally.lost == 0
    assert tally.resubscribed(20, 25, first=False, recovered=False) == 25
    assert (tally.lost, tally.resets) == (5, 1)
    assert tally.resubscribed(25, 3, first=False, recovered=False) == 3  # a new epoch
    assert (tally.lost, tally.resets) == (5, 2)


def test_a_heartbeat_close_is_blamed_on_whoever_held_the_last_ping() -> None:
    ledger = PongLedger(prompt=1.0, timeout=10.0)
    for delay in (0.01, 0.5, 3.0, 12.0):
        ledger.ping(delay)
    ledger.heartbeat_close(0.02)  # answered at once: the gateway read the pong late
    ledger.heartbeat_close(4.0)
    ledger.heartbeat_close(11.0)  # the client's own loop held the ping past the timeout
    ledger.heartbeat_close(None)
    assert ledger.answers == {PROMPT: 2, SLOW: 1, LATE: 1}
    assert ledger.closes == {PROMPT: 1, SLOW: 1, LATE: 1, "no ping read": 1}


def test_pong_ledgers_merge_and_survive_json() -> None:
    one, two = PongLedger(), PongLedger()
    one.ping(0.1)
    one.heartbeat_close(20.0)
    two.ping(30.0)
    two.heartbeat_close(0.1)
    one.merge(PongLedger.from_json(two.to_json(), two.prompt, two.timeout))
    assert one.answers == {PROMPT: 1, LATE: 1}
    assert one.closes == {PROMPT: 1, LATE: 1}
    assert one.answered.total == 2


def test_a_frame_read_after_a_stall_is_bounded_by_the_sample_before_the_stall() -> None:
    # Samples ran at 10.00 and, after a 3 s stall, 13.05; the ping read at 13.06 may
    # have waited since just after 10.00.
    assert read_delay_bound(13.06, 10.0) == pytest.approx(3.06)
    assert read_delay_bound(9.0, 10.0) == 0.0
