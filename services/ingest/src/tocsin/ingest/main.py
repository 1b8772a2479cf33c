"""`tocsin ingest`: run the ingest service."""

from __future__ import annotations

from tocsin.common.broker import build_broker
from tocsin.common.config import load_settings
from tocsin.common.logging import configure_logging
from tocsin.common.ops import serve
from tocsin.ingest.app import build_app
from tocsin.ingest.settings import DEFAULT_PORT, IngestSettings

__all__ = ["run"]


def run() -> None:
    settings = load_settings(IngestSettings)
    configure_logging("ingest", settings.log_format, settings.log_level)
    broker = build_broker(settings.redis_url)
    app = build_app(settings, broker)
    serve(app, settings.host, settings.port or DEFAULT_PORT)
