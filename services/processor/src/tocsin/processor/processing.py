"""The processor's work, free of Dramatiq: batches, actions, the silence set, the sweep
of deadlines and the trailing updates the throttle owes."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
from redis import Redis

from tocsin.common import keys
from tocsin.common.cache import CACHE_INVALIDATIONS
from tocsin.common.models import AlertAction, QueuedAlert
from tocsin.common.silences import Silence, SilenceSet
from tocsin.processor import metrics
from tocsin.processor.lifecycle import AlertLifecycle, Outcome, fingerprint_rule

__all__ = ["AlertProcessor", "AutoResolveSweep", "Silences", "TrailingUpdates"]

log = logging.getLogger(__name__)

# Outcomes that change nothing a reader can see.
_NO_CHANGE = frozenset({"replayed", "unchanged", "unknown", "pending", "updated", "outdated"})
_silence_decoder = msgspec.json.Decoder(Silence)


class Silences:
    """The silences as last loaded, and the version they were loaded at.

    Nothing is read per batch: the lifecycle script compares the version with
    `tocsin:silence:version` and answers `stale` when they differ, and only
    then are the silences reloaded.
    """

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._lock = threading.Lock()
        self.version = ""
        self.active = SilenceSet()
        self.reload()

    def reload(self) -> None:
        with self._lock:
            pipe = self._redis.pipeline(transaction=True)
            pipe.get(keys.silences_version())
            pipe.hgetall(keys.silences())
            version, raw = pipe.execute()
            loaded = []
            for silence_id, body in raw.items():
                try:
                    loaded.append(_silence_decoder.decode(body))
                except msgspec.DecodeError:
                    log.warning("unreadable silence %s skipped", silence_id.decode())
            self.active = SilenceSet(loaded)
            self.version = version.decode() if version else ""
            metrics.SILENCES.set(len(loaded))


def _count(outcomes: Sequence[Outcome]) -> None:
    # Tallied first, then one label lookup per distinct value: on a batch of
    # hundreds of alerts the lookups would otherwise cost more than the rest.
    kinds = Counter(outcome.outcome for outcome in outcomes)
    notified = Counter(transition for outcome in outcomes for transition in outcome.notified)
    changed = 0
    for kind, count in kinds.items():
        metrics.MESSAGES.labels(kind).inc(count)
        if kind == "duplicate":
            metrics.DEDUPLICATED.inc(count)
        elif kind not in _NO_CHANGE:
            metrics.TRANSITIONS.labels(kind).inc(count)
            changed += count  # the script incremented the `alerts` cache tag
    for transition, count in notified.items():
        metrics.NOTIFICATIONS.labels(transition).inc(count)
    if changed:
        CACHE_INVALIDATIONS.labels("alerts").inc(changed)


class AlertProcessor:
    """Decodes queue payloads and applies them, with metrics."""

    def __init__(
        self,
        lifecycle: AlertLifecycle,
        silences: Silences,
        trailing: TrailingUpdates | None = None,
        after_apply: Callable[[Sequence[Outcome]], object] | None = None,
    ) -> None:
        self._lifecycle = lifecycle
        self._silences = silences
        self._trailing = trailing
        # Runs once the batch is stored and published (the prediction requests).
        self._after_apply = after_apply

    def process_alerts(self, batch: list[Any], traceparent: str = "") -> list[Outcome]:
        [outcomes] = self.process_alert_messages([(batch, traceparent)])
        return outcomes

    def process_alert_messages(
        self, messages: Sequence[tuple[list[Any], str]]
    ) -> list[list[Outcome]]:
        """Apply several queue messages' alerts in one pipeline; their outcomes, per message.

        Each message is (its alerts as builtins, its traceparent); a message whose
        alerts do not decode raises before anything is applied.
        """
        started = time.perf_counter()
        decoded = [msgspec.convert(batch, list[QueuedAlert]) for batch, _ in messages]
        queued = [item for batch in decoded for item in batch]
        traces = [trace for batch, (_, trace) in zip(decoded, messages, strict=True)
                  for _ in batch]  # fmt: skip
        outcomes = self._apply(queued, traces)
        if self._trailing is not None:
            for outcome in outcomes:
                if outcome.merged:
                    self._trailing.owe(outcome.fingerprint)
        if self._after_apply is not None:
            self._after_apply(outcomes)
        metrics.PROCESSING_SECONDS.labels("alerts").observe(time.perf_counter() - started)
        for batch in decoded:
            metrics.BATCH_SIZE.observe(len(batch))
        for rule, count in Counter(fingerprint_rule(item) for item in queued).items():
            metrics.FINGERPRINT_RULE.labels(rule).inc(count)
        _count(outcomes)
        split: list[list[Outcome]] = []
        at = 0
        for batch in decoded:
            split.append(outcomes[at : at + len(batch)])
            at += len(batch)
        return split

    def _apply(self, queued: list[QueuedAlert], traces: list[str]) -> list[Outcome]:
        silences = self._silences
        outcomes = self._lifecycle.apply_alerts(queued, silences.active, traces, silences.version)
        for _ in range(5):
            # Stale outcomes form a suffix: the version only moves forward.
            stale = [n for n, outcome in enumerate(outcomes) if outcome.outcome == "stale"]
            if not stale:
                return outcomes
            silences.reload()
            again = self._lifecycle.apply_alerts(
                [queued[n] for n in stale],
                silences.active,
                [traces[n] for n in stale],
                silences.version,
            )
            for n, outcome in zip(stale, again, strict=True):
                outcomes[n] = outcome
        raise RuntimeError("silences kept changing while a batch was applied; retrying it")

    def apply_action(self, action: Any, traceparent: str = "") -> Outcome:
        started = time.perf_counter()
        decoded = msgspec.convert(action, AlertAction)
        outcome = self._lifecycle.apply_action(decoded, time.time(), traceparent)
        metrics.PROCESSING_SECONDS.labels("action").observe(time.perf_counter() - started)
        _count([outcome])
        return outcome


class AutoResolveSweep:
    """A thread resolving alerts whose deadline passed: `ends_at`, or a resolve timeout
    after the last message (as Alertmanager's `resolve_timeout`)."""

    def __init__(
        self,
        lifecycle: AlertLifecycle,
        interval: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._lifecycle = lifecycle
        self._interval = interval
        self._clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="auto-resolve", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def sweep_once(self) -> list[Outcome]:
        outcomes = self._lifecycle.expire_stale(self._clock())
        resolved = sum(1 for outcome in outcomes if outcome.outcome == "resolved")
        metrics.AUTO_RESOLVED.inc(resolved)
        _count(outcomes)
        return outcomes

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.sweep_once()
            except Exception:
                log.exception("auto-resolve sweep failed; retrying next interval")


class TrailingUpdates:
    """A thread publishing the `alert.updated` the update throttle merged.

    The throttle lets one `alert.updated` of a repeating alert out per interval;
    the ones it merges are owed here and the last state goes out one interval
    later, unless an event published meanwhile already carried it. Idle, the
    thread waits on a condition, not a poll. What is owed lives in this process:
    a crash loses at most one trailing update per alert, which the alert's next
    event makes good.
    """

    def __init__(
        self,
        lifecycle: AlertLifecycle,
        interval: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._lifecycle = lifecycle
        self._interval = interval
        self._clock = clock
        self._owed: dict[str, tuple[float, float]] = {}  # fingerprint -> (due, last merge)
        self._changed = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="trailing-updates", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify()

    def owe(self, fingerprint: str) -> None:
        now = self._clock()
        with self._changed:
            # Dues only grow (now + interval), so insertion order is due order and an
            # update keeps its entry's place; the waiter needs waking only when idle.
            owed = self._owed.get(fingerprint)
            self._owed[fingerprint] = (owed[0] if owed else now + self._interval, now)
            if len(self._owed) == 1:
                self._changed.notify()

    def flush_due(self) -> list[Outcome]:
        """Publish what is due now; the outcomes (`updated`, or `unchanged` if not needed)."""
        now = self._clock()
        due: list[tuple[str, float]] = []
        with self._changed:
            for fp, (at, merged) in self._owed.items():
                if at > now:
                    break
                due.append((fp, merged))
            for fp, _ in due:
                del self._owed[fp]
        return self._lifecycle.publish_trailing(due)

    def _wait(self) -> bool:
        with self._changed:
            while not self._stopping:
                if self._owed:
                    wait = next(iter(self._owed.values()))[0] - self._clock()
                    if wait <= 0:
                        return True
                    self._changed.wait(wait)
                else:
                    self._changed.wait()
            return False

    def _run(self) -> None:
        while self._wait():
            try:
                self.flush_due()
            except Exception:
                log.exception("trailing updates failed; retrying shortly")
                with self._changed:
                    self._changed.wait(self._interval)
