"""The compact episode history predictions read, kept beside the alert records.

Alert records have no index by fingerprint or alertname, and reading hundreds
of records per prediction would cost far more than the 5 ms a prediction may
take. So the `predict_incident` actor writes each incident's episode when it
opens and when it resolves (the processor asks for both), and a scheduled job
(`refresh`) follows the time index `tocsin:idx:all` from a cursor for the
rest (resolves by people and by the auto-resolve sweep). Together they keep,
per fingerprint, per alertname+service and per alertname, a hash of the
latest episodes (`tocsin:prediction:episodes:*`): alert id -> `start end how`.
`end` is `-` while open; `how` is `s` for an end the alert reached by itself
(its producer resolved it, or it went quiet and was auto-resolved, which ends
it at its last repeat) or `m` for a person's resolve, which is censored. A
prediction reads three hashes in one round trip.

The same pass counts incidents opened per service and hour for the volume
forecast (`tocsin:prediction:counts:{service}`): an episode counts once, when
its alert id is first written to its fingerprint's hash.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from redis import Redis

from tocsin.common import keys
from tocsin.scheduler import alertdata
from tocsin.scheduler.alertdata import AlertRecord
from tocsin.scheduler.prediction.incidents import Episode, Level

__all__ = ["AUTO_RESOLVER", "EpisodeHistory", "episode_of", "level_values"]

AUTO_RESOLVER = "auto-resolve"  # `resolved_by` of the processor's quiet-producer sweep
# Changes are re-read this far behind the cursor: index scores come from the
# ingest hosts' clocks, the cursor from Redis's, and a re-read is harmless.
CURSOR_OVERLAP_SECONDS = 60.0


def level_values(fingerprint: str, name: str, service: str) -> dict[Level, str]:
    """The value naming an incident's history at each level."""
    return {
        Level.FINGERPRINT: fingerprint,
        Level.NAME_SERVICE: json.dumps([name, service]),
        Level.NAME: name,
    }


def episode_of(record: AlertRecord) -> Episode | None:
    """The episode an alert record is, or None for one that opened already resolved."""
    if record.status != "resolved" or record.resolved_at is None:
        return Episode(record.id, record.first_seen)
    if record.resolved_by == AUTO_RESOLVER:
        # It ended when its producer stopped repeating it, not when the sweep noticed.
        return Episode(record.id, record.first_seen, record.last_seen, True)
    if record.resolved_by == record.producer:
        if record.count == 0:
            # Its first message was a resolve (a resolve is not an occurrence, so
            # `count` counts firing messages only: docs/lifecycle.md): no episode was seen.
            return None
        return Episode(record.id, record.first_seen, record.resolved_at, True)
    return Episode(record.id, record.first_seen, record.resolved_at, False)


def _encode(episode: Episode) -> str:
    end = "-" if episode.end is None else repr(episode.end)
    return f"{episode.start!r} {end} {'s' if episode.self_resolved else 'm'}"


def _decode(alert_id: str, text: str) -> Episode | None:
    try:
        start, end, how = text.split(" ")
        return Episode(alert_id, float(start), None if end == "-" else float(end), how == "s")
    except ValueError:
        return None


class _LazyHistory(Mapping[Level, list[Episode]]):
    """Episodes per level, decoded from the raw hashes on first access."""

    def __init__(self, raw: dict[Level, dict[bytes, bytes]]) -> None:
        self._raw = raw
        self._decoded: dict[Level, list[Episode]] = {}

    def __getitem__(self, level: Level) -> list[Episode]:
        if level not in self._decoded:
            episodes = (_decode(k.decode(), v.decode()) for k, v in self._raw[level].items())
            self._decoded[level] = [e for e in episodes if e is not None]
        return self._decoded[level]

    def __iter__(self) -> Iterator[Level]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)


@dataclass(frozen=True)
class RefreshSummary:
    """What one pass of the history job did."""

    records: int
    new_episodes: int
    trimmed_keys: int
    cursor: float

    def as_dict(self) -> dict[str, float | int]:
        return {
            "records": self.records,
            "new_episodes": self.new_episodes,
            "trimmed_keys": self.trimmed_keys,
            "cursor": self.cursor,
        }


