"""Gateway settings."""

from __future__ import annotations

import dataclasses

from tocsin.common.config import CommonSettings, setting

__all__ = ["DEFAULT_PORT", "GatewaySettings"]

DEFAULT_PORT = 8080


@dataclasses.dataclass(frozen=True)
class GatewaySettings(CommonSettings):
    """Settings of the gateway service."""

    outbound_queue_frames: int = setting(1000, "Most frames queued for one slow socket.")
    max_subscriptions: int = setting(128, "Most channel subscriptions per socket.")
