"""The Microsoft Teams receiver: an Adaptive Card through an incoming webhook."""

from tocsin.notifier.receivers.msteams._receiver import TeamsReceiver

__all__ = ["TeamsReceiver"]
