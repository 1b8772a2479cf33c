"""The Redis apply step against the pure model, driven by hypothesis (differential).

Any sequence of producer messages on every path, redeliveries, messages held
back and delivered out of order, user actions, clock advances, deadline sweeps
and trailing updates must leave Redis (records, fingerprint states, timelines,
deadlines, the notification queue) exactly as the rules applied in memory do.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from redis import Redis
from services.processor.tests.memory_store import MemoryStore

from tocsin.client.devserver import RedisServer
from tocsin.common import keys
from tocsin.common.models import AlertAction, AlertIn, QueuedAlert
from tocsin.common.redis import sync_client
from tocsin.common.silences import Matcher, Silence, SilenceSet
from tocsin.processor.lifecycle import AlertLifecycle, LifecycleConfig
from tocsin.processor.rules import Policy

CONFIG = LifecycleConfig(
    Policy(
        window=60.0,
        flap_count=1,
        flap_window=600.0,
        resolve_timeout=300.0,
        alertmanager_resolve_timeout=0.0,
        update_interval=1.0,
    )
)
FINGERPRINTS = ("fp-a", "fp-b")
PATHS = ("native", "prometheus", "alertmanager", "pagerduty")
T0 = 1_000_000.0
MUTING = SilenceSet(
    [
        Silence(
            id="s1",
            matchers=[Matcher(name="muted", value="yes")],
            startsAt="",
            endsAt="",
            starts_ts=0.0,
            ends_ts=1e12,
        )
    ]
)


@pytest.fixture(scope="module")
def shared_redis() -> Iterator[Redis]:
    with RedisServer() as server:
        yield sync_client(server.url)


def _moment(offset: float | None) -> datetime | None:
    return None if offset is None else datetime.fromtimestamp(T0 + offset, UTC)


class LifecycleMachine(RuleBasedStateMachine):
    redis: Redis

    def __init__(self) -> None:
        super().__init__()
        self.redis.flushall()
        self.now = T0 + 1000.0
        self.lifecycle = AlertLifecycle(self.redis, CONFIG, clock=lambda: self.now)
        self.model = MemoryStore(CONFIG.policy)
        self.sent: list[QueuedAlert] = []
        self.held: list[QueuedAlert] = []
        self.serial = 0

    def _next_id(self, prefix: str) -> str:
        self.serial += 1
        return f"{prefix}{self.serial:05d}"

    def _deliver(self, queued: QueuedAlert) -> None:
        [outcome] = self.lifecycle.apply_alerts([queued], MUTING)
        expected = self.model.message(queued, queued.alert.labels["muted"] == "yes", self.now)
        assert outcome.outcome == expected.outcome
        if outcome.merged:
            self.owed.setdefault(queued.fingerprint, self.now)

    owed: dict[str, float]

    @rule(
        fp=st.sampled_from(FINGERPRINTS),
        path=st.sampled_from(PATHS),
        status=st.sampled_from(["firing", "firing", "resolved"]),
        severity=st.sampled_from(["info", "warning", "critical"]),
        muted=st.booleans(),
        starts=st.sampled_from([None, 0.0, 500.0, 2000.0]),
        ends=st.sampled_from([None, None, 900.0, 1500.0, 5000.0]),
        hold=st.booleans(),
    )
    def message(
        self,
        fp: str,
        path: str,
        status: str,
        severity: str,
        muted: bool,
        starts: float | None,
        ends: float | None,
        hold: bool,
    ) -> None:
        if not hasattr(self, "owed"):
            self.owed = {}
        queued = QueuedAlert(
            id=self._next_id("m"),
            fingerprint=fp,
            received_at=self.now,
            producer="prop",
            alert=AlertIn(
                name="disk",
                severity=severity,  # type: ignore[arg-type]
                status=status,  # type: ignore[arg-type]
                labels={"muted": "yes" if muted else "no"},
                starts_at=_moment(starts),
                ends_at=_moment(ends),
            ),
            path=path,  # type: ignore[arg-type]
        )
        if hold:
            self.held.append(queued)  # delivered later, out of order
            return
        self.sent.append(queued)
        self._deliver(queued)

    @rule(data=st.data())
    def deliver_held(self, data: st.DataObject) -> None:
        if not self.held:
            return
        queued = self.held.pop(data.draw(st.integers(0, len(self.held) - 1)))
        self.sent.append(queued)
        self._deliver(queued)

    @rule(data=st.data())
    def redeliver(self, data: st.DataObject) -> None:
        if not self.sent:
            return
        self._deliver(data.draw(st.sampled_from(self.sent)))

    @rule(
        fp=st.sampled_from(FINGERPRINTS),
        kind=st.sampled_from(["acknowledge", "unacknowledge", "resolve"]),
    )
    def user_action(self, fp: str, kind: str) -> None:
        action = AlertAction(id=self._next_id("a"), action=kind, fingerprint=fp, by="u")  # type: ignore[arg-type]
        outcome = self.lifecycle.apply_action(action, self.now)
        assert outcome.outcome == self.model.action(action, self.now).outcome

    @rule(seconds=st.sampled_from([0.3, 1.0, 10.0, 59.5, 61.0, 150.0, 301.0, 1000.0]))
    def advance_clock(self, seconds: float) -> None:
        self.now += seconds

    @rule()
    def sweep(self) -> None:
        outcomes = self.lifecycle.expire_stale(self.now)
        resolved = [d.alert_id for d in self.model.sweep(self.now) if d.outcome == "resolved"]
        assert sorted(o.alert_id for o in outcomes if o.outcome == "resolved") == sorted(resolved)

    @rule()
    def trailing_updates(self) -> None:
        owed = list(getattr(self, "owed", {}).items())
        outcomes = self.lifecycle.publish_trailing(owed)
        for (fp, since), outcome in zip(owed, outcomes, strict=True):
            assert outcome.outcome == self.model.trailing(fp, since, self.now).outcome
        self.owed = {}

    @invariant()
    def redis_holds_what_the_model_holds(self) -> None:
        for fp in FINGERPRINTS:
            state = self.model.states.get(fp)
            raw = self.redis.hgetall(keys.dedup(fp))
            if state is None:
                assert raw == {}
                continue
            assert raw[b"id"].decode() == state.alert_id
            assert float(raw[b"due"]) == state.due
            assert float(raw[b"resolved"]) == state.resolved
            expected = self.model.records[state.alert_id]
            record = json.loads(self.redis.get(keys.alert(state.alert_id)) or b"{}")
            fields = ("status", "severity", "count", "silenced", "flapping", "transitions",
                      "last_seen", "resolved_at")  # fmt: skip
            assert {f: record[f] for f in fields} == {f: getattr(expected, f) for f in fields}
            timeline = [
                json.loads(e)["kind"]
                for e in self.redis.lrange(keys.timeline(state.alert_id), 0, -1)
            ]
            assert timeline == self.model.timelines[state.alert_id]
            # The sweep's index may lag a refresh (it re-scores what is not yet due),
            # never run ahead of the deadline, and holds every open alert that has one.
            due = self.redis.zscore(keys.resolve_due(), state.alert_id)
            if expected.status == "resolved" or not state.due:
                assert due is None
            else:
                assert due is not None
                assert due <= state.due

    @invariant()
    def notification_queue_matches_the_model(self) -> None:
        queue = f"{keys.DRAMATIQ_NAMESPACE}:notifications"
        seen: list[tuple[str, str]] = []
        ids = self.redis.lrange(queue, 0, -1)
        for message_id in ids:
            message = json.loads(self.redis.hget(f"{queue}.msgs", message_id) or b"{}")
            request = message["args"][0]
            assert request["id"] == message_id.decode() == message["message_id"]
            seen.append((request["alert"]["id"], request["transition"]))
        assert seen == self.model.notifications
        assert len(set(ids)) == len(ids)


def test_redis_apply_matches_the_model_for_any_sequence(shared_redis: Redis) -> None:
    LifecycleMachine.redis = shared_redis
    run_state_machine_as_test(
        LifecycleMachine,
        settings=settings(
            max_examples=60,
            stateful_step_count=40,
        ),
    )
