"""The lifecycle rules applied to plain Python state: the reference side of the tests."""

from __future__ import annotations

from dataclasses import dataclass, field

from tocsin.common.models import AlertAction, QueuedAlert, StoredAlert
from tocsin.processor.rules import (
    Decision,
    FingerprintState,
    Policy,
    decide_action,
    decide_alert,
    decide_expiry,
    decide_trailing_update,
)


@dataclass
class MemoryStore:
    """Records, fingerprint states, timelines, notifications and events, in memory."""

    policy: Policy = field(default_factory=Policy)
    states: dict[str, FingerprintState] = field(default_factory=dict)
    records: dict[str, StoredAlert] = field(default_factory=dict)
    timelines: dict[str, list[str]] = field(default_factory=dict)
    notifications: list[tuple[str, str]] = field(default_factory=list)
    events: list[tuple[str, str, int]] = field(default_factory=list)  # (kind, alert id, count)
    applied: set[str] = field(default_factory=set)

    def current(self, fingerprint: str) -> StoredAlert | None:
        state = self.states.get(fingerprint)
        return self.records.get(state.alert_id) if state else None

    def _write(self, fingerprint: str, decision: Decision) -> Decision:
        if decision.state is None:
            return decision
        self.states[fingerprint] = decision.state
        record = decision.alert
        if record is not None:
            self.records[record.id] = record
            self.timelines.setdefault(record.id, []).extend(e.kind for e in decision.timeline)
            self.notifications.extend((record.id, kind) for kind in decision.notified)
            if decision.event:
                self.events.append((decision.event, record.id, record.count))
        return decision

    def message(self, queued: QueuedAlert, silenced: bool, now: float) -> Decision:
        if queued.id in self.applied:
            return Decision("replayed")
        self.applied.add(queued.id)
        state = self.states.get(queued.fingerprint, FingerprintState())
        record = self.records.get(state.alert_id)
        decision = decide_alert(record, state, queued, silenced, now, self.policy)
        return self._write(queued.fingerprint, decision)

    def action(self, action: AlertAction, now: float) -> Decision:
        if action.id in self.applied:
            return Decision("replayed")
        self.applied.add(action.id)
        state = self.states.get(action.fingerprint or "", FingerprintState())
        record = self.records.get(state.alert_id)
        decision = decide_action(record, state, action, now, self.policy)
        return self._write(action.fingerprint or "", decision)

    def sweep(self, now: float) -> list[Decision]:
        due = sorted(
            (state.due, state.alert_id, fp)
            for fp, state in self.states.items()
            if state.due and state.due <= now and self.records[state.alert_id].status != "resolved"
        )
        decisions = []
        for _, alert_id, fp in due:
            decision = decide_expiry(self.records[alert_id], self.states[fp], now, self.policy)
            decisions.append(self._write(fp, decision))
        return decisions

    def trailing(self, fingerprint: str, since: float, now: float) -> Decision:
        state = self.states.get(fingerprint, FingerprintState())
        record = self.records.get(state.alert_id)
        return self._write(fingerprint, decide_trailing_update(record, state, since, now))
