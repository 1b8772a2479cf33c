"""The Redis key layout, in one place.

Every key Tocsin writes starts with `tocsin:`; the part after it names the
purpose. Dramatiq's own queue keys live under `tocsin:dramatiq:`.

| key | type | holds |
| --- | --- | --- |
| `tocsin:alert:{T}{id}` | string (JSON) | the stored alert record (`{T}`: hash tag, below) |
| `tocsin:dedup:{T}{fingerprint}` | hash | `id` (current alert), `flips`, `flapping`, `pub` |
| `tocsin:applied:{T}{message_id}` | string | a message or action already applied (expiring) |
| `tocsin:timeline:{T}{id}` | list | an alert's transitions (JSON), capped |
| `tocsin:notify:alertlog:{id}` | list | the notifier's attempts for an alert (JSON, newest first) |
| `tocsin:idx:all` | sorted set | every alert id by last change (epoch s): retention reads it |
| `tocsin:idx:{dim}:{value}` | sorted set | ids by last change per status/severity/service/team |
| `tocsin:open` | sorted set | unresolved alert ids by `last_seen` |
| `tocsin:resolve:due` | sorted set | open alert ids by when they resolve by themselves |
| `tocsin:services`, `tocsin:teams` | set | service and team values seen on alerts |
| `tocsin:stats:minute:{epoch_minute}` | string | alert messages received that minute (2 h) |
| `tocsin:silence:all` | hash | silence id -> silence (JSON), written by the gateway API |
| `tocsin:silence:version` | string | incremented on every silence change |
| `tocsin:cache:tag:{tag}` | string | generation of a cache tag; writes increment it |
| `tocsin:cache:entry:{digest}` | string | a cached response by query + tag generations |
| `tocsin:chan:{channel}` | hash | `offset` (last assigned) and `epoch` of a channel |
| `tocsin:stream:{channel}` | stream | the capped delivery log of a channel, entry id `{offset}-1` |
| `tocsin:live:{channel}` | pub/sub | live events of a channel |
| `tocsin:health` | string (JSON) | the last computed health score and its components |
| `tocsin:health:signals:{minute}` | hash | health inputs counted by every process in one minute |
| `tocsin:health:dead-letters` | sorted set | dead-letter totals sampled by the health job |
| `tocsin:probe:{node}` | pub/sub | a gateway process's own pub/sub health probes |
| `tocsin:sched:catalog` | hash | schedule name -> its definition (JSON), written by the scheduler |
| `tocsin:sched:state:{schedule}` | hash | `last_fired`, `next_fire`, last run and outcome |
| `tocsin:sched:claim:{schedule}:{fire}` | string | the replica that claimed a fire time |
| `tocsin:sched:pending` | hash | run id -> run (JSON) claimed and not yet finished |
| `tocsin:sched:leases` | sorted set | run id by when its lease lapses into a re-dispatch (ms) |
| `tocsin:sched:run:{run_id}` | string | `running` or `done`: a job run's idempotency record |
| `tocsin:sched:history` | stream | one entry per finished job run (capped) |
| `tocsin:analytics:daily:{date}` | string (JSON) | the daily analytics of one UTC day |
| `tocsin:patterns` | string (JSON) | the latest pattern findings |
| `tocsin:health:cache` | string (JSON) | the latest cache health check |
| `tocsin:apikey:{key_id}` | hash | a producer API key: salted hash, producer, label defaults |
| `tocsin:ratelimit:{producer}` | hash | a producer's ingest token bucket (`tokens`, `at`) |
| `tocsin:idempotency:{producer}:{key}` | string | the first answer to an `Idempotency-Key` (24 h) |
| `tocsin:wake:{queue}` | list | wake-up tokens pushed on enqueue, popped by idle consumers |
| `tocsin:prediction:alert:{id}` | string (JSON) | an incident's prediction (expiring) |
| `tocsin:prediction:episodes:{level}:{value}` | hash | alert id -> `start end how` of episodes |
| `tocsin:prediction:cursor` | string | last change (epoch s) the episode history has read up to |
| `tocsin:prediction:counts:{service}` | hash | epoch hour -> incidents opened that hour |
| `tocsin:prediction:services` | set | services with hourly counts |
| `tocsin:prediction:volume` | string (JSON) | the latest volume forecast |
"""

from __future__ import annotations

import zlib

