"""`tocsin ingest`: run the ingest service."""

from __future__ import annotations

from tocsin.common.auth import TokenVerifier
from tocsin.common.config import load_settings
from tocsin.common.logging import configure_logging
from tocsin.common.ops import metrics_app, serve, serve_in_thread
from tocsin.common.redis import async_client
from tocsin.common.telemetry import instrument_app, setup_observability
from tocsin.ingest.app import build_app
from tocsin.ingest.fastpath import FastPathProtocol
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
    ingest_app = build_app(settings, redis, verifier)
    app = instrument_app(ingest_app)
    if settings.metrics_port:
        serve_in_thread(metrics_app(), settings.host, settings.metrics_port)
    # Producers' addresses are not used, so no X-Forwarded-* rewriting on the hot path;
    # each answer leaves in one write (see `tocsin.ingest.httpserver`), and plain
    # producer POSTs take the fast path (`tocsin.ingest.fastpath`).
    serve(
        app,
        settings.host,
        settings.port or DEFAULT_PORT,
        proxy_headers=False,
        http=FastPathProtocol.serving(ingest_app.fast_endpoints(), settings.http_limits()),
        ssl_certfile=settings.tls_cert_file or None,
        ssl_keyfile=settings.tls_key_file or None,
    )
