"""Producer API keys, stored in Redis only as salted hashes.

A key reads `tsk_{key_id}_{secret}`. The `key_id` names the Redis hash
`tocsin:apikey:{key_id}` so a key is found in one lookup; the secret is never
stored, only `sha256(salt || secret)`. A plain salted SHA-256 is enough here
(rather than a slow password hash) because the secret is 256 random bits, not
something a person chose, so there is nothing to guess offline.

Ingest verifies keys (`parse_key`, `ApiKeyRecord.from_hash`, `matches`);
`tocsin keys` creates, lists and revokes them through `ApiKeyStore`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from redis import Redis

from tocsin.common import keys
from tocsin.common.errors import InvalidKeyError

__all__ = [
    "KEY_PREFIX",
    "PRODUCER_PATTERN",
    "ApiKeyRecord",
    "ApiKeyStore",
    "InvalidKeyError",
    "hash_secret",
    "looks_like_key",
    "parse_key",
]

KEY_PREFIX = "tsk_"
_KEY_PATTERN = re.compile(r"^tsk_(?P<key_id>[0-9a-f]{16})_(?P<secret>[A-Za-z0-9_-]{43})$")
PRODUCER_PATTERN = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")


def looks_like_key(credential: str) -> bool:
    """Whether `credential` is meant as an API key (rather than a JWT)."""
    return credential.startswith(KEY_PREFIX)


def parse_key(credential: str) -> tuple[str, str]:
    """Split a key into `(key_id, secret)`."""
    match = _KEY_PATTERN.match(credential)
    if match is None:
        raise InvalidKeyError("malformed API key")
    return match["key_id"], match["secret"]


def hash_secret(salt: bytes, secret: str) -> str:
    return hashlib.sha256(salt + secret.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKeyRecord:
    """One stored key: who it belongs to and how to check it, never the key itself."""

    key_id: str
    producer: str
    salt: bytes = field(repr=False)
    secret_hash: str = field(repr=False)
    labels: dict[str, str]
    created_at: float
    revoked_at: float | None = None
    description: str = ""

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def matches(self, secret: str) -> bool:
        return hmac.compare_digest(hash_secret(self.salt, secret), self.secret_hash)

    def to_hash(self) -> dict[str, str]:
        fields = {
            "producer": self.producer,
            "salt": self.salt.hex(),
            "hash": self.secret_hash,
            "labels": json.dumps(self.labels, sort_keys=True),
            "created_at": repr(self.created_at),
            "description": self.description,
        }
        if self.revoked_at is not None:
            fields["revoked_at"] = repr(self.revoked_at)
        return fields

    @classmethod
    def from_hash(cls, key_id: str, fields: Mapping[str, str]) -> ApiKeyRecord:
        """Read a record from its Redis hash (decoded strings)."""
        labels = json.loads(fields.get("labels") or "{}")
        revoked = fields.get("revoked_at")
        return cls(
            key_id=key_id,
            producer=fields["producer"],
            salt=bytes.fromhex(fields["salt"]),
            secret_hash=fields["hash"],
            labels={str(k): str(v) for k, v in labels.items()},
            created_at=float(fields.get("created_at") or 0.0),
            revoked_at=float(revoked) if revoked else None,
            description=fields.get("description", ""),
        )


class ApiKeyStore:
    """Creates, lists and revokes keys in Redis (the `tocsin keys` side)."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    def create(
        self, producer: str, labels: Mapping[str, str] | None = None, description: str = ""
    ) -> tuple[str, ApiKeyRecord]:
        """Store a new key for `producer`; return the key (shown once) and its record."""
        if not PRODUCER_PATTERN.match(producer):
            raise InvalidKeyError(f"producer names match {PRODUCER_PATTERN.pattern}")
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        record = ApiKeyRecord(
            key_id=key_id,
            producer=producer,
            salt=salt,
            secret_hash=hash_secret(salt, secret),
            labels=dict(labels or {}),
            created_at=time.time(),
            description=description,
        )
        self._redis.hset(keys.api_key(key_id), mapping=record.to_hash())  # type: ignore[arg-type]
        return f"{KEY_PREFIX}{key_id}_{secret}", record

    def get(self, key_id: str) -> ApiKeyRecord | None:
        fields = self._redis.hgetall(keys.api_key(key_id))
        if not fields:
            return None
        return ApiKeyRecord.from_hash(key_id, _decoded(fields))

    def list_keys(self) -> list[ApiKeyRecord]:
        """Every stored key, revoked ones included, oldest first."""
        records = []
        prefix = keys.api_key("")
        for name in self._redis.scan_iter(match=keys.api_key("*"), count=500):
            key_id = (name.decode() if isinstance(name, bytes) else str(name))[len(prefix) :]
            record = self.get(key_id)
            if record is not None:
                records.append(record)
        return sorted(records, key=lambda r: r.created_at)

    def revoke(self, key_id: str) -> bool:
        """Mark a key revoked (kept for the audit trail); False if there is no such key."""
        if key_id.startswith(KEY_PREFIX):
            key_id = parse_key(key_id)[0]
        name = keys.api_key(key_id)
        if not self._redis.exists(name):
            return False
        self._redis.hset(name, "revoked_at", repr(time.time()))
        return True


def _decoded(fields: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in fields.items()
    }
