"""The lifecycle script against a reference model, driven by hypothesis.

Any sequence of fires, resolves, replays, user actions, clock advances and
auto-resolve sweeps must leave the stored alerts and the notification queue
exactly as the model (a plain restatement of the rules) says.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from redis import Redis

from tocsin.common import keys
from tocsin.common.models import AlertAction, AlertIn, QueuedAlert
from tocsin.common.redis import sync_client
from tocsin.common.server import RedisServer
from tocsin.common.silences import Matcher, Silence, SilenceSet
from tocsin.processor.lifecycle import AlertLifecycle, LifecycleConfig

WINDOW = 60.0
FLAP_COUNT = 2
FLAP_WINDOW = 120.0
TIMEOUT = 300.0
RANK = {"info": 1, "warning": 2, "error": 3, "critical": 4}
FINGERPRINTS = ("fp-a", "fp-b")
SEVERITIES = tuple(RANK)
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


@dataclass
class ModelAlert:
    id: str
    status: str
    severity: str
    count: int
    last_seen: float
    silenced: bool
    flapping: bool


@dataclass
class ModelFingerprint:
    current: ModelAlert | None = None
    flips: list[float] = field(default_factory=list)
    flapping: bool = False


class Model:
    """The rules of issue 5, written plainly."""

    def __init__(self) -> None:
        self.fingerprints = {fp: ModelFingerprint() for fp in FINGERPRINTS}
        self.notifications: list[tuple[str, str]] = []
        self.applied: set[str] = set()

    def _notify(self, alert: ModelAlert, state: ModelFingerprint, kind: str) -> None:
        if not alert.silenced and not state.flapping:
            self.notifications.append((alert.id, kind))

    def _flip(self, alert: ModelAlert, state: ModelFingerprint, now: float) -> bool:
        state.flips = [t for t in state.flips if t > now - FLAP_WINDOW] + [now]
        if len(state.flips) > FLAP_COUNT:
            if not state.flapping:
                state.flapping = alert.flapping = True
                if not alert.silenced:
                    self.notifications.append((alert.id, "flapping"))
        elif state.flapping:
            state.flapping = alert.flapping = False
        return state.flapping

    def _resolve(self, alert: ModelAlert, state: ModelFingerprint, now: float) -> None:
        alert.status = "resolved"
        held = self._flip(alert, state, now)
        if not held and not alert.silenced:
            self.notifications.append((alert.id, "resolved"))

    def message(
        self, msg_id: str, fp: str, status: str, severity: str, silenced: bool, now: float
    ) -> None:
        if msg_id in self.applied:
            return
        self.applied.add(msg_id)
        state = self.fingerprints[fp]
        cur = state.current
        if cur and (status == "resolved" or cur.status != "resolved"):
            prev = cur.last_seen
            cur.count += 1
            cur.last_seen = max(cur.last_seen, now)
            if status == "resolved":
                if cur.status != "resolved":
                    self._resolve(cur, state, now)
                return
            was_silenced, cur.silenced = cur.silenced, silenced
            if now - prev > WINDOW:
                cur.status, cur.severity = "firing", severity
                self._notify(cur, state, "firing")
            elif severity != cur.severity:
                up = RANK[severity] > RANK[cur.severity]
                cur.severity = severity
                if up:
                    self._notify(cur, state, "escalated")
            elif was_silenced and not silenced and cur.status == "firing":
                self._notify(cur, state, "firing")
            return
        new = ModelAlert(msg_id, status, severity, 1, now, silenced, state.flapping)
        state.current = new
        if status == "firing":
            held = self._flip(new, state, now) if cur else False
            if not held and not silenced:
                self.notifications.append((new.id, "firing"))

    def action(self, action_id: str, fp: str, kind: str, now: float) -> None:
        if action_id in self.applied:
            return
        self.applied.add(action_id)
        state = self.fingerprints[fp]
        cur = state.current
        if cur is None:
            return
        if kind == "acknowledge" and cur.status == "firing":
            cur.status = "acknowledged"
            self._notify(cur, state, "acknowledged")
        elif kind == "unacknowledge" and cur.status == "acknowledged":
            cur.status = "firing"
        elif kind == "resolve" and cur.status != "resolved":
            self._resolve(cur, state, now)

    def sweep(self, now: float) -> None:
        stale = [
            state
            for state in self.fingerprints.values()
            if state.current
            and state.current.status != "resolved"
            and state.current.last_seen <= now - TIMEOUT
        ]
        # The sweep visits alerts by last_seen, then id (the sorted set's order).
        stale.sort(key=lambda s: (s.current.last_seen, s.current.id))  # type: ignore[union-attr]
        for state in stale:
            assert state.current is not None
            self._resolve(state.current, state, now)


_server: RedisServer | None = None


@pytest.fixture(scope="module")
def shared_redis() -> Iterator[Redis]:
    global _server
    with RedisServer() as server:
        _server = server
        yield sync_client(server.url)
        _server = None


class LifecycleMachine(RuleBasedStateMachine):
    redis: Redis

    def __init__(self) -> None:
        super().__init__()
        self.redis.flushall()
        self.lifecycle = AlertLifecycle(
            self.redis,
            LifecycleConfig(window=WINDOW, flap_count=FLAP_COUNT, flap_window=FLAP_WINDOW),
        )
        self.model = Model()
        self.now = 1_000_000.0
        self.sent: list[QueuedAlert] = []
        self.serial = 0

    def _next_id(self, prefix: str) -> str:
        self.serial += 1
        return f"{prefix}{self.serial:05d}"

    @rule(
        fp=st.sampled_from(FINGERPRINTS),
        status=st.sampled_from(["firing", "firing", "resolved"]),
        severity=st.sampled_from(SEVERITIES),
        muted=st.booleans(),
    )
    def message(self, fp: str, status: str, severity: str, muted: bool) -> None:
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
            ),
        )
        self.sent.append(queued)
        self.lifecycle.apply_alerts([queued], MUTING)
        self.model.message(queued.id, fp, status, severity, muted, self.now)

    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        if not self.sent:
            return
        queued = data.draw(st.sampled_from(self.sent))
        self.lifecycle.apply_alerts([queued], MUTING)
        labels = queued.alert.labels
        self.model.message(
            queued.id,
            queued.fingerprint,
            queued.alert.status,
            queued.alert.severity,
            labels.get("muted") == "yes",
            queued.received_at,
        )

    @rule(
        fp=st.sampled_from(FINGERPRINTS),
        kind=st.sampled_from(["acknowledge", "unacknowledge", "resolve"]),
    )
    def user_action(self, fp: str, kind: str) -> None:
        action = AlertAction(id=self._next_id("a"), action=kind, fingerprint=fp, by="u")  # type: ignore[arg-type]
        self.lifecycle.apply_action(action, self.now)
        self.model.action(action.id, fp, kind, self.now)

    @rule(seconds=st.sampled_from([0.5, 1.0, 10.0, 59.5, 61.0, 150.0, 301.0]))
    def advance_clock(self, seconds: float) -> None:
        self.now += seconds

    @rule()
    def auto_resolve_sweep(self) -> None:
        self.lifecycle.expire_stale(self.now, TIMEOUT)
        self.model.sweep(self.now)

    @invariant()
    def stored_state_matches_model(self) -> None:
        for fp, state in self.model.fingerprints.items():
            current_id = self.redis.hget(keys.dedup(fp), "id")
            if state.current is None:
                assert current_id is None
                continue
            assert current_id == state.current.id.encode()
            record = json.loads(self.redis.get(keys.alert(state.current.id)) or b"{}")
            expected = state.current
            assert (
                record["status"],
                record["severity"],
                record["count"],
                record["silenced"],
                record["flapping"],
            ) == (
                expected.status,
                expected.severity,
                expected.count,
                expected.silenced,
                expected.flapping,
            )

    @invariant()
    def notification_queue_matches_model(self) -> None:
        queue = f"{keys.DRAMATIQ_NAMESPACE}:notifications"
        ids = self.redis.lrange(queue, 0, -1)
        seen: list[tuple[str, str]] = []
        for message_id in ids:
            message = json.loads(self.redis.hget(f"{queue}.msgs", message_id) or b"{}")
            request = message["args"][0]
            seen.append((request["alert"]["id"], request["transition"]))
            assert request["id"] == message_id.decode()
        assert seen == self.model.notifications
        assert len(set(ids)) == len(ids)


def test_any_sequence_of_events_gives_the_reference_models_state(shared_redis: Redis) -> None:
    LifecycleMachine.redis = shared_redis
    run_state_machine_as_test(
        LifecycleMachine,
        settings=settings(
            max_examples=60,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
