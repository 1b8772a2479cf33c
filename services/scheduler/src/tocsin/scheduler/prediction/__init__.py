"""Prediction: how long an incident will last, whether it is transient, and alert volume.

- `survival`: Kaplan-Meier curves from censored durations.
- `incidents`: one incident's prediction from its past episodes (pure).
- `episodes`: the compact per-fingerprint/per-name episode history in Redis.
- `volume`: the hourly per-service volume forecast and storm flag.
- `actors`: the `prediction` queue's actors and scheduled jobs.
"""
