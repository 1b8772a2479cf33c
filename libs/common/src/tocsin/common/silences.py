"""Silences in Alertmanager's shape, and the rule that decides whether one mutes an alert.

A silence holds label matchers (`=`, `!=`, `=~`, `!~`; regexes are anchored,
RE2 (`tocsin.common.regex`) and evaluated in Python, since Redis's Lua has
none) and a time span. Its state
is derived from the clock: `pending` before `startsAt`, `active` until
`endsAt`, `expired` after. The gateway API writes silences; the processor reads
them and passes the verdict into its lifecycle script.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from tocsin.common.regex import UnsupportedRegexError, compile_label_regex

__all__ = [
    "Matcher",
    "Silence",
    "SilenceIn",
    "SilenceSet",
    "silence_state",
]

MatchOp = Literal["=", "!=", "=~", "!~"]


class Matcher(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One label matcher, as in Alertmanager's API (`isRegex`/`isEqual` or `op`)."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    value: Annotated[str, msgspec.Meta(max_length=1024)]
    isRegex: bool = False  # noqa: N815 -- Alertmanager's field name
    isEqual: bool = True  # noqa: N815 -- Alertmanager's field name

    @property
    def op(self) -> MatchOp:
        if self.isRegex:
            return "=~" if self.isEqual else "!~"
        return "=" if self.isEqual else "!="

    def check(self) -> None:
        """Raise `UnsupportedRegexError` (a `ValueError`) naming the matcher when its regex
        does not compile on RE2 (the reason says why)."""
        if self.isRegex:
            try:
                compile_label_regex(self.value)
            except UnsupportedRegexError as exc:
                raise UnsupportedRegexError(f"matcher {self.name}: {exc}") from None

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether `labels` satisfy this matcher; `UnsupportedRegexError` if its regex is bad."""
        # A missing label matches as the empty string, as in Prometheus.
        value = labels.get(self.name, "")
        if self.isRegex:
            found = compile_label_regex(self.value).fullmatch(value)
        else:
            found = value == self.value
        return found == self.isEqual


class SilenceIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A silence as a client posts it."""

    matchers: Annotated[list[Matcher], msgspec.Meta(min_length=1, max_length=64)]
    # RFC 3339 with an offset, as Alertmanager requires (a naive time would be local time).
    startsAt: Annotated[datetime, msgspec.Meta(tz=True)]  # noqa: N815 -- Alertmanager's name
    endsAt: Annotated[datetime, msgspec.Meta(tz=True)]  # noqa: N815 -- Alertmanager's name
    createdBy: Annotated[str, msgspec.Meta(max_length=256)] = ""  # noqa: N815
    comment: Annotated[str, msgspec.Meta(max_length=4096)] = ""


class Silence(msgspec.Struct, kw_only=True, dict=True):
    """A stored silence."""

    id: str
    matchers: list[Matcher]
    startsAt: str  # noqa: N815 -- Alertmanager's field name
    endsAt: str  # noqa: N815 -- Alertmanager's field name
    starts_ts: float
    ends_ts: float
    createdBy: str = ""  # noqa: N815 -- Alertmanager's field name
    comment: str = ""
    updatedAt: str = ""  # noqa: N815 -- Alertmanager's field name

    def mutes(self, labels: Mapping[str, str], now: float) -> bool:
        """Whether this silence mutes an alert with `labels` at `now`."""
        if not self.starts_ts <= now < self.ends_ts:
            return False
        try:
            return all(matcher.matches(labels) for matcher in self.matchers)
        except UnsupportedRegexError:
            # Stored before regexes moved to RE2 and not valid there: a silence
            # that cannot be evaluated mutes nothing, rather than everything.
            return False


def silence_state(silence: Silence, now: float) -> Literal["pending", "active", "expired"]:
    if now < silence.starts_ts:
        return "pending"
    if now < silence.ends_ts:
        return "active"
    return "expired"


class SilenceSet:
    """The silences in force, asked one question: does any mute these labels now?"""

    def __init__(self, silences: Iterable[Silence] = ()) -> None:
        self._silences = list(silences)

    def __len__(self) -> int:
        return len(self._silences)

    def mutes(self, labels: Mapping[str, str], now: float) -> bool:
        return any(silence.mutes(labels, now) for silence in self._silences)
