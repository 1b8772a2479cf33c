"""The PagerDuty receiver: Events API v2 out (trigger, acknowledge, resolve by dedup key)."""

from tocsin.notifier.receivers.pagerduty._receiver import DEFAULT_URL, PagerDutyReceiver

__all__ = ["DEFAULT_URL", "PagerDutyReceiver"]
