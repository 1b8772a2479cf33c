"""JWT verification (HS256, RS256, ES256) with expiry, audience and issuer checks.

Errors are `TokenError` values carrying a stable `code` that the gateway maps to
close codes and the HTTP services to 401/403 answers.

Verification is on every WebSocket connect, and PyJWT spends most of its time
validating base64 segments character by character (~60 us a token). A verifier
therefore remembers the tokens it accepted, until they expire, in a bounded LRU
keyed by the whole token: the same string always verifies the same way, so a
client reconnecting with its token costs a dict lookup. Refused tokens are never
remembered.
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt

__all__ = ["Claims", "TokenError", "TokenVerifier", "mint_token"]


class TokenError(Exception):
    """A token that was refused; `code` is stable and documented."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Claims:
    """The parts of a verified token that Tocsin uses."""

    subject: str
    scopes: frozenset[str]
    channels: tuple[str, ...]
    expires_at: float | None
    raw: dict[str, Any] = field(repr=False)


class TokenVerifier:
    """Verifies tokens against the configured keys; HS and RS/ES keys never mix."""

    def __init__(
        self,
        *,
        secret: str = "",
        public_key: str = "",
        audience: str = "tocsin",
        issuer: str = "",
        leeway: float = 5.0,
        cache_size: int = 10_000,
    ) -> None:
        if not secret and not public_key:
            raise ValueError("a JWT secret or public key is required")
        self._secret = secret
        self._public_key = public_key
        self._audience = audience
        self._issuer = issuer or None
        self._leeway = leeway
        self._cache_size = cache_size
        # Accepted tokens until their expiry; least recently used first.
        self._accepted: OrderedDict[str, Claims] = OrderedDict()
        # Nearly every token of one issuer has the same header segment.
        self._algorithms: dict[str, str] = {}

    def _key_for(self, algorithm: str) -> tuple[str, Sequence[str]]:
        if algorithm == "HS256" and self._secret:
            return self._secret, ["HS256"]
        if algorithm in ("RS256", "ES256") and self._public_key:
            return self._public_key, [algorithm]
        raise TokenError("token_invalid", f"algorithm {algorithm!r} is not accepted")

    def verify(self, token: str) -> Claims:
        """The claims of `token`, or `TokenError`; the returned `raw` must not be mutated."""
        if not token:
            raise TokenError("token_missing", "no token was given")
        accepted = self._accepted
        claims = accepted.get(token)
        if claims is not None:
            # PyJWT refuses from `exp + leeway` on; a remembered token stops there too.
            if claims.expires_at is not None and time.time() < claims.expires_at + self._leeway:
                with contextlib.suppress(KeyError):
                    accepted.move_to_end(token)
                return claims
            accepted.pop(token, None)
        claims = self._verify_signed(token)
        if self._cache_size > 0:
            accepted[token] = claims
            while len(accepted) > self._cache_size:
                with contextlib.suppress(KeyError):
                    accepted.popitem(last=False)
        return claims

    def _algorithm_of(self, token: str) -> str:
        """The header's `alg`, only to pick the key: `jwt.decode` checks it all again."""
        segment = token.partition(".")[0]
        algorithm = self._algorithms.get(segment)
        if algorithm is None:
            try:
                header = jwt.get_unverified_header(token)
            except jwt.PyJWTError as exc:
                raise TokenError("token_invalid", f"malformed token: {exc}") from None
            algorithm = str(header.get("alg", ""))
            if len(self._algorithms) < 64:
                self._algorithms[segment] = algorithm
        return algorithm

    def _verify_signed(self, token: str) -> Claims:
        key, algorithms = self._key_for(self._algorithm_of(token))
        try:
            payload: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=list(algorithms),
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("token_expired", "the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenError("token_not_yet_valid", "the token is not yet valid") from None
        except (jwt.InvalidAudienceError, jwt.InvalidIssuerError) as exc:
            raise TokenError("token_invalid", str(exc)) from None
        except jwt.PyJWTError as exc:
            raise TokenError("token_invalid", str(exc)) from None
        scopes = payload.get("scope", "")
        scope_set = frozenset(scopes.split() if isinstance(scopes, str) else scopes)
        channels = payload.get("channels", ["*"])
        return Claims(
            subject=str(payload["sub"]),
            scopes=scope_set,
            channels=tuple(str(c) for c in channels),
            expires_at=float(payload["exp"]),
            raw=payload,
        )


def mint_token(
    secret: str,
    subject: str,
    *,
    scopes: Iterable[str] = ("read",),
    channels: Iterable[str] = ("*",),
    audience: str = "tocsin",
    issuer: str = "",
    ttl: float = 3600.0,
) -> str:
    """An HS256 token, for development and tests."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": subject,
        "aud": audience,
        "iat": now,
        "nbf": now,
        "exp": now + int(ttl),
        "scope": " ".join(scopes),
        "channels": list(channels),
    }
    if issuer:
        claims["iss"] = issuer
    return jwt.encode(claims, secret, algorithm="HS256")
