"""Typed settings read once from environment variables (12-factor).

Every service declares one frozen dataclass deriving from `CommonSettings`;
`load_settings` fills it from the environment and fails with one message that
names every bad variable. The variable for a field is its name upper-cased and
prefixed with `TOCSIN_`, unless the field's metadata names it (`REDIS_URL`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar
from urllib.parse import quote

from tocsin.common.errors import ConfigError

__all__ = [
    "CommonSettings",
    "ConfigError",
    "env_name",
    "load_settings",
    "setting",
]

SettingsT = TypeVar("SettingsT", bound="CommonSettings")
# The shortest HS256 signing secret accepted.
MIN_SECRET_BYTES = 32


log = logging.getLogger(__name__)


def setting(default: Any, doc: str, *, env: str | None = None, former: tuple[str, ...] = ()) -> Any:
    """Declare a settings field with its documentation and, optionally, its variable name.

    `former` lists the variables that set it before a rename: still read, with a
    warning, for one release.
    """
    return dataclasses.field(default=default, metadata={"doc": doc, "env": env, "former": former})


@dataclasses.dataclass(frozen=True)
class CommonSettings:
    """Settings every service reads."""

    redis_url: str = setting(
        "redis://127.0.0.1:6379/0", "Redis connection URL (redis://, rediss://).", env="REDIS_URL"
    )
    host: str = setting("127.0.0.1", "Address the service's HTTP server binds to.")
    port: int = setting(0, "HTTP port of the service (0: the service's default port).")
    log_format: str = setting("json", "Log line format: `json` (production) or `console`.")
    log_level: str = setting("INFO", "Minimum log level.")
    jwt_secret: str = setting(
        "", "HS256 secret for user and service JWTs, at least 32 bytes (empty: RS/ES keys only)."
    )
    jwt_public_key: str = setting("", "PEM public key for RS256/ES256 JWTs.")
    jwt_audience: str = setting("tocsin", "Required `aud` claim of JWTs.")
    jwt_issuer: str = setting("", "Required `iss` claim of JWTs (empty: not checked).")
    redis_sentinels: tuple[str, ...] = setting(
        (), "Sentinel `host:port` list, comma-separated; when set, used instead of REDIS_URL."
    )
    redis_sentinel_master: str = setting("tocsin", "Primary name the Sentinels monitor.")
    redis_password: str = setting("", "Password of the Redis primary and Sentinels.")
    metrics_port: int = setting(
        0, "Port serving /metrics alone (0: /metrics on the HTTP port); gateway and ingest."
    )

    def __post_init__(self) -> None:
        if self.jwt_secret and len(self.jwt_secret.encode()) < MIN_SECRET_BYTES:
            # RFC 7518 3.2: an HS256 key is at least as long as the hash (256 bits);
            # a shorter one can be brute-forced from any token it signed.
            raise ConfigError(
                f"invalid configuration: TOCSIN_JWT_SECRET: {len(self.jwt_secret.encode())} bytes,"
                f" at least {MIN_SECRET_BYTES} are required"
            )
        # Everything downstream reads one URL; Sentinel settings become a
        # redis+sentinel:// URL (see tocsin.common.redis) so no caller branches.
        if self.redis_sentinels:
            credentials = f":{quote(self.redis_password, safe='')}@" if self.redis_password else ""
            hosts = ",".join(self.redis_sentinels)
            url = f"redis+sentinel://{credentials}{hosts}/{self.redis_sentinel_master}/0"
            object.__setattr__(self, "redis_url", url)


def env_name(field: dataclasses.Field[Any]) -> str:
    """The environment variable that sets `field`."""
    return field.metadata.get("env") or f"TOCSIN_{field.name.upper()}"


def _convert(raw: str, kind: Any) -> Any:
    origin = typing.get_origin(kind)
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off", ""}:
            return False
        raise ValueError(f"expected a boolean, got {raw!r}")
    if kind is int:
        return int(raw)
    if kind is float:
        return float(raw)
    if kind is str:
        return raw
    if origin is tuple:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if origin in (typing.Union, types.UnionType):
        inner = [arg for arg in typing.get_args(kind) if arg is not type(None)]
        return None if raw == "" else _convert(raw, inner[0])
    raise TypeError(f"unsupported settings type {kind!r}")


def load_settings(cls: type[SettingsT], environ: Mapping[str, str] | None = None) -> SettingsT:
    """Build `cls` from `environ` (default: the process environment)."""
    source = os.environ if environ is None else environ
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    errors: list[str] = []
    for field in dataclasses.fields(cls):
        name = env_name(field)
        if name not in source:
            former = [old for old in field.metadata.get("former", ()) if old in source]
            if not former:
                continue
            log.warning("%s is deprecated: set %s instead", former[0], name)
            name = former[0]
        try:
            values[field.name] = _convert(source[name], hints[field.name])
        except ValueError as exc:
            errors.append(f"{name}: {exc}")
    if errors:
        raise ConfigError("invalid configuration: " + "; ".join(errors))
    return cls(**values)
