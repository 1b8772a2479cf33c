"""Notifier settings."""

from __future__ import annotations

import dataclasses

from tocsin.common.config import CommonSettings

__all__ = ["DEFAULT_PORT", "NotifierSettings"]

DEFAULT_PORT = 8083


@dataclasses.dataclass(frozen=True)
class NotifierSettings(CommonSettings):
    """Settings of the notifier service."""
