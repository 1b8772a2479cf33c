"""Gateway settings, read once from `TOCSIN_*` environment variables."""

from __future__ import annotations

import dataclasses

from tocsin.common.config import setting
from tocsin.common.httplimits import HttpServerSettings
from tocsin.common.tls import TlsSettings

__all__ = ["DEFAULT_PORT", "GatewaySettings"]

DEFAULT_PORT = 8080


@dataclasses.dataclass(frozen=True)
class GatewaySettings(TlsSettings, HttpServerSettings):
    """Settings of the gateway service."""

    notifier_url: str = setting(
        "",
        "Base URL of the notifier's HTTP server (its ops port), which renders template "
        "previews; empty: previews answer 503.",
    )
    notifier_timeout: float = setting(
        10.0,
        "Seconds to wait for the notifier's answer to a forwarded template preview "
        "before answering 503 (a render takes at most 1 s of CPU; the rest is a loaded host).",
    )
    outbound_queue_frames: int = setting(1000, "Most frames queued for one socket.")
    outbound_queue_bytes: int = setting(
        4 * 1024 * 1024, "Most bytes queued for one socket before it is a slow consumer."
    )
    max_subscriptions: int = setting(128, "Most channel subscriptions per socket.")
    api_cache_ttl_seconds: float = setting(
        60.0, "Longest life of a cached /v1/alerts or /v1/stats response (writes invalidate it)."
    )
    max_connections: int = setting(
        20_000, "Most open sockets per gateway process, authenticated or not."
    )
    max_unauthenticated: int = setting(
        1_000, "Most sockets per gateway process waiting for their `auth` frame."
    )
    max_frame_bytes: int = setting(64 * 1024, "Largest inbound WebSocket frame accepted.")
    allowed_origins: tuple[str, ...] = setting(
        (), "Browser origins allowed to connect, comma-separated (empty: any origin)."
    )
    read_rate_bytes: int = setting(
        65_536,
        "Bytes a second each socket may send on average, each frame counting 1 KiB more; "
        "beyond, the gateway stops reading it until the budget refills (0: no limit).",
    )
    read_burst_bytes: int = setting(
        262_144, "Bytes a socket may send at once before `TOCSIN_READ_RATE_BYTES` applies."
    )
    auth_timeout: float = setting(
        10.0,
        "Seconds a socket may take to send its `auth` frame (each socket up to a quarter "
        "more, at random, so that sockets opened together do not time out together).",
    )
    heartbeat_interval: float = setting(25.0, "Seconds between WebSocket pings to each socket.")
    heartbeat_timeout: float = setting(10.0, "Seconds to wait for a pong before closing.")
    admission_lag: float = setting(
        0.5,
        "Seconds the event loop may run late (the last samples, smoothed) before new "
        "sockets are refused with HTTP 503 and Retry-After (0: never for lag).",
    )
    token_warning: float = setting(
        60.0, "Seconds before a token's expiry at which the socket is warned to refresh."
    )
    token_grace: float = setting(
        10.0, "Seconds after a token's expiry before an unrefreshed socket is closed."
    )
    history_batch: int = setting(500, "Stream entries read per XRANGE call during recovery.")
    probe_interval: float = setting(1.0, "Seconds between pub/sub health probes.")
    probe_timeout: float = setting(
        5.0, "Seconds without a probe coming back through pub/sub before /readyz fails."
    )
    drain_window: float = setting(
        10.0, "Seconds over which sockets are closed on SIGTERM (keep below the grace period)."
    )
    close_timeout: float = setting(
        5.0,
        "Seconds to wait for a close frame to be written before dropping the socket "
        "(drain_window + 2 x close_timeout must stay below the termination grace period).",
    )
    ws_implementation: str = setting(
        "tocsin",
        "WebSocket server: tocsin (the gateway's own), or uvicorn's websockets-sansio, "
        "websockets or wsproto (for comparison).",
    )
