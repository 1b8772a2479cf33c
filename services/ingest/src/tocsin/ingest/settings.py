"""Ingest settings."""

from __future__ import annotations

import dataclasses

from tocsin.common.config import CommonSettings, setting

__all__ = ["DEFAULT_PORT", "IngestSettings"]

DEFAULT_PORT = 8081


@dataclasses.dataclass(frozen=True)
class IngestSettings(CommonSettings):
    """Settings of the ingest service."""

    max_body_bytes: int = setting(1_048_576, "Largest accepted request body, in bytes.")
    max_batch: int = setting(1000, "Most alerts accepted in one request.")
