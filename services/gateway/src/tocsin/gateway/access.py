"""Which channels a token may subscribe to: the glob patterns of its `channels` claim.

Patterns use shell-style globs, matched case-sensitively against the whole
channel name: `*` matches any run of characters (dots included), `?` one
character, `[...]` a set. `alerts.team.*` allows every team channel;
`alerts` alone allows only the aggregate channel.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Iterable

__all__ = ["ChannelGrant"]


class ChannelGrant:
    """The channel patterns of one token, compiled once."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(patterns)
        self._regex = _compile(self.patterns)

    def allows(self, channel: str) -> bool:
        return self._regex is not None and self._regex.match(channel) is not None


@functools.lru_cache(maxsize=1024)
def _compile(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    # Most tokens carry one of a few claim sets: compile each set once.
    translated = "|".join(fnmatch.translate(p) for p in patterns)
    return re.compile(translated) if translated else None
