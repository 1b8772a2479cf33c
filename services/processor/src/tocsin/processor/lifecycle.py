"""The alert lifecycle against Redis: read, decide in Python, apply atomically in Lua.

`tocsin.processor.rules` decides; this module does the I/O around it. A batch
is one pipelined read of its fingerprints' states and records, a decision per
message in order (each seeing the previous ones' results), and one pipelined
apply (`lifecycle/apply.lua`). The apply step checks that the fingerprint's
version is still the one the decision was made from and that the message was
not applied before, then writes the decision; a version conflict (another
process wrote the fingerprint meanwhile) re-reads and re-decides just that
message, unless the re-read finds that this batch's own earlier run applied it
(a reply lost to a timeout: docs/queues.md, "Lost replies").

Keys and Redis Cluster: every key the apply step touches is in its KEYS. The
per-alert keys (`dedup`, `applied`, `alert`, `timeline`) carry the
fingerprint's hash tag (`keys.fingerprint_tag`; ingest mints alert ids ending
with it), so they share a slot. The shared ones (`open`, `resolve:due`, the
indexes, `stats:minute:*`, the cache tag, the silence version, channel keys,
the notifications queue) cannot, so one call is not Cluster-safe: a Cluster
deployment would split the apply into the per-alert step and an outbox relayed
to the shared keys (docs/storage.md, "Redis Cluster").

Over 400 lines: the batch read, the decision loop with its conflict re-decide and
the apply calls share the per-batch state and the caches of encoded chunks that
keep the hot path cheap.
"""

from __future__ import annotations

import itertools
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import msgspec
from redis import Redis
from redis.exceptions import NoScriptError

from tocsin.common import keys
from tocsin.common.broker import DELIVER_NOTIFICATION_ACTOR, NOTIFICATIONS_QUEUE
from tocsin.common.events import alert_channels
from tocsin.common.models import AlertAction, QueuedAlert, StoredAlert, label_set
from tocsin.common.pipelining import bulk
from tocsin.common.queue import WAKEUP_TOKENS_KEPT, queue_keys
from tocsin.common.silences import SilenceSet
from tocsin.processor.rules import (
    Decision,
    FingerprintState,
    Policy,
    decide_action,
    decide_alert,
    decide_expiry,
    decide_trailing_update,
    fingerprint_rule,
)
from tocsin.processor.wire import RespChunks, bulks, execute_packed, pack_command

__all__ = [
    "AlertLifecycle",
    "LifecycleConfig",
    "Outcome",
    "fingerprint_rule",
    "matching_labels",
    "notification_message",
]

_PUBLISH_LUA = resources.files("tocsin.common").joinpath("events/publish.lua").read_text()
_APPLY_LUA = resources.files("tocsin.processor").joinpath("lifecycle/apply.lua").read_text()


def apply_script(config: LifecycleConfig) -> str:
    """The apply step with its constants set: they are not sent with every call."""
    constants = (
        f"local LIVE_PREFIX = '{keys.live('')}'\n"
        f"local STATE_FIELDS = {{{', '.join(repr(name) for name in FingerprintState.FIELDS)}}}\n"
        f"local VERSION_FIELD = {FingerprintState.FIELDS.index('v') + 1}\n"
        f"local APPLIED_TTL = {int(config.applied_ttl)}\n"
        f"local TIMELINE_CAP = {int(config.timeline_cap)}\n"
        f"local STREAM_CAP = {int(config.stream_cap)}\n"
        f"local WAKEUP_TOKENS_KEPT = {WAKEUP_TOKENS_KEPT}\n"
    )
    # The shared publish step becomes a local function: its KEYS/ARGV are parameters.
    publish = "local function publish_event(KEYS, ARGV)\n" + _PUBLISH_LUA + "\nend\n"
    return constants + publish + _APPLY_LUA


_encoder = msgspec.json.Encoder()
_record_decoder = msgspec.json.Decoder(StoredAlert)
_NO_SILENCE_CHECK = "-"
# The keys before the variable ones: the per-alert five, open, resolve:due, the
# stats minute, the cache tag and the notifications queue's three (see apply.lua).
_FIXED_KEYS = 12
# Bound on the (service, severity, team) channel sets kept encoded: producers choose them.
_CACHED_CHANNEL_SETS = 10_000
# A conflict means another writer (or this batch's own earlier run) changed the
# fingerprint between read and apply; each retry re-reads, so more than a few in a
# row means something is wrong.
_MAX_ATTEMPTS = 20