__all__ = [
    "DRAMATIQ_NAMESPACE",
    "HEALTH",
    "HEALTH_DEAD_LETTER_SAMPLES",
    "NOTIFY_DEAD_LETTERS",
    "NOTIFY_FIRING",
    "NOTIFY_RESOLVED",
    "PREFIX",
    "TAG_LENGTH",
    "alert",
    "alert_index",
    "alert_index_prefix",
    "alert_prefix",
    "analytics_daily",
    "api_key",
    "applied",
    "cache_entry",
    "cache_health",
    "cache_tag",
    "channel_meta",
    "channel_stream",
    "dedup",
    "fingerprint_tag",
    "health_signals",
    "idempotency",
    "known_values",
    "live",
    "notification_log",
    "notify_claim",
    "notify_deliveries",
    "notify_group",
    "notify_group_alerts",
    "notify_group_commit",
    "notify_group_pending",
    "notify_pause",
    "notify_pause_told",
    "notify_rate",
    "open_alerts",
    "pattern_findings",
    "prediction",
    "prediction_counted_services",
    "prediction_counts",
    "prediction_cursor",
    "prediction_episodes",
    "prediction_volume",
    "probe",
    "queue_wakeup",
    "rate_bucket",
    "resolve_due",
    "schedule_catalog",
    "schedule_claim",
    "schedule_history",
    "schedule_leases",
    "schedule_pending",
    "schedule_run",
    "schedule_state",
    "silences",
    "silences_version",
    "stats_minute",
    "stats_minute_prefix",
    "timeline",
]

PREFIX = "tocsin:"
DRAMATIQ_NAMESPACE = "tocsin:dramatiq"
HEALTH = f"{PREFIX}health"
HEALTH_DEAD_LETTER_SAMPLES = f"{PREFIX}health:dead-letters"


def health_signals(minute: int) -> str:
    """The hash of health inputs counted during `minute` (Unix time // 60)."""
    return f"{PREFIX}health:signals:{minute}"


# Hash tags (Redis Cluster computes a key's slot from the text between `{` and `}`):
# the keys of one fingerprint and of its alerts carry the fingerprint's tag, so one
# lifecycle call's per-alert keys share a slot. An alert id minted by ingest ends
# with its fingerprint's tag (`models.new_alert_id`), so a reader holding only the
# id finds the tag in it. The gateway's `api/alerts/records.lua` applies the same
# rule to ids in Lua.
TAG_LENGTH = 4


def fingerprint_tag(fingerprint: str) -> str:
    """The hash tag of a fingerprint's keys: 4 hex digits (65,536 values over 16,384 slots)."""
    return f"{zlib.crc32(fingerprint.encode()) & 0xFFFF:04x}"


def _id_tag(alert_id: str) -> str:
    return alert_id[-TAG_LENGTH:]


def alert(alert_id: str) -> str:
    """An alert's record, in its fingerprint's slot (the tag is the id's last 4 characters)."""
    return f"{alert_prefix()}{{{_id_tag(alert_id)}}}{alert_id}"


def alert_prefix() -> str:
    """What every record key starts with, before its tag (for a script that builds them)."""
    return f"{PREFIX}alert:"


def dedup(fingerprint: str) -> str:
    return f"{PREFIX}dedup:{{{fingerprint_tag(fingerprint)}}}{fingerprint}"


def applied(message_id: str, fingerprint: str) -> str:
    """A message or action applied to `fingerprint`'s alert, in that fingerprint's slot."""
    return f"{PREFIX}applied:{{{fingerprint_tag(fingerprint)}}}{message_id}"


def notification_log(alert_id: str) -> str:
    """Written by the notifier; read by the gateway API, analytics and retention."""
    return f"{PREFIX}notify:alertlog:{alert_id}"


def timeline(alert_id: str) -> str:
    return f"{PREFIX}timeline:{{{_id_tag(alert_id)}}}{alert_id}"


def alert_index(dimension: str = "all", value: str = "") -> str:
    """`tocsin:idx:all`, or the index of one status, severity, service or team value."""
    if dimension == "all":
        return f"{alert_index_prefix()}all"
    return f"{alert_index_prefix()}{dimension}:{value}"


def alert_index_prefix() -> str:
    """What every index key starts with (scripts that name indexes themselves need it)."""
    return f"{PREFIX}idx:"


def open_alerts() -> str:
    return f"{PREFIX}open"


def resolve_due() -> str:
    """Open alerts by their deadline; the processor's sweep resolves those past it."""
    return f"{PREFIX}resolve:due"


def known_values(dimension: str) -> str:
    """`tocsin:services` or `tocsin:teams`."""
    return f"{PREFIX}{dimension}"


def stats_minute(epoch_minute: int) -> str:
    return f"{stats_minute_prefix()}{epoch_minute}"


def stats_minute_prefix() -> str:
    """What every `stats_minute` key starts with (for a script that builds them)."""
    return f"{PREFIX}stats:minute:"


def silences() -> str:
    return f"{PREFIX}silence:all"


def silences_version() -> str:
    return f"{PREFIX}silence:version"


def cache_tag(tag: str) -> str:
    return f"{PREFIX}cache:tag:{tag}"


def cache_entry(digest: str) -> str:
    return f"{PREFIX}cache:entry:{digest}"


def channel_meta(channel: str) -> str:
    return f"{PREFIX}chan:{channel}"


def channel_stream(channel: str) -> str:
    return f"{PREFIX}stream:{channel}"


def live(channel: str) -> str:
    return f"{PREFIX}live:{channel}"


def api_key(key_id: str) -> str:
    return f"{PREFIX}apikey:{key_id}"


