"""Tocsin's one exception tree: every error under `TocsinError`, drawn as it is built."""

from __future__ import annotations

import importlib
import pkgutil
import re

import pytest
import redis

import tocsin.client
import tocsin.common
import tocsin.common.queue
from tocsin.common import errors
from tocsin.common.errors import (
    ConfigError,
    CredentialError,
    InvalidBodyError,
    InvalidChannelError,
    InvalidInputError,
    InvalidKeyError,
    LimitExceededError,
    OutcomeUnknownError,
    RedisReplyError,
    RemoteError,
    StoreError,
    StoreUnavailableError,
    TocsinError,
    TokenError,
    UnsupportedRegexError,
    UnsupportedUvicornError,
)
from tocsin.common.models import FieldError
from tocsin.common.redis import store_error

# What `errors` exports besides exceptions: the value an `InvalidBodyError` carries.
_EXCEPTIONS = [name for name in errors.__all__ if name != "FieldError"]

_DRAWN = re.compile(r"^(?P<indent>[│├└─ ]*)(?P<name>[A-Z][A-Za-z]+)\b")


def _drawn_parents(docstring: str) -> dict[str, str | None]:
    """Each class named in a docstring's tree drawing, with the class drawn above it."""
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for line in docstring.splitlines():
        match = _DRAWN.match(line)
        if match is None or not match["name"].endswith("Error"):
            continue
        depth = len(match["indent"])
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parents[match["name"]] = stack[-1][1] if stack else None
        stack.append((depth, match["name"]))
    return parents


def test_the_drawing_in_the_docstring_is_the_tree_the_classes_build() -> None:
    assert errors.__doc__ is not None
    drawn = _drawn_parents(errors.__doc__)
    assert set(drawn) == set(_EXCEPTIONS)
    for name, parent in drawn.items():
        cls = getattr(errors, name)
        tocsin_bases = [base.__name__ for base in cls.__bases__ if issubclass(base, TocsinError)]
        assert tocsin_bases == ([parent] if parent else []), name


@pytest.mark.parametrize(
    ("error", "branch", "builtin"),
    [
        (ConfigError("x"), TocsinError, ValueError),
        (UnsupportedUvicornError("x"), ConfigError, RuntimeError),
        (InvalidBodyError([FieldError("$", "x")]), InvalidInputError, ValueError),
        (InvalidChannelError("x"), InvalidInputError, ValueError),
        (UnsupportedRegexError("x"), InvalidInputError, ValueError),
        (LimitExceededError(413, "too-large", "Too Large", "x"), InvalidInputError, Exception),
        (TokenError("token_expired", "x"), CredentialError, Exception),
        (InvalidKeyError("x"), CredentialError, ValueError),
        (RedisReplyError("x"), StoreError, Exception),
        (OutcomeUnknownError("x"), StoreError, ConnectionError),
        (StoreUnavailableError("x"), StoreError, ConnectionError),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else "",
)
def test_each_error_is_caught_by_its_branch_the_base_and_the_builtin_callers_rely_on(
    error: Exception, branch: type[Exception], builtin: type[Exception]
) -> None:
    for catching in (branch, TocsinError, builtin):
        with pytest.raises(catching):
            raise error


def test_branches_do_not_overlap() -> None:
    branches = (ConfigError, InvalidInputError, CredentialError, StoreError, RemoteError)
    for name in _EXCEPTIONS:
        cls = getattr(errors, name)
        if cls is TocsinError or cls in branches:
            continue
        assert sum(issubclass(cls, branch) for branch in branches) == 1, name


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("tocsin.common.apikeys", "InvalidKeyError"),
        ("tocsin.common.auth", "TokenError"),
        ("tocsin.common.config", "ConfigError"),
        ("tocsin.common.events", "InvalidChannelError"),
        ("tocsin.common.httplimits", "LimitExceededError"),
        ("tocsin.common.models", "FieldError"),
        ("tocsin.common.models", "InvalidBodyError"),
        ("tocsin.common.pipelining", "OutcomeUnknownError"),
        ("tocsin.common.pipelining", "RedisReplyError"),
        ("tocsin.common.pipelining", "StoreUnavailableError"),
        ("tocsin.common.regex", "UnsupportedRegexError"),
        ("tocsin.common.uvicorn_shim", "UnsupportedUvicornError"),
    ],
)
def test_the_module_that_raises_an_error_exports_the_tree_s_class(module: str, name: str) -> None:
    assert getattr(importlib.import_module(module), name) is getattr(errors, name)


def test_the_client_s_errors_are_a_branch_of_the_same_tree() -> None:
    assert tocsin.client.TocsinError is TocsinError
    assert issubclass(tocsin.client.ConfigurationError, ConfigError)
    for name in tocsin.client.__all__:
        value = getattr(tocsin.client, name)
        if isinstance(value, type) and name.endswith("Error"):
            assert issubclass(value, TocsinError), name


def test_a_refused_body_keeps_its_field_errors_and_names_them_in_its_message() -> None:
    refused = InvalidBodyError([FieldError("$.name", "required"), FieldError("$", "too many")])
    assert [e.path for e in refused.errors] == ["$.name", "$"]
    assert str(refused) == "$.name: required; $: too many"


def test_a_refused_token_carries_its_stable_code() -> None:
    refused = TokenError("token_expired", "the token expired 5 s ago")
    assert (refused.code, str(refused)) == ("token_expired", "the token expired 5 s ago")


def test_every_public_error_a_common_module_defines_is_in_the_tree() -> None:
    outside = []
    for package in (tocsin.common, tocsin.common.queue):
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            module = importlib.import_module(info.name)
            for name, value in vars(module).items():
                if (
                    isinstance(value, type)
                    and issubclass(value, BaseException)
                    and value.__module__ == module.__name__
                    and not name.startswith("_")
                    and not issubclass(value, TocsinError)
                ):
                    outside.append(f"{module.__name__}.{name}")
    assert outside == []


@pytest.mark.parametrize(
    ("raised", "translated"),
    [
        (redis.ResponseError("WRONGTYPE wrong kind of value"), RedisReplyError),
        (redis.ConnectionError("Connection refused"), StoreUnavailableError),
        (redis.TimeoutError("Timeout reading from socket"), StoreUnavailableError),
        (ConnectionResetError("reset by peer"), StoreUnavailableError),
        (OutcomeUnknownError("lost after the write"), OutcomeUnknownError),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else "",
)
def test_redis_and_socket_errors_become_the_store_branch_keeping_their_message(
    raised: Exception, translated: type[StoreError]
) -> None:
    error = store_error(raised)
    assert type(error) is translated
    assert str(error) == str(raised)
