"""Group timers as a pure function of state and a controllable clock, and digests."""

from __future__ import annotations

from tocsin.common.models import StoredAlert
from tocsin.notifier.grouping import GroupState, digest, group_key, plan_flush, state_hash
from tocsin.notifier.message import GroupedAlert

REPEAT = 4 * 3600.0


def item(fingerprint: str, status: str = "firing") -> GroupedAlert:
    alert = StoredAlert(
        id=fingerprint,
        fingerprint=fingerprint,
        name="A",
        severity="warning",
        status=status,
        source="",
        service="",
        summary="",
        labels={},
        annotations={},
        producer="",
        count=1,
        first_seen="",
        last_seen="",
    )
    return GroupedAlert(transition=status, status=status, alert=alert)  # type: ignore[arg-type]


def test_first_flush_of_a_new_group_notifies_its_firing_alerts() -> None:
    plan = plan_flush(
        GroupState(),
        firing_hash=state_hash([item("a")]),
        resolved=0,
        now=100.0,
        repeat_interval=REPEAT,
    )
    assert plan.send
    assert not plan.repeat


def test_unchanged_group_is_silent_until_repeat_interval_then_repeats() -> None:
    firing = state_hash([item("a")])
    sent_at = 1000.0
    state = GroupState(seq=1, last_firing=firing, last_sent_at=sent_at)
    clock = sent_at
    for _ in range(47):  # every 5-minute group_interval tick for nearly 4 hours
        clock += 300
        assert not plan_flush(
            state, firing_hash=firing, resolved=0, now=clock, repeat_interval=REPEAT
        ).send
    clock += 300  # 4 hours after the last notification
    plan = plan_flush(state, firing_hash=firing, resolved=0, now=clock, repeat_interval=REPEAT)
    assert plan.send
    assert plan.repeat


def test_a_new_firing_alert_or_a_resolution_notifies_at_the_next_interval() -> None:
    state = GroupState(seq=1, last_firing=state_hash([item("a")]), last_sent_at=1000.0)
    grown = state_hash([item("a"), item("b")])
    assert plan_flush(state, firing_hash=grown, resolved=0, now=1300.0, repeat_interval=REPEAT).send
    assert plan_flush(state, firing_hash="", resolved=1, now=1300.0, repeat_interval=REPEAT).send


def test_resolved_alerts_of_a_group_that_never_notified_are_not_news() -> None:
    assert not plan_flush(
        GroupState(), firing_hash="", resolved=3, now=1.0, repeat_interval=REPEAT
    ).send


def test_state_hash_ignores_order_and_sees_transitions() -> None:
    assert state_hash([item("a"), item("b")]) == state_hash([item("b"), item("a")])
    assert state_hash([item("a")]) != state_hash([item("a", "resolved")])
    assert state_hash([]) == ""


def test_big_group_becomes_a_digest_that_lists_firing_alerts_before_resolved_ones() -> None:
    firing = [item(f"f{i}") for i in range(150)]
    resolved = [item(f"r{i}", "resolved") for i in range(50)]
    listed, truncated = digest(firing, resolved, threshold=20, sample=10)
    assert truncated
    assert [a.alert.fingerprint for a in listed] == [f"f{i}" for i in range(10)]
    listed, truncated = digest(firing[:3], resolved[:2], threshold=20, sample=10)
    assert not truncated
    assert len(listed) == 5


def test_group_key_depends_on_receiver_route_and_group_labels_only() -> None:
    key = group_key("hook", "0.1", {"service": "api", "alertname": "A"})
    assert key == group_key("hook", "0.1", {"alertname": "A", "service": "api"})
    assert key != group_key("hook", "0.2", {"service": "api", "alertname": "A"})
    assert key != group_key("chat", "0.1", {"service": "api", "alertname": "A"})
