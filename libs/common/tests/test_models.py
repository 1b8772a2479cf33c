import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tocsin.common.models import (
    AlertIn,
    InvalidBodyError,
    decode_alerts,
    fingerprint,
    label_set_fingerprint,
)


def test_a_single_alert_and_a_batch_both_decode() -> None:
    one, batch = decode_alerts(b'{"name": "DiskFull", "severity": "critical"}')
    assert [a.name for a in one] == ["DiskFull"]
    assert batch is False
    many, batch = decode_alerts(
        b'[{"name": "A", "severity": "info"}, {"name": "B", "severity": "error"}]'
    )
    assert [a.name for a in many] == ["A", "B"]
    assert batch is True


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (b'{"severity": "critical"}', "$"),
        (b'{"name": 3, "severity": "critical"}', "$.name"),
        (b'{"name": "x", "severity": "loud"}', "$.severity"),
        (b'{"name": "x", "severity": "info", "colour": "red"}', "$"),
        (b'[{"name": "x", "severity": "info"}, {"name": "", "severity": "info"}]', "$[1].name"),
    ],
)
def test_schema_errors_name_the_offending_path(body: bytes, path: str) -> None:
    with pytest.raises(InvalidBodyError) as caught:
        decode_alerts(body)
    assert caught.value.errors[0].path == path


def test_missing_field_error_names_the_field() -> None:
    with pytest.raises(InvalidBodyError) as caught:
        decode_alerts(b'{"severity": "critical"}')
    assert "name" in caught.value.errors[0].reason


def test_malformed_json_is_reported_at_the_root() -> None:
    with pytest.raises(InvalidBodyError) as caught:
        decode_alerts(b'{"name": ')
    assert caught.value.errors[0].path == "$"
    assert "malformed JSON" in caught.value.errors[0].reason


def test_dedup_key_is_the_fingerprint_verbatim() -> None:
    alert = AlertIn(name="x", severity="info", dedup_key="db-1/disk")
    assert fingerprint(alert) == "db-1/disk"


label_maps = st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=8), max_size=6)


@given(labels=label_maps)
def test_fingerprint_ignores_label_order(labels: dict[str, str]) -> None:
    forward = AlertIn(name="n", severity="info", labels=dict(labels))
    backward = AlertIn(name="n", severity="info", labels=dict(reversed(list(labels.items()))))
    assert fingerprint(forward) == fingerprint(backward)
    assert len(fingerprint(forward)) == 16


@given(st.binary(max_size=200))
def test_arbitrary_bytes_either_decode_or_raise_invalid_body(body: bytes) -> None:
    errors = []
    try:
        alerts, _ = decode_alerts(body)
    except InvalidBodyError as exc:
        errors = exc.errors
        alerts = []
    assert errors or all(isinstance(a, AlertIn) for a in alerts)
    assert not (errors and alerts)


def test_distinct_labels_give_distinct_fingerprints() -> None:
    a = AlertIn(name="n", severity="info", labels={"host": "a"})
    b = AlertIn(name="n", severity="info", labels={"host": "b"})
    assert fingerprint(a) != fingerprint(b)
    assert json.dumps(fingerprint(a))


def _fnv1a_64_byte_by_byte(labels: dict[str, str]) -> str:
    """Prometheus's `model.LabelSet.Fingerprint`, written out as its Go source reads."""
    value = 14695981039346656037
    for name in sorted(labels):
        for part in (name, labels[name]):
            for byte in part.encode() + b"\xff":
                value = ((value ^ byte) * 1099511628211) & (2**64 - 1)
    return f"{value:016x}"


@given(st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=12))
def test_label_set_fingerprint_is_prometheus_fnv1a_over_sorted_labels(
    labels: dict[str, str],
) -> None:
    assert label_set_fingerprint(labels) == _fnv1a_64_byte_by_byte(labels)


def test_label_set_fingerprint_matches_alertmanagers_own() -> None:
    assert label_set_fingerprint({}) == "cbf29ce484222325"  # FNV-1a's offset basis
    # What Alertmanager 0.25's `GET /api/v2/alerts` answered for this label set.
    labels = {"alertname": "BenchAlert", "instance": "host-12", "job": "bench"}
    assert label_set_fingerprint(labels) == "55484e4da232d314"
