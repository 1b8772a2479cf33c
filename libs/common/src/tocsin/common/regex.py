"""User-supplied regular expressions, on RE2: matching time linear in the input, always.

Every regex a client or an operator writes (API label filters, silence
matchers, notifier routes) is compiled here and nowhere else. Python's `re`
backtracks, so a pattern such as `(a+)+$` takes time exponential in the
value it is matched against and blocks whichever loop runs it; RE2 never
backtracks. Its syntax is the one Alertmanager and Prometheus use (Go's
`regexp` is RE2), so a matcher copied from there means the same here.

RE2 has no backreferences and no lookaround: a pattern using them is refused
with `UnsupportedRegexError`, naming the construct, rather than silently
meaning something else. Patterns are anchored at both ends (full match), as
Alertmanager's matchers are.
"""

from __future__ import annotations

import functools
import re as _stdlib_re

import re2

from tocsin.common.errors import UnsupportedRegexError

__all__ = [
    "MAX_PATTERN_LENGTH",
    "LabelRegex",
    "UnsupportedRegexError",
    "compile_full_match",
    "compile_label_regex",
]

# A matcher's value is at most this long (the silence API's bound too).
MAX_PATTERN_LENGTH = 1024
# Memory RE2 may spend on one compiled program and its DFA cache; a pattern
# needing more (e.g. `.{1000}{1000}`) is refused at compile time.
_MAX_PROGRAM_BYTES = 1 << 20

# Constructs RE2 refuses, named so the 400 tells the client which one it used.
_UNSUPPORTED = (
    (_stdlib_re.compile(r"\\[1-9]|\(\?P=|\\k<"), "backreferences"),
    (_stdlib_re.compile(r"\(\?<?[=!]"), "lookaround assertions"),
    (_stdlib_re.compile(r"\(\?>|[*+?}][+]"), "atomic groups and possessive quantifiers"),
    (_stdlib_re.compile(r"\(\?\(|\(\?R\)|\(\?[0-9]"), "conditionals and recursion"),
)


class LabelRegex:
    """One compiled, fully anchored pattern."""

    __slots__ = ("_compiled", "pattern")

    def __init__(self, pattern: str, compiled: re2._Regexp) -> None:
        self.pattern = pattern
        self._compiled = compiled

    def fullmatch(self, value: str) -> bool:
        """Whether the whole of `value` matches (Alertmanager's anchoring)."""
        return self._compiled.fullmatch(value) is not None


def _options() -> re2.Options:
    options = re2.Options()
    options.max_mem = _MAX_PROGRAM_BYTES
    # Refusals are answered to the client; logging each one would let a client flood the log.
    options.log_errors = False
    return options


_OPTIONS = _options()


@functools.lru_cache(maxsize=512)
def compile_label_regex(pattern: str) -> LabelRegex:
    """Compile a user's `pattern` on RE2, or raise `UnsupportedRegexError` saying why not."""
    return compile_full_match(pattern, MAX_PATTERN_LENGTH)


def compile_full_match(pattern: str, max_length: int) -> LabelRegex:
    """Compile `pattern` (at most `max_length` characters) on RE2; the uncached step."""
    if len(pattern) > max_length:
        raise UnsupportedRegexError(
            f"regex is {len(pattern)} characters, over the limit of {max_length}"
        )
    try:
        compiled = re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else b""
        reason = (
            detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)
        ) or "does not compile"
        for construct, name in _UNSUPPORTED:
            if construct.search(pattern):
                raise UnsupportedRegexError(
                    f"unsupported regex syntax: {name} (RE2 syntax, as in Alertmanager): {reason}"
                ) from None
        raise UnsupportedRegexError(f"invalid regex: {reason}") from None
    return LabelRegex(pattern, compiled)
