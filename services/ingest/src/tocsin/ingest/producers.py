"""Who is sending: producer authentication by API key or by an `ingest`-scoped JWT.

A verified API key is trusted for `cache_seconds` without asking Redis again,
which keeps one Redis round trip per request; a revoked key therefore stops
working within that time (0 makes revocation immediate).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import RedisError

from tocsin.common import keys
from tocsin.common.apikeys import ApiKeyRecord, InvalidKeyError, looks_like_key, parse_key
from tocsin.common.auth import TokenError, TokenVerifier
from tocsin.common.errors import CredentialError
from tocsin.common.redis import store_error

__all__ = ["INGEST_SCOPE", "AuthError", "Producer", "ProducerAuth"]

INGEST_SCOPE = "ingest"
_CACHE_LIMIT = 10_000


@dataclass(frozen=True)
class Producer:
    """An authenticated producer: its name and the labels its alerts get by default."""

    name: str
    labels: dict[str, str] = field(default_factory=dict)


ANONYMOUS = Producer("anonymous")


class AuthError(CredentialError):
    """A refused credential; `status` is 401 (who are you?) or 403 (not allowed)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class ProducerAuth:
    """Resolves a credential to a `Producer`."""

    def __init__(
        self,
        redis: Redis,
        verifier: TokenVerifier | None,
        *,
        required: bool = True,
        cache_seconds: float = 5.0,
    ) -> None:
        self._redis = redis
        self._verifier = verifier
        self._required = required
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[Producer, float]] = {}
        self._lookups: dict[str, asyncio.Future[Producer]] = {}

    async def authenticate(self, credential: str) -> Producer:
        """The producer `credential` names; raises `AuthError` when refused, a `StoreError`
        when Redis cannot be asked."""
        return self.known(credential) or await self._api_key(credential)

    def known(self, credential: str) -> Producer | None:
        """The producer, when deciding needs no Redis read; `None` when it does.

        No read is needed without a credential, for a token, or for an API key
        verified within `cache_seconds` -- what nearly every request brings, so
        the accept path only awaits Redis for a key it has not seen lately.
        Raises `AuthError` as `authenticate` does.
        """
        if not credential:
            if not self._required:
                return ANONYMOUS
            raise AuthError(401, "credentials_missing", "an API key or an ingest token is required")
        if not looks_like_key(credential):
            return self._token(credential)
        cached = self._cache.get(credential)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        return None

    async def _api_key(self, credential: str) -> Producer:
        # One Redis read per key at a time: when a cached key expires under load,
        # every request in flight with it waits for that read instead of making its own.
        lookup = self._lookups.get(credential)
        if lookup is None:
            lookup = asyncio.ensure_future(self._read_api_key(credential))
            self._lookups[credential] = lookup
            lookup.add_done_callback(lambda _: self._lookups.pop(credential, None))
        return await asyncio.shield(lookup)

    async def _read_api_key(self, credential: str) -> Producer:
        now = time.monotonic()
        try:
            key_id, secret = parse_key(credential)
        except InvalidKeyError:
            raise AuthError(401, "api_key_invalid", "the API key is not valid") from None
        try:
            fields = await self._redis.hgetall(keys.api_key(key_id))
        except (RedisError, OSError) as exc:
            raise store_error(exc) from exc
        if not fields:
            raise AuthError(401, "api_key_invalid", "the API key is not valid")
        record = ApiKeyRecord.from_hash(key_id, _text(fields))
        if not record.matches(secret):
            raise AuthError(401, "api_key_invalid", "the API key is not valid")
        if record.revoked:
            raise AuthError(401, "api_key_revoked", "the API key has been revoked")
        producer = Producer(record.producer, record.labels)
        if self._cache_seconds > 0:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[credential] = (producer, now + self._cache_seconds)
        return producer

    def _token(self, credential: str) -> Producer:
        if self._verifier is None:
            raise AuthError(401, "token_invalid", "tokens are not accepted: no JWT key is set")
        try:
            claims = self._verifier.verify(credential)
        except TokenError as exc:
            raise AuthError(401, exc.code, str(exc)) from None
        if INGEST_SCOPE not in claims.scopes:
            raise AuthError(403, "scope_missing", "the token lacks the ingest scope")
        return Producer(claims.subject)


def _text(fields: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in fields.items()
    }
