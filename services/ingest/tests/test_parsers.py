"""The producer formats: their mappings, and property tests that no input breaks a parser.

"Never malformed" means: a parser either refuses with `InvalidBodyError` (field
errors the endpoint answers with) or returns alerts that the processor can decode
from the queued message under the native model's bounds.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tocsin.common.models import (
    AlertIn,
    InvalidBodyError,
    QueuedAlert,
    fingerprint,
    label_set_fingerprint,
)
from tocsin.ingest.alertmanager import parse_postable_alerts, parse_webhook, severity_of
from tocsin.ingest.native import parse_native, with_defaults
from tocsin.ingest.pagerduty import parse_event

# --- mappings -------------------------------------------------------------------------


def _webhook(**alert: Any) -> bytes:
    item = {
        "status": "firing",
        "labels": {
            "alertname": "DiskFull",
            "severity": "critical",
            "instance": "db-1:9100",
            "job": "node",
        },
        "annotations": {"summary": "disk 95% full"},
        "startsAt": "2025-03-01T10:00:00+01:00",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": "c0ffee12",
    }
    item.update(alert)
    return json.dumps({"version": "4", "groupKey": "{}:{}", "status": "firing",
                       "receiver": "tocsin", "alerts": [item]}).encode()  # fmt: skip


def test_webhook_alert_maps_labels_to_fields_and_says_its_path_in_source() -> None:
    [alert] = parse_webhook(_webhook(), 1000)
    assert alert.name == "DiskFull"
    assert alert.severity == "critical"
    assert alert.dedup_key is None, "the body's fingerprint is not trusted as the identity"
    assert alert.summary == "disk 95% full"
    assert alert.source == "alertmanager"
    assert alert.service == "node"
    assert alert.starts_at == datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
    assert alert.ends_at is None, "Go's zero time means no end"
    assert alert.generator_url == "http://prometheus/graph"


def test_webhook_resolved_alert_becomes_a_resolved_alert_in() -> None:
    [alert] = parse_webhook(_webhook(status="resolved", endsAt="2025-03-01T10:05:00Z"), 1000)
    assert alert.status == "resolved"
    assert alert.ends_at == datetime(2025, 3, 1, 10, 5, tzinfo=UTC)


def test_unknown_severity_label_maps_to_warning() -> None:
    assert severity_of({"severity": "SEV-9"}) == "warning"
    assert severity_of({"severity": "Page"}) == "critical"
    assert severity_of({}) == "warning"


def test_one_label_set_is_one_fingerprint_via_webhook_push_and_native() -> None:
    labels = {
        "alertname": "DiskFull",
        "severity": "critical",
        "instance": "db-1:9100",
        "job": "node",
    }
    [webhook] = parse_webhook(_webhook(), 1000)
    [pushed] = parse_postable_alerts(json.dumps([{"labels": labels}]).encode(), 1000)
    native_labels = {k: v for k, v in labels.items() if k != "alertname"}
    [native] = parse_native(
        json.dumps({"name": "DiskFull", "severity": "info", "labels": native_labels}).encode(), 10
    )
    assert fingerprint(webhook) == fingerprint(pushed) == fingerprint(native)
    assert pushed.source == "prometheus"


def test_fingerprint_is_fnv1a_over_the_sorted_label_set() -> None:
    # As Prometheus's common/model: the empty set is FNV-1a's offset basis, and
    # order does not matter (tests/integration compare it with a real Alertmanager's).
    assert label_set_fingerprint({}) == "cbf29ce484222325"
    assert label_set_fingerprint({"a": "1", "b": "2"}) == label_set_fingerprint(
        {"b": "2", "a": "1"}
    )
    assert label_set_fingerprint({"a": "1"}) != label_set_fingerprint({"a": "2"})


def test_pushed_alert_without_alertname_is_refused_with_its_path() -> None:
    with pytest.raises(InvalidBodyError) as caught:
        parse_postable_alerts(b'[{"labels": {"job": "x"}}]', 1000)
    assert caught.value.errors[0].path == "$[0].labels.alertname"


def test_pushed_alert_whose_end_has_passed_is_resolved() -> None:
    body = json.dumps([
        {"labels": {"alertname": "A"}, "endsAt": "2025-01-01T00:00:00Z"},
        {"labels": {"alertname": "B"}, "endsAt": "2999-01-01T00:00:00Z"},
        {"labels": {"alertname": "C"}},
    ]).encode()  # fmt: skip
    alerts = parse_postable_alerts(body, 1000, now=datetime(2026, 1, 1, tzinfo=UTC))
    assert [a.status for a in alerts] == ["resolved", "firing", "firing"]


def test_native_refuses_unknown_fields_and_batches_over_the_bound() -> None:
    with pytest.raises(InvalidBodyError) as caught:
        parse_native(b'{"name": "x", "severity": "info", "colour": "red"}', 10)
    assert "colour" in caught.value.errors[0].reason
    with pytest.raises(InvalidBodyError):
        parse_native(json.dumps([{"name": "x", "severity": "info"}] * 3).encode(), 2)
    with pytest.raises(InvalidBodyError):
        parse_native(b"[]", 2)


def test_native_refuses_timestamps_without_offset_and_normalises_to_utc() -> None:
    with pytest.raises(InvalidBodyError):
        parse_native(b'{"name": "x", "severity": "info", "starts_at": "2025-01-01T00:00:00"}', 1)
    [alert] = parse_native(
        b'{"name": "x", "severity": "info", "starts_at": "2025-01-01T05:30:00+05:30"}', 1
    )
    assert alert.starts_at == datetime(2025, 1, 1, tzinfo=UTC)
    assert alert.starts_at is not None
    assert alert.starts_at.utcoffset() is not None


def test_timestamp_past_the_last_utc_moment_is_refused_not_a_crash() -> None:
    body = b'[{"name": "x", "severity": "info"},'
    body += b' {"name": "y", "severity": "info", "ends_at": "9999-12-31T23:59:59-12:00"}]'
    with pytest.raises(InvalidBodyError) as caught:
        parse_native(body, 10)
    assert caught.value.errors[0].path == "$[1]"


def test_pagerduty_trigger_without_dedup_key_gets_one_generated() -> None:
    body = json.dumps({
        "routing_key": "k", "event_action": "trigger",
        "payload": {"summary": "CPU hot on web-1", "source": "web-1", "severity": "error",
                    "component": "cpu", "group": "web", "class": "load",
                    "custom_details": {"load": 9.5, "note": "busy"}},
        "client_url": "https://monitor/web-1",
    }).encode()  # fmt: skip
    intent = parse_event(body, producer="p", at=1.0)
    assert intent.alert is not None
    assert intent.action is None
    assert len(intent.dedup_key) == 32
    assert intent.alert.dedup_key == intent.dedup_key
    assert intent.alert.severity == "error"
    assert intent.alert.service == "web"
    assert intent.alert.labels == {"component": "cpu", "group": "web", "class": "load"}
    assert intent.alert.annotations == {"load": "9.5", "note": "busy"}
    assert intent.alert.generator_url == "https://monitor/web-1"


def test_pagerduty_acknowledge_becomes_an_action_on_the_dedup_key() -> None:
    body = b'{"routing_key": "k", "event_action": "acknowledge", "dedup_key": "db-disk"}'
    intent = parse_event(body, producer="pd", at=5.0)
    assert intent.alert is None
    assert intent.action is not None
    assert intent.action.action == "acknowledge"
    assert intent.action.fingerprint == "db-disk"
    assert intent.action.by == "pd"


def test_pagerduty_resolve_becomes_a_resolved_alert_keyed_by_dedup_key() -> None:
    body = b'{"routing_key": "k", "event_action": "resolve", "dedup_key": "db-disk"}'
    intent = parse_event(body, producer="p", at=1.0)
    assert intent.alert is not None
    assert intent.alert.status == "resolved"
    assert intent.alert.dedup_key == "db-disk"


@pytest.mark.parametrize(
    "event",
    [
        {"routing_key": "k", "event_action": "trigger"},
        {"routing_key": "k", "event_action": "resolve"},
        {"routing_key": "k", "event_action": "trigger", "dedup_key": "x" * 256,
         "payload": {"summary": "s", "source": "s", "severity": "info"}},
        {"routing_key": "k", "event_action": "trigger",
         "payload": {"summary": "s" * 1025, "source": "s", "severity": "info"}},
        {"routing_key": "k", "event_action": "explode"},
    ],
)  # fmt: skip
def test_pagerduty_refuses_what_pagerduty_refuses(event: dict[str, Any]) -> None:
    with pytest.raises(InvalidBodyError):
        parse_event(json.dumps(event).encode(), producer="p", at=1.0)


def test_producer_default_labels_never_override_or_overflow() -> None:
    alert = AlertIn(name="x", severity="info", labels={"env": "dev"})
    with_defaults(alert, {"env": "prod", "team": "ops"})
    assert alert.labels == {"env": "dev", "team": "ops"}
    full = AlertIn(name="x", severity="info", labels={f"l{i}": "v" for i in range(64)})
    assert len(with_defaults(full, {"team": "ops"}).labels) == 64


# --- properties -----------------------------------------------------------------------

_text = st.text(max_size=40)
_json_scalar = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _text
_json = st.recursive(
    _json_scalar,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)
_timestamp = st.sampled_from(
    ["2025-01-01T00:00:00Z", "2025-01-01T00:00:00+02:00", "0001-01-01T00:00:00Z",
     "2025-01-01T00:00:00", "not a time", "9999-12-31T23:59:59.999999-12:00"]
) | _json  # fmt: skip
_labels = st.dictionaries(st.text(max_size=140), st.text(max_size=30), max_size=6) | _json
_severity = st.sampled_from(["critical", "error", "warning", "info", "page", "bogus"]) | _json


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


def _object(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with any subset of `fields`, sometimes with an extra unknown field."""
    return st.fixed_dictionaries({}, optional=fields).flatmap(
        lambda d: st.one_of(st.just(d), _json.map(lambda extra: {**d, "extra": extra}))
    )


