"""User regexes on RE2: full-match semantics, refusals that name the construct, no backtracking."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tocsin.common.regex import MAX_PATTERN_LENGTH, UnsupportedRegexError, compile_label_regex


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("prod", "prod", True),
        ("prod", "preprod", False),
        ("prod", "prod-2", False),
        ("prod|stag.*", "staging", True),
        ("(?i)PROD", "prod", True),
        (".*", "", True),
        ("db-[0-9]+", "db-12", True),
    ],
)
def test_patterns_are_anchored_at_both_ends(pattern: str, value: str, expected: bool) -> None:
    assert compile_label_regex(pattern).fullmatch(value) is expected


@pytest.mark.parametrize(
    ("pattern", "named"),
    [
        (r"(a)\1", "backreferences"),
        (r"(?P<x>a)(?P=x)", "backreferences"),
        ("(?=a)a", "lookaround"),
        ("(?!a)b", "lookaround"),
        ("(?<=a)b", "lookaround"),
        ("(?<!a)b", "lookaround"),
        ("(?>a)", "atomic groups"),
        ("a*+", "possessive"),
        ("(", "invalid regex"),
        ("a" * (MAX_PATTERN_LENGTH + 1), "over the limit"),
    ],
)
def test_unsupported_syntax_is_refused_naming_the_construct(pattern: str, named: str) -> None:
    with pytest.raises(UnsupportedRegexError, match=named):
        compile_label_regex(pattern)


@pytest.mark.parametrize(
    "pattern", ["(a+)+b", "(a|aa)+b", "(a|a?)+b", "(.*a){20}b", "(\\w+\\s?)+$"]
)
def test_catastrophic_backtracking_patterns_finish_on_long_values(pattern: str) -> None:
    # On a backtracking engine each of these runs for days on this value.
    assert compile_label_regex(pattern).fullmatch("a" * 5000 + "!") is False


_SIMPLE = st.lists(st.sampled_from(["a", "b", ".", "a*", "b+", "(a|b)", "[ab]", "a?", "x{2}"]))


@given(parts=_SIMPLE, value=st.text(alphabet="abx", max_size=12))
def test_syntax_shared_with_python_re_means_the_same(parts: list[str], value: str) -> None:
    pattern = "".join(parts)
    assert compile_label_regex(pattern).fullmatch(value) is (
        re.fullmatch(pattern, value) is not None
    )
