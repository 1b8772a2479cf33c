"""One set of connection options for every `tocsin` subcommand.

The same five options are accepted before or after the subcommand
(`tocsin --token T alerts query` and `tocsin alerts query --token T`), and each
falls back to its environment variable and then to the running `tocsin dev`'s
state file. A state file left by a `tocsin dev` that has exited is an error
("the dev stack is not running"), not a silent fallback to dead addresses.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Any

from tocsin.client._devstate import read_dev_state
from tocsin.client._exceptions import ConfigurationError

__all__ = ["OPTIONS", "Connection", "add_connection_options"]

# (flag, attribute, environment variables, help)
OPTIONS: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("--ingest-url", "ingest_url", ("TOCSIN_INGEST_URL",), "ingest base URL"),
    ("--gateway-url", "gateway_url", ("TOCSIN_GATEWAY_URL", "TOCSIN_GATEWAY_WS_URL"),
     "gateway base URL, http(s):// or ws(s)://"),
    ("--api-key", "api_key", ("TOCSIN_API_KEY",), "producer API key for ingest"),
    ("--token", "token", ("TOCSIN_TOKEN",), "JWT for the gateway (read/write scopes)"),
    ("--redis-url", "redis_url", ("REDIS_URL",), "Redis URL (keys, dlq, schedules)"),
)  # fmt: skip


def add_connection_options(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """Add the connection options to `parser`.

    On subcommands their default is "absent", so a value given before the
    subcommand is not overwritten by the subcommand's own default.
    """
    group = parser.add_argument_group("connection (also before the subcommand)")
    for flag, dest, env, text in OPTIONS:
        group.add_argument(
            flag,
            dest=dest,
            default=None if top else argparse.SUPPRESS,
            help=f"{text} (default: ${' or $'.join(env)}, else the running tocsin dev's)",
        )


def _from_state(state: dict[str, Any], *path: str) -> str:
    value: Any = state
    for part in path:
        value = value.get(part, {}) if isinstance(value, dict) else {}
    return value if isinstance(value, str) else ""


@dataclass
class Connection:
    """Where the services are and the credentials to use, resolved on first use."""

    options: argparse.Namespace

    def _value(self, dest: str, env: tuple[str, ...], *state_path: str) -> str:
        flag = getattr(self.options, dest, None)
        if flag:
            return str(flag)
        for name in env:
            if os.environ.get(name):
                return os.environ[name]
        return _from_state(read_dev_state(), *state_path)

    def ingest_url(self) -> str:
        url = self._value("ingest_url", ("TOCSIN_INGEST_URL",), "urls", "ingest")
        return (url or "http://127.0.0.1:8081").rstrip("/")

    def gateway_url(self) -> str:
        """The gateway's HTTP base URL (a ws:// or .../ws URL is turned into it)."""
        url = self._value(
            "gateway_url", ("TOCSIN_GATEWAY_URL", "TOCSIN_GATEWAY_WS_URL"), "urls", "gateway"
        )
        url = (url or "http://127.0.0.1:8080").rstrip("/")
        if url.startswith("ws"):
            url = "http" + url[2:]
        return url.removesuffix("/ws")

    def gateway_ws_url(self) -> str:
        return "ws" + self.gateway_url()[4:] + "/ws"

    def api_key(self) -> str:
        return self._value("api_key", ("TOCSIN_API_KEY",), "api_key")

    def token(self) -> str:
        token = self._value("token", ("TOCSIN_TOKEN",), "token")
        if not token:
            raise ConfigurationError(
                "no token: pass --token, set TOCSIN_TOKEN, or run `tocsin dev`"
            )
        return token

    def redis_url(self) -> str:
        url = self._value("redis_url", ("REDIS_URL",), "redis_url")
        if not url:
            raise ConfigurationError(
                "no Redis: pass --redis-url, set REDIS_URL, or run `tocsin dev`"
            )
        return url
