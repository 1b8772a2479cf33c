"""Ingest settings."""

from __future__ import annotations

import dataclasses

from tocsin.common.config import setting
from tocsin.common.httplimits import HttpServerSettings
from tocsin.common.tls import TlsSettings

__all__ = ["DEFAULT_PORT", "IngestSettings"]

DEFAULT_PORT = 8081


@dataclasses.dataclass(frozen=True)
class IngestSettings(TlsSettings, HttpServerSettings):
    """Settings of the ingest service."""

    max_body_bytes: int = setting(1_048_576, "Largest accepted request body, in bytes.")
    max_batch: int = setting(1000, "Most alerts accepted in one request.")
    pagerduty_max_body_bytes: int = setting(
        524_288, "Largest accepted PagerDuty Events API v2 body, in bytes (PagerDuty's 512 KB)."
    )
    require_auth: bool = setting(
        True, "Refuse requests without an API key or an `ingest`-scoped JWT (401)."
    )
    auth_cache_seconds: float = setting(
        5.0, "How long a verified API key is trusted without asking Redis again (0: never)."
    )
    rate_per_second: float = setting(
        20_000.0,
        "Alerts per second each producer may send (token bucket refill rate; 0: no limit).",
    )
    rate_burst: int = setting(40_000, "Token bucket size: alerts a producer may send at once.")
    max_backlog: int = setting(
        100_000,
        "Alerts queued for the processor (admitted, not yet applied) past which ingest "
        "answers 503.",
    )
    backlog_retry_after: int = setting(5, "Retry-After, in seconds, sent with a backlog 503.")
    idempotency_ttl_seconds: int = setting(
        86_400, "How long the first answer to an Idempotency-Key is kept and replayed."
    )