def notification_message(
    notification_id: str, transition: str, record: bytes, at: float, traceparent: str
) -> bytes:
    """A `deliver_notification` message, as `tocsin.common.queue.encode_message` encodes it.

    The same JSON document (tests pin it against `encode_message`), built with the
    record's JSON spliced in rather than decoded and encoded again: the lifecycle
    hands over one per notifying transition, on the hot path of every new alert.
    """
    options: dict[str, str] = {"traceparent": traceparent} if traceparent else {}
    options["redis_message_id"] = notification_id
    request = {"id": notification_id, "transition": transition, "alert": msgspec.Raw(record),
               "at": at}  # fmt: skip
    return _encoder.encode(
        {
            "queue_name": NOTIFICATIONS_QUEUE,
            "actor_name": DELIVER_NOTIFICATION_ACTOR,
            "args": [request],
            "kwargs": {},
            "options": options,
            "message_id": notification_id,
            "message_timestamp": int(at * 1000),
        }
    )


def matching_labels(alert: QueuedAlert) -> dict[str, str]:
    """The labels silences match: the alert's label set plus its identifying fields."""
    body = alert.alert
    labels: dict[str, str] = {"severity": body.severity}
    if body.service:
        labels["service"] = body.service
    if body.source:
        labels["source"] = body.source
    labels.update(label_set(body))
    return labels


@dataclass(frozen=True)
class LifecycleConfig:
    """The lifecycle's settings: the rules' policy and what the apply step keeps."""

    policy: Policy = field(default_factory=Policy)
    applied_ttl: int = 86_400
    timeline_cap: int = 100
    stream_cap: int = 10_000


@dataclass(frozen=True)
class Outcome:
    """What one message did: `created`, `duplicate`, `replayed`, `resolved`, ...

    `merged` says a throttled `alert.updated` is owed for `fingerprint`
    (the processor's trailing updates publish it); `published` that an event
    went out with the message's trace context.
    """

    outcome: str
    alert_id: str
    notified: tuple[str, ...]
    fingerprint: str = ""
    merged: bool = False
    published: bool = False


@dataclass(slots=True)
class _Read:
    """A fingerprint's state and current record, as read (or as left by earlier decisions)."""

    state: FingerprintState
    record: StoredAlert | None


@dataclass(slots=True)
class _Call:
    """One apply-step call: its decision, the version it expects, and its context."""

    decision: Decision
    fingerprint: str
    expected: str
    message_id: str = ""
    silence_version: str = _NO_SILENCE_CHECK
    received_at: float = 0.0
    traceparent: str = ""
    counted: bool = False
    previous_due: float = 0.0  # the deadline before the decision


def _back_off(attempt: int) -> None:
    """A short random pause before re-deciding, so two writers of one fingerprint
    stop colliding rather than retrying in step."""
    time.sleep(random.uniform(0, 0.002 * (attempt + 1)))


