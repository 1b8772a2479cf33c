"""The Slack receiver: incoming-webhook messages with Block Kit layout and a text fallback."""

from tocsin.notifier.receivers.slack._receiver import SlackReceiver

__all__ = ["SlackReceiver"]