_native_alert = _object({
    "name": _text | _json, "severity": _severity,
    "status": st.sampled_from(["firing", "resolved", "x"]),
    "source": _text, "service": _text, "summary": _text, "labels": _labels, "annotations": _labels,
    "dedup_key": _maybe(_text), "starts_at": _timestamp, "ends_at": _timestamp,
    "generator_url": _maybe(_text),
})  # fmt: skip
_am_alert = _object({
    "status": st.sampled_from(["firing", "resolved", "pending"]), "labels": _labels,
    "annotations": _labels, "startsAt": _timestamp, "endsAt": _timestamp,
    "generatorURL": _text | _json, "fingerprint": _text,
})  # fmt: skip
_webhook_body = _object({
    "version": _text, "groupKey": _text, "truncatedAlerts": st.integers() | _json,
    "status": _text, "receiver": _text, "groupLabels": _labels, "commonLabels": _labels,
    "externalURL": _text, "alerts": st.lists(_am_alert, max_size=3) | _json,
})  # fmt: skip
_pd_event = _object({
    "routing_key": _text,
    "event_action": st.sampled_from(["trigger", "acknowledge", "resolve", "x"]),
    "dedup_key": _maybe(_text | st.text(min_size=250, max_size=260)),
    "payload": _maybe(_object({
        "summary": _text, "source": _text, "severity": _severity, "timestamp": _timestamp,
        "component": _text, "group": _text, "class": _text, "custom_details": _json,
    })),
    "links": st.lists(_object({"href": _text, "text": _text}), max_size=2) | _json,
    "client_url": _maybe(_text),
})  # fmt: skip

