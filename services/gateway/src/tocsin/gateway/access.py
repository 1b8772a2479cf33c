"""Which channels a token may subscribe to: the glob patterns of its `channels` claim.

Patterns use shell-style globs, matched case-sensitively against the whole
channel name: `*` matches any run of characters (dots included), `?` one
character, `[...]` a set. `alerts.team.*` allows every team channel;
`alerts` alone allows only the aggregate channel.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable

__all__ = ["ChannelGrant"]


class ChannelGrant:
    """The channel patterns of one token, compiled once."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(patterns)
        translated = "|".join(fnmatch.translate(p) for p in self.patterns)
        self._regex = re.compile(translated) if translated else None

    def allows(self, channel: str) -> bool:
        return self._regex is not None and self._regex.match(channel) is not None
