"""`tocsin ingest`: run the ingest service."""

from __future__ import annotations

from tocsin.common.auth import TokenVerifier
from tocsin.common.config import load_settings
from tocsin.common.logging import configure_logging
from tocsin.common.ops import serve
from tocsin.common.redis import async_client
from tocsin.common.telemetry import instrument_app, setup_observability
from tocsin.ingest.app import build_app
from tocsin.ingest.httpserver import CoalescingHttpToolsProtocol
from tocsin.ingest.settings import DEFAULT_PORT, IngestSettings

__all__ = ["run"]


def run() -> None:
    settings = load_settings(IngestSettings)
    configure_logging("ingest", settings.log_format, settings.log_level)
    setup_observability("ingest", settings.redis_url)
    verifier = None
    if settings.jwt_secret or settings.jwt_public_key:
        verifier = TokenVerifier.from_settings(settings)
    # The client is created here but connects lazily, on the server's event loop.
    redis = async_client(settings.redis_url)
    app = instrument_app(build_app(settings, redis, verifier))
    # Producers' addresses are not used, so no X-Forwarded-* rewriting on the hot path;
    # each answer leaves in one write (see `tocsin.ingest.httpserver`).
    serve(
        app,
        settings.host,
        settings.port or DEFAULT_PORT,
        proxy_headers=False,
        http=CoalescingHttpToolsProtocol.with_limits(settings.http_limits()),
    )