_queued_decoder = msgspec.json.Decoder(list[QueuedAlert])


def _assert_well_formed(alerts: list[AlertIn]) -> None:
    """What the processor would decode from the queued message validates again."""
    queued = [QueuedAlert(id="i", fingerprint="f", received_at=0.0, producer="p", alert=a)
              for a in alerts]  # fmt: skip
    again = _queued_decoder.decode(msgspec.json.encode(queued))
    for item in again:
        for moment in (item.alert.starts_at, item.alert.ends_at):
            assert moment is None or moment.utcoffset() is not None
            assert moment is None or moment.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


def _outcome(parse: Any, *args: Any) -> tuple[Any, list[Any]]:
    """The parser's result, or None and the field errors it refused with."""
    try:
        return parse(*args), []
    except InvalidBodyError as exc:
        return None, exc.errors


_examples = settings(max_examples=150)


def _body(document: Any) -> bytes:
    return json.dumps(document).encode()


@_examples
@given(st.one_of(_native_alert, st.lists(_native_alert, max_size=3), _json).map(_body)
       | st.binary(max_size=64))  # fmt: skip
def test_native_parser_refuses_or_yields_well_formed_alerts(body: bytes) -> None:
    alerts, errors = _outcome(parse_native, body, 2)
    if alerts is None:
        assert errors
        return
    assert 1 <= len(alerts) <= 2
    _assert_well_formed(alerts)


@_examples
@given(st.one_of(_webhook_body, _json).map(_body) | st.binary(max_size=64))
def test_webhook_parser_refuses_or_yields_well_formed_alerts(body: bytes) -> None:
    alerts, errors = _outcome(parse_webhook, body, 2)
    if alerts is None:
        assert errors
        return
    _assert_well_formed(alerts)


@_examples
@given(st.one_of(st.lists(_am_alert, max_size=3), _json).map(_body) | st.binary(max_size=64))
def test_push_parser_refuses_or_yields_well_formed_alerts(body: bytes) -> None:
    alerts, errors = _outcome(parse_postable_alerts, body, 2)
    if alerts is None:
        assert errors
        return
    assert all(a.labels.get("alertname") for a in alerts)
    _assert_well_formed(alerts)


@_examples
@given(st.one_of(_pd_event, _json).map(_body) | st.binary(max_size=64))
def test_pagerduty_parser_refuses_or_yields_an_alert_or_an_action(body: bytes) -> None:
    intent, errors = _outcome(lambda b: parse_event(b, producer="p", at=1.0), body)
    if intent is None:
        assert errors
        return
    assert (intent.alert is None) != (intent.action is None)
    assert 1 <= len(intent.dedup_key) <= 255
    if intent.alert is not None:
        assert intent.alert.dedup_key == intent.dedup_key
        _assert_well_formed([intent.alert])
    else:
        assert intent.action is not None
        assert intent.action.fingerprint == intent.dedup_key
