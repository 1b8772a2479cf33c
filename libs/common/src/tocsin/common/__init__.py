"""Shared parts of Tocsin: what two or more services use, and nothing one service owns.

Services import from these modules and from nowhere else in the `tocsin`
namespace; each module's `__all__` is its public surface, pinned by
`tests/test_public_surface.py`. The exception tree (`errors`) is re-exported
here, so `except tocsin.common.TocsinError` needs no deeper import.

apikeys      producer API keys, stored only as salted hashes
auth         JWT verification (HS256, RS256, ES256) and the claims Tocsin reads
bearer       an HTTP request's bearer token checked for a scope: 401/403 problems
broker       the Dramatiq broker with Tocsin's middleware; queue names
cache        read-through Redis cache with tag invalidation
config       typed settings read once from environment variables
errors       the exception tree
events       publishing events to channels with offsets, epochs and a capped log
health       the stored health report's shape (written by the scheduler, served by the gateway)
httplimits   uvicorn's HTTP protocol bounded in bytes, time and pipelining
keys         the Redis key layout
logging      one structured log format
metrics      shared Prometheus metrics, the job-metrics middleware, health-score inputs
models       the alert and event envelopes (msgspec)
ops          /healthz, /readyz and /metrics for every service
pipelining   one pipelined Redis connection for a hot path
prediction   the stored shape of predictions
preview      the template preview's request, read the same by gateway and notifier
problems     RFC 9457 problem+json answers
queue        the queue layer: the one package that knows Dramatiq's Redis layout
redis        Redis connection factories (plain, TLS, Sentinel; sync and asyncio)
regex        user-supplied regexes on RE2
silences     silences in Alertmanager's shape and the rule that mutes an alert
telemetry    OpenTelemetry tracing set-up and propagation
tls          optional TLS for the servers producers and browsers reach
uvicorn_shim every touch of uvicorn's internals, pinned to the versions it was read against
"""

from tocsin.common._version import __version__
from tocsin.common.errors import (
    ConfigError,
    CredentialError,
    FieldError,
    InvalidBodyError,
    InvalidChannelError,
    InvalidInputError,
    InvalidKeyError,
    LimitExceededError,
    OutcomeUnknownError,
    RedisReplyError,
    RemoteError,
    StoreError,
    StoreUnavailableError,
    TocsinError,
    TokenError,
    UnsupportedRegexError,
    UnsupportedUvicornError,
)

__all__ = [
    "ConfigError",
    "CredentialError",
    "FieldError",
    "InvalidBodyError",
    "InvalidChannelError",
    "InvalidInputError",
    "InvalidKeyError",
    "LimitExceededError",
    "OutcomeUnknownError",
    "RedisReplyError",
    "RemoteError",
    "StoreError",
    "StoreUnavailableError",
    "TocsinError",
    "TokenError",
    "UnsupportedRegexError",
    "UnsupportedUvicornError",
    "__version__",
]