class EpisodeHistory:
    """Reads and keeps the per-level episode hashes and the hourly counts."""

    def __init__(
        self,
        redis: Redis,
        *,
        cap: int = 200,
        ttl_seconds: int = 30 * 86_400,
        lookback_seconds: float = 14 * 86_400,
    ) -> None:
        self._redis = redis
        self._cap = cap
        self._ttl = ttl_seconds
        self._lookback = lookback_seconds

    def history(self, fingerprint: str, name: str, service: str) -> Mapping[Level, list[Episode]]:
        """The kept episodes of an incident's fingerprint, alertname+service and alertname.

        Read in one round trip; each level is decoded only when asked for, since a
        prediction usually stops at the first.
        """
        values = level_values(fingerprint, name, service)
        pipe = self._redis.pipeline(transaction=False)
        for level, value in values.items():
            pipe.hgetall(keys.prediction_episodes(level.name.lower(), value))
        return _LazyHistory(dict(zip(values, pipe.execute(), strict=True)))

    def record(self, records: Iterable[AlertRecord]) -> tuple[int, int]:
        """Write the episodes of `records`; (new episodes, hashes trimmed to the cap)."""
        written: list[tuple[AlertRecord, Episode]] = []
        for record in records:
            episode = episode_of(record)
            if episode is not None:
                written.append((record, episode))
        if not written:
            return 0, 0
        pipe = self._redis.pipeline(transaction=False)
        touched: dict[str, None] = {}
        for record, episode in written:
            for level, value in level_values(
                record.fingerprint, record.name, record.service
            ).items():
                key = keys.prediction_episodes(level.name.lower(), value)
                pipe.hset(key, episode.alert_id, _encode(episode))
                touched[key] = None
        for key in touched:
            pipe.expire(key, self._ttl)
            pipe.hlen(key)
        replies = pipe.execute()
        lengths = replies[len(written) * len(Level) :][1::2]
        new = 0
        pipe = self._redis.pipeline(transaction=False)
        for n, (record, episode) in enumerate(written):
            if replies[n * len(Level)]:  # first write of this id in its fingerprint's hash
                new += 1
                counts = keys.prediction_counts(record.service)
                pipe.hincrby(counts, str(int(episode.start // 3600 * 3600)), 1)
                pipe.expire(counts, self._ttl)
                pipe.sadd(keys.prediction_counted_services(), record.service)
        if new:
            pipe.execute()
        trimmed = 0
        for key, length in zip(touched, lengths, strict=True):
            # Trimmed in bulk past 1.5x the cap, so a busy key is not re-sorted every pass.
            if int(length) > self._cap * 3 // 2:
                self._trim(key)
                trimmed += 1
        return new, trimmed

    def _trim(self, key: str) -> None:
        raw: dict[bytes, bytes] = self._redis.hgetall(key)  # type: ignore[assignment]
        starts = []
        for field, value in raw.items():
            episode = _decode(field.decode(), value.decode())
            starts.append((episode.start if episode else 0.0, field))
        starts.sort()
        oldest = [field for _, field in starts[: len(starts) - self._cap]]
        if oldest:
            self._redis.hdel(key, *oldest)

    def refresh(self, now: float, *, batch: int = 200) -> RefreshSummary:
        """Read the alerts changed since the cursor and record their episodes."""
        raw = self._redis.get(keys.prediction_cursor())
        since = float(raw) - CURSOR_OVERLAP_SECONDS if raw else now - self._lookback
        records = 0
        new = 0
        trimmed = 0
        page: list[AlertRecord] = []
        for record in alertdata.alerts_changed_since(self._redis, since, batch):
            page.append(record)
            if len(page) >= batch:
                added, cut = self.record(page)
                records, new, trimmed = records + len(page), new + added, trimmed + cut
                page = []
        added, cut = self.record(page)
        records, new, trimmed = records + len(page), new + added, trimmed + cut
        self._redis.set(keys.prediction_cursor(), repr(now))
        return RefreshSummary(records, new, trimmed, now)