def queue_wakeup(queue: str) -> str:
    return f"{PREFIX}wake:{queue}"


def rate_bucket(producer: str) -> str:
    return f"{PREFIX}ratelimit:{producer}"


def idempotency(producer: str, key: str) -> str:
    return f"{PREFIX}idempotency:{producer}:{key}"


# The scheduler's keys (see docs/scheduler.md); the gateway reads them for /v1/schedules.
def schedule_catalog() -> str:
    return f"{PREFIX}sched:catalog"


def schedule_state(schedule: str) -> str:
    return f"{PREFIX}sched:state:{schedule}"


def schedule_claim(schedule: str, fire: int) -> str:
    return f"{PREFIX}sched:claim:{schedule}:{fire}"


def schedule_pending() -> str:
    return f"{PREFIX}sched:pending"


def schedule_leases() -> str:
    return f"{PREFIX}sched:leases"


def schedule_run(run_id: str) -> str:
    return f"{PREFIX}sched:run:{run_id}"


def schedule_history() -> str:
    return f"{PREFIX}sched:history"


def analytics_daily(day: str) -> str:
    """The daily analytics of `day` (YYYY-MM-DD, UTC)."""
    return f"{PREFIX}analytics:daily:{day}"


def pattern_findings() -> str:
    return f"{PREFIX}patterns"


def cache_health() -> str:
    return f"{PREFIX}health:cache"


def probe(node: str) -> str:
    return f"{PREFIX}probe:{node}"


# Prediction (see docs/prediction.md): written by the scheduler's prediction jobs.
def prediction(alert_id: str) -> str:
    """An incident's prediction; read by the gateway and the notifier's auto-pause."""
    return f"{PREFIX}prediction:alert:{alert_id}"


def prediction_episodes(level: str, value: str) -> str:
    """Past episodes of one fingerprint, alertname+service or alertname."""
    return f"{PREFIX}prediction:episodes:{level}:{value}"


def prediction_cursor() -> str:
    return f"{PREFIX}prediction:cursor"


def prediction_counts(service: str) -> str:
    return f"{PREFIX}prediction:counts:{service}"


def prediction_counted_services() -> str:
    return f"{PREFIX}prediction:services"


def prediction_volume() -> str:
    return f"{PREFIX}prediction:volume"


# The notifier's keys, all under `tocsin:notify:` (its attempt log is
# `notification_log` above, since others read it):
#
# | key | type | holds |
# | --- | --- | --- |
# | `tocsin:notify:group:{group}` | hash | `seq`, `last_firing`, `last_sent_at` of a group |
# | `tocsin:notify:group:{group}:alerts` | hash | fingerprint -> the alert's latest `GroupedAlert` |
# | `tocsin:notify:group:{group}:pending` | string | token of the group's one scheduled flush |
# | `tocsin:notify:claim:{receiver}:{group}:{seq}:{state}` | string | `state|token` claim |
# | `tocsin:notify:firing` | hash | fingerprint -> labels and time of firing alerts (inhibition) |
# | `tocsin:notify:resolved` | sorted set | fingerprints by resolve time (a day), for ordering |
# | `tocsin:notify:dlq` | hash | dead letter id -> entry (JSON) |
# | `tocsin:notify:rate:{receiver}` | string | the receiver's limiter (GCRA arrival time) |
# | `tocsin:notify:deliveries:{message_id}` | string | deliveries of one queue message |
# | `tocsin:notify:pause:{alert_id}` | string | until when a likely-transient page is held |
# | `tocsin:notify:pause:{alert_id}:told` | string | the held page's resolve was already told |
NOTIFY_DEAD_LETTERS = f"{PREFIX}notify:dlq"
NOTIFY_FIRING = f"{PREFIX}notify:firing"
NOTIFY_RESOLVED = f"{PREFIX}notify:resolved"


def notify_group(group_key: str) -> str:
    return f"{PREFIX}notify:group:{group_key}"


def notify_group_alerts(group_key: str) -> str:
    return f"{PREFIX}notify:group:{group_key}:alerts"


def notify_group_commit(token: str) -> str:
    """Marks a group flush's commit done, for a minute: a second run of it changes nothing."""
    return f"{PREFIX}notify:commit:{token}"


def notify_group_pending(group_key: str) -> str:
    return f"{PREFIX}notify:group:{group_key}:pending"


def notify_claim(receiver: str, group_key: str, seq: int, state_hash: str) -> str:
    return f"{PREFIX}notify:claim:{receiver}:{group_key}:{seq}:{state_hash}"


def notify_rate(receiver: str) -> str:
    return f"{PREFIX}notify:rate:{receiver}"


def notify_deliveries(message_id: str) -> str:
    return f"{PREFIX}notify:deliveries:{message_id}"


def notify_pause(alert_id: str) -> str:
    return f"{PREFIX}notify:pause:{alert_id}"


def notify_pause_told(alert_id: str) -> str:
    return f"{PREFIX}notify:pause:{alert_id}:told"
