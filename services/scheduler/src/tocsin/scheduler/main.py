"""`tocsin scheduler`: run the scheduler."""

from __future__ import annotations

from tocsin.common.config import load_settings
from tocsin.common.logging import configure_logging
from tocsin.common.ops import run_idle_service
from tocsin.scheduler.settings import DEFAULT_PORT, SchedulerSettings

__all__ = ["run"]


def run() -> None:
    settings = load_settings(SchedulerSettings)
    configure_logging("scheduler", settings.log_format, settings.log_level)
    run_idle_service(settings.redis_url, settings.host, settings.port or DEFAULT_PORT)
