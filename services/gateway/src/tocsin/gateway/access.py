"""Which channels a token may subscribe to: the glob patterns of its `channels` claim.

Patterns use shell-style globs, matched case-sensitively against the whole
channel name: `*` matches any run of characters (dots included), `?` one
character, `[...]` a set (`[!...]` its complement). `alerts.team.*` allows
every team channel; `alerts` alone allows only the aggregate channel. They are
translated to one RE2 expression, like every other pattern a client supplies.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import re2

from tocsin.common.regex import LabelRegex, compile_full_match

__all__ = ["ChannelGrant"]


class ChannelGrant:
    """The channel patterns of one token, compiled once."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(patterns)
        # `*` alone matches every name: most tokens (the claim's default) skip the regex.
        self._everything = "*" in self.patterns
        self._regex = None if self._everything else _compile(self.patterns)

    def allows(self, channel: str) -> bool:
        if self._everything:
            return True
        return self._regex is not None and self._regex.fullmatch(channel)


def _glob(pattern: str) -> str:
    """One glob as RE2 syntax, with `fnmatch`'s meaning (the tests compare the two)."""
    parts: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        index += 1
        if char == "*":
            parts.append(".*")
        elif char == "?":
            parts.append(".")
        elif char == "[":
            end = index + (pattern[index : index + 1] == "!")
            end += pattern[end : end + 1] == "]"
            end = pattern.find("]", end)
            if end < 0:
                parts.append(re2.escape("["))
                continue
            parts.append(_char_class(pattern[index:end]))
            index = end + 1
        else:
            parts.append(re2.escape(char))
    return "".join(parts)


def _char_class(members: str) -> str:
    """`[...]` of a glob: every member escaped, reversed ranges dropped as fnmatch drops them."""
    negated = members.startswith("!")
    members = members[negated:]
    kept: list[str] = []
    position = 0
    while position < len(members):
        if position + 2 < len(members) and members[position + 1] == "-":
            low, high = members[position], members[position + 2]
            position += 3
            if low <= high:
                kept.append(f"\\x{{{ord(low):x}}}-\\x{{{ord(high):x}}}")
        else:
            kept.append(f"\\x{{{ord(members[position]):x}}}")
            position += 1
    if not kept:
        # Nothing left: the class matches no character, or (negated) any one.
        return "." if negated else "[^\\x{0}-\\x{10ffff}]"
    return f"[{'^' if negated else ''}{''.join(kept)}]"


@functools.lru_cache(maxsize=1024)
def _compile(patterns: tuple[str, ...]) -> LabelRegex | None:
    # Most tokens carry one of a few claim sets: compile each set once.
    if not patterns:
        return None
    translated = "|".join(f"(?:{_glob(p)})" for p in patterns)
    return compile_full_match(f"(?s:{translated})", max(1024, 8 * len(translated)))
