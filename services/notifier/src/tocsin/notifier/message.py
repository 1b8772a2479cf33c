"""The notification a receiver sends: one group's alerts at one moment, possibly a digest."""

from __future__ import annotations

from typing import Literal

import msgspec

from tocsin.common.models import StoredAlert

__all__ = ["GroupedAlert", "Notification"]


class GroupedAlert(msgspec.Struct, kw_only=True):
    """One alert of a group with the transition that last changed it."""

    transition: str
    status: Literal["firing", "resolved"]
    alert: StoredAlert
    at: float = 0.0


class Notification(msgspec.Struct, kw_only=True):
    """What one receiver is sent for one group state.

    `alerts` lists firing alerts before resolved ones; when the group is bigger
    than the digest threshold only the first alerts are listed (`truncated`),
    the counts always cover the whole group.
    """

    id: str
    receiver: str
    receiver_type: str
    group_key: str
    group_labels: dict[str, str]
    state_hash: str
    status: Literal["firing", "resolved"]
    alerts: list[GroupedAlert]
    firing_count: int
    resolved_count: int
    truncated: bool
    created_at: float
    # The latest processor enqueue time among the alerts: the start of the latency figure.
    enqueued_at: float = 0.0
    repeat: bool = False
    # The group's notification sequence number: with `state_hash`, what a claim is about.
    seq: int = 0
    # Every alert of the group (a digest lists only some), for the per-alert log.
    alert_ids: list[str] = msgspec.field(default_factory=list)
    # Alerts whose page was held by auto-pause and goes out now that the pause ended.
    paused: list[str] = msgspec.field(default_factory=list)

    @property
    def alert_count(self) -> int:
        return self.firing_count + self.resolved_count