def _mapping(reply: Any) -> dict[bytes, bytes]:
    """A hash as HGETALL answers it: a map in RESP3, a flat list in RESP2."""
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[::2], reply[1::2], strict=True))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class AlertLifecycle:
    """Applies alerts, user actions, deadlines and trailing updates to stored state."""

    def __init__(
        self, redis: Redis, config: LifecycleConfig, clock: Callable[[], float] | None = None
    ) -> None:
        self._redis = redis
        self._config = config
        self._policy = config.policy
        self._clock = clock or time.time
        # RESP chunks of what every call sends alike, encoded once.
        self._chunk = RespChunks()
        self._silence_chunk = bulk(keys.silences_version().encode())
        self._shared_chunks = b"".join(
            bulk(key.encode()) for key in (keys.open_alerts(), keys.resolve_due())
        )
        tail = [keys.cache_tag("alerts"), *queue_keys(NOTIFICATIONS_QUEUE).as_list()]
        self._tail_chunks = b"".join(bulk(key.encode()) for key in tail)
        self._all_index_chunk = bulk(keys.alert_index().encode())
        self._services_chunk = bulk(keys.known_values("services").encode())
        self._teams_chunk = bulk(keys.known_values("teams").encode())
        self._channels: dict[tuple[str, str, str], tuple[int, bytes, bytes]] = {}
        self._evalsha_chunk = b""
        self._load()
        # Version tokens: unique per write (a redelivered message must not reuse one).
        self._writer = uuid.uuid4().hex[:12]
        self._writes = itertools.count()

    def _token(self) -> str:
        return f"{self._writer}.{next(self._writes)}"

    def _load(self) -> None:
        sha = str(self._redis.script_load(apply_script(self._config)))
        self._evalsha_chunk = bulk(b"EVALSHA") + bulk(sha.encode())

    # -- reading --------------------------------------------------------------

    def _read(self, fingerprints: Sequence[str]) -> dict[str, _Read]:
        reads = [pack_command(b"HGETALL", [bulk(keys.dedup(fp).encode())]) for fp in fingerprints]
        states = [
            FingerprintState.from_hash(_mapping(raw)) for raw in execute_packed(self._redis, reads)
        ]
        return dict(zip(fingerprints, self._with_records(states), strict=True))

    def _with_records(self, states: list[FingerprintState]) -> list[_Read]:
        wanted = [state.alert_id for state in states if state.alert_id]
        records: dict[str, StoredAlert] = {}
        if wanted:
            for alert_id, raw in zip(wanted, self._redis.mget([keys.alert(i) for i in wanted]),
                                     strict=True):  # fmt: skip
                if raw:
                    records[alert_id] = _record_decoder.decode(raw)
        return [_Read(state, records.get(state.alert_id)) for state in states]

    def _read_records(
        self, alert_ids: Sequence[str]
    ) -> list[tuple[StoredAlert | None, FingerprintState]]:
        raws = (
            self._redis.mget([keys.alert(alert_id) for alert_id in alert_ids]) if alert_ids else []
        )
        records = [_record_decoder.decode(raw) if raw else None for raw in raws]
        pipe = self._redis.pipeline(transaction=False)
        for record in records:
            if record is not None:
                pipe.hgetall(keys.dedup(record.fingerprint))
        states = iter(pipe.execute() if any(records) else [])
        return [
            (record, FingerprintState.from_hash(next(states)) if record else FingerprintState())
            for record in records
        ]

    # -- applying -------------------------------------------------------------

    def _command(self, call: _Call) -> bytes:
        """The EVALSHA of one call, packed: keys and values that recur come from
        `self._chunk` (encoded once), the rest is encoded here."""
        chunk = self._chunk
        decision = call.decision
        record = decision.alert
        state = decision.state
        alert_id = decision.alert_id or (record.id if record else "")
        now = self._clock()
        key_chunks = [
            bulk(keys.dedup(call.fingerprint).encode()),
            bulk(keys.applied(call.message_id, call.fingerprint).encode()),
            self._silence_chunk,
            bulk(keys.alert(alert_id).encode()),
            bulk(keys.timeline(alert_id).encode()),
            self._shared_chunks,
            chunk(keys.stats_minute(int(call.received_at // 60))),
            self._tail_chunks,
        ]
        nkeys = _FIXED_KEYS
        text = b""
        removals: list[bytes] = []
        adds: list[bytes] = []
        sets: list[tuple[bytes, str]] = []
        # Untouched unless the alert opens, resolves, or its deadline comes nearer:
        # a later deadline is left to the sweep, which re-scores what is not yet due.
        open_score = due_score = "-"
        if record is not None and state is not None:
            text = _encoder.encode(record)
            if record.status == "resolved":
                open_score = due_score = ""
            else:
                current = state.alert_id == record.id
                if decision.transition:
                    open_score = repr(record.last_seen_ts)
                if current and (decision.transition or state.due != call.previous_due):
                    if not state.due:
                        due_score = ""
                    elif (
                        decision.transition
                        or not call.previous_due
                        or (state.due < call.previous_due)
                    ):
                        due_score = repr(state.due)
            if decision.transition:
                before = decision.before
                team = record.labels.get("team", "")
                if before is not None:
                    if before.status != record.status:
                        removals.append(chunk(keys.alert_index("status", before.status)))
                    if before.severity != record.severity:
                        removals.append(chunk(keys.alert_index("severity", before.severity)))
                adds += [
                    self._all_index_chunk,
                    chunk(keys.alert_index("status", record.status)),
                    chunk(keys.alert_index("severity", record.severity)),
                ]
                if record.service:
                    adds.append(chunk(keys.alert_index("service", record.service)))
                    if before is None:
                        sets.append((self._services_chunk, record.service))
                if team:
                    adds.append(chunk(keys.alert_index("team", team)))
                    if before is None:
                        sets.append((self._teams_chunk, team))
        fields = state.to_values() if state is not None else []
        entries = [_encoder.encode(entry) for entry in decision.timeline] if text else []
        notes: list[bytes] = []
        nchannels = 0
        publish: list[bytes] = []
        if record is not None and text:
            for kind, seq in decision.notifications:
                nid = f"{record.id}:{seq}"
                message = notification_message(nid, kind, text, now, call.traceparent)
                notes += [nid.encode(), message]
            if decision.event:
                team = record.labels.get("team", "")
                nchannels, channel_keys, names = self._channel_chunks(
                    record.service, record.severity, team
                )
                data = b'{"type":"%s","received_at":%s,"alert":%s}' % (
                    decision.event.encode(),
                    repr(call.received_at or now).encode(),
                    text,
                )
                publish = [bulk(data), bulk(call.traceparent.encode()), names]
        key_chunks += removals
        key_chunks += adds
        key_chunks += [key for key, _ in sets]
        if nchannels:
            key_chunks.append(channel_keys)
        nkeys += len(removals) + len(adds) + len(sets) + 2 * nchannels
        counts = (
            f"{len(removals)} {len(adds)} {len(sets)} {nchannels} {len(fields)} "
            f"{len(entries)} {len(notes) // 2}"
        )
        scalars = [call.expected, call.message_id, call.silence_version]
        values = [value.encode() for value in scalars]
        values.append(text)
        scalars = [repr(now), open_score, due_score, "1" if call.counted else "0", counts,
                   alert_id, *fields]  # fmt: skip
        values += [value.encode() for value in scalars]
        values += entries
        values += notes
        nargs = len(values) + len(sets) + (2 + nchannels if publish else 0)
        arg_chunks = [bulks(values)]
        arg_chunks += [chunk(member) for _, member in sets]
        arg_chunks += publish
        return b"*%d\r\n%b%b%b%b" % (
            3 + nkeys + nargs,
            self._evalsha_chunk,
            chunk(str(nkeys)),
            b"".join(key_chunks),
            b"".join(arg_chunks),
        )

    def _channel_chunks(self, service: str, severity: str, team: str) -> tuple[int, bytes, bytes]:
        """An alert's channels for the publish step: how many, their keys, their names."""
        cached = self._channels.get((service, severity, team))
        if cached is None:
            if len(self._channels) >= _CACHED_CHANNEL_SETS:
                self._channels.clear()
            channels = alert_channels(service, severity, team)
            channel_keys = b"".join(
                bulk(key.encode())
                for channel in channels
                for key in (keys.channel_meta(channel), keys.channel_stream(channel))
            )
            names = b"".join(bulk(channel.encode()) for channel in channels)
            cached = self._channels[(service, severity, team)] = (
                len(channels),
                channel_keys,
                names,
            )
        return cached

    def _apply(self, calls: Iterable[_Call]) -> list[str]:
        """Apply `calls` in one pipeline; their results, in order.

        `calls` may be a generator deciding as it goes: each call is packed and
        sent as soon as it is decided, so Python decides the next alerts while
        Redis applies the first (they run on different cores).
        """
        made: list[_Call] = []

        def commands() -> Iterator[bytes]:
            for call in calls:
                made.append(call)
                yield self._command(call)

        try:
            return [_text(result) for result in execute_packed(self._redis, commands())]
        except NoScriptError:
            # Every call is guarded by its version and message id, so a batch that
            # meets a Redis that lost the script (a restart) simply runs again.
            self._load()
        again = execute_packed(self._redis, [self._command(call) for call in made])
        return [_text(result) for result in again]

    # -- alerts ---------------------------------------------------------------

    def apply_alerts(
        self,
        batch: Sequence[QueuedAlert],
        silences: SilenceSet,
        traceparent: str | Sequence[str] = "",
        silence_version: str = "",
    ) -> list[Outcome]:
        """Apply `batch`; an outcome is `stale` (and nothing changed for that alert) when
        the silences moved on from `silence_version`: reload them and apply those again.

        `traceparent` is one for the whole batch, or one per alert (a batch merged
        from several queue messages).
        """
        traces = [traceparent] * len(batch) if isinstance(traceparent, str) else traceparent
        now = self._clock()
        verdicts = [
            silences.mutes(matching_labels(queued), queued.received_at) if silences else False
            for queued in batch
        ]
        outcomes: list[Outcome | None] = [None] * len(batch)
        pending = list(range(len(batch)))
        conflicted: dict[int, tuple[_Call, set[str]]] = {}
        for attempt in range(_MAX_ATTEMPTS):
            # A retry re-reads only the conflicted messages' fingerprints, and asks
            # whether each was applied meanwhile (by another process, say).
            view = self._read(list(dict.fromkeys(batch[n].fingerprint for n in pending)))
            for n, (call, chain) in conflicted.items():
                if view[call.fingerprint].state.version in chain:
                    # The batch ran twice (a reply lost to a timeout, docs/queues.md):
                    # a version from this call on is in Redis, so its first run applied it.
                    outcomes[n] = self._outcome(call, "applied")
            pending = [n for n in pending if outcomes[n] is None]
            applied = self._applied([batch[n] for n in pending]) if attempt else set()
            calls: list[tuple[int, _Call]] = []
            for n in pending:
                if batch[n].id in applied:
                    outcomes[n] = Outcome("replayed", "", (), batch[n].fingerprint)
            # Decided as the pipeline is written: Redis applies the first meanwhile.
            decided = (
                self._decide_into(
                    calls,
                    n,
                    view[batch[n].fingerprint],
                    batch[n],
                    verdicts[n],
                    traces[n],
                    silence_version,
                    now,
                )
                for n in pending
                if batch[n].id not in applied
            )
            results = self._apply(decided)
            pending, conflicted = [], {}
            for (n, call), result in zip(calls, results, strict=True):
                if result == "conflict":
                    pending.append(n)
                    if call.decision.state is not None:
                        conflicted[n] = (call, set())
                else:
                    outcomes[n] = self._outcome(call, result)
                # The versions this call and the later ones on its fingerprint write:
                # each can be written only after the one before it.
                if call.decision.state is not None:
                    for earlier, chain in conflicted.values():
                        if earlier.fingerprint == call.fingerprint:
                            chain.add(call.decision.state.version)
            if not pending:
                return [outcome for outcome in outcomes if outcome is not None]
            _back_off(attempt)
            now = self._clock()
        raise RuntimeError("fingerprints kept changing while a batch was applied; retrying it")

    def _applied(self, messages: Sequence[QueuedAlert]) -> set[str]:
        pipe = self._redis.pipeline(transaction=False)
        for message in messages:
            pipe.exists(keys.applied(message.id, message.fingerprint))
        return {m.id for m, hit in zip(messages, pipe.execute(), strict=True) if hit}

    def _decide_into(
        self,
        calls: list[tuple[int, _Call]],
        n: int,
        read: _Read,
        queued: QueuedAlert,
        silenced: bool,
        trace: str,
        silence_version: str,
        now: float,
    ) -> _Call:
        """Decide the `n`th message from `read`, move `read` on to what it leaves, and
        note the call in `calls`."""
        decision = decide_alert(read.record, read.state, queued, silenced, now, self._policy)
        expected = read.state.version
        previous_due = read.state.due
        if decision.state is not None:
            decision.state.version = self._token()
            read.state = decision.state
            if decision.alert is not None and decision.alert.id == decision.state.alert_id:
                read.record = decision.alert
        call = _Call(
            decision,
            queued.fingerprint,
            expected,
            message_id=queued.id,
            silence_version=silence_version,
            received_at=queued.received_at,
            traceparent=trace,
            counted=True,
            previous_due=previous_due,
        )
        calls.append((n, call))
        return call

    @staticmethod
    def _outcome(call: _Call, result: str) -> Outcome:
        if result in ("replayed", "stale"):
            return Outcome(result, "", (), call.fingerprint)
        decision = call.decision
        return Outcome(
            decision.outcome,
            decision.alert_id,
            decision.notified,
            call.fingerprint,
            decision.merged,
            bool(decision.event),
        )

    # -- actions, deadlines, trailing updates ----------------------------------

    def apply_action(self, action: AlertAction, now: float, traceparent: str = "") -> Outcome:
        for attempt in range(_MAX_ATTEMPTS):
            if action.alert_id:
                [(record, state)] = self._read_records([action.alert_id])
            else:
                read = self._read([action.fingerprint or ""])[action.fingerprint or ""]
                record, state = read.record, read.state
            decision = decide_action(record, state, action, now, self._policy)
            if decision.state is None or record is None:
                return Outcome(decision.outcome, decision.alert_id, ())
            decision.state.version = self._token()
            call = _Call(
                decision,
                record.fingerprint,
                state.version,
                message_id=action.id,
                received_at=action.at or now,
                traceparent=traceparent,
            )
            [result] = self._apply([call])
            if result != "conflict":
                return self._outcome(call, result)
            _back_off(attempt)
        raise RuntimeError(f"alert {action.alert_id or action.fingerprint} kept changing")

    def expire_stale(self, now: float, limit: int = 1000) -> list[Outcome]:
        """Resolve open alerts whose deadline (`ends_at` or a resolve timeout) has passed."""
        due: list[bytes] = self._redis.zrangebyscore(  # type: ignore[assignment]
            keys.resolve_due(), "-inf", now, start=0, num=limit
        )
        outcomes = []
        for alert_id in (raw.decode() for raw in due):
            outcomes.append(self._expire(alert_id, now))
        return outcomes

    def _expire(self, alert_id: str, now: float) -> Outcome:
        for attempt in range(_MAX_ATTEMPTS):
            [(record, state)] = self._read_records([alert_id])
            decision = decide_expiry(record, state, now, self._policy)
            if decision.state is None or record is None:
                if decision.outcome in ("unknown", "unchanged"):
                    # Nothing resolves it any more by time: it leaves the deadlines.
                    self._redis.zrem(keys.resolve_due(), alert_id)
                elif decision.outcome == "pending":
                    # Refreshed since it was scored (refreshes do not re-score: see _arguments).
                    self._redis.zadd(keys.resolve_due(), {alert_id: state.due})
                return Outcome(decision.outcome, alert_id, ())
            decision.state.version = self._token()
            call = _Call(decision, record.fingerprint, state.version, received_at=now)
            [result] = self._apply([call])
            if result != "conflict":
                return self._outcome(call, result)
            _back_off(attempt)
        raise RuntimeError(f"alert {alert_id} kept changing")

    def publish_trailing(self, owed: Sequence[tuple[str, float]]) -> list[Outcome]:
        """Publish the last state of each (fingerprint, since) whose alert had no
        `alert.updated` out since `since`: one pipelined read, one pipelined apply."""
        if not owed:
            return []
        view = self._read(list(dict.fromkeys(fp for fp, _ in owed)))
        calls: list[_Call] = []
        for fp, since in owed:
            read = view[fp]
            decision = decide_trailing_update(read.record, read.state, since, self._clock())
            expected = read.state.version
            if decision.state is not None:
                decision.state.version = self._token()
                read.state = decision.state
            received = read.record.last_seen_ts if read.record else 0.0
            # The deadline is not this write's business: `previous_due` leaves it as is.
            due = decision.state.due if decision.state else 0.0
            calls.append(_Call(decision, fp, expected, received_at=received, previous_due=due))
        writes = [call for call in calls if call.decision.state is not None]
        results = iter(self._apply(writes))
        outcomes = []
        for (fp, since), call in zip(owed, calls, strict=True):
            result = next(results) if call.decision.state is not None else "applied"
            if result == "conflict":
                # Written meanwhile: that write either published or owes its own update.
                [outcome] = self.publish_trailing([(fp, since)])
                outcomes.append(outcome)
            else:
                outcomes.append(self._outcome(call, result))
        return outcomes
