"""JWT verification (HS256, RS256, ES256) with expiry, audience and issuer checks.

Errors are `TokenError` values carrying a stable `code` that the gateway maps to
close codes and the HTTP services to 401/403 answers.
"""

from __future__ import annotations

import time
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
    ) -> None:
        if not secret and not public_key:
            raise ValueError("a JWT secret or public key is required")
        self._secret = secret
        self._public_key = public_key
        self._audience = audience
        self._issuer = issuer or None
        self._leeway = leeway

    def _key_for(self, algorithm: str) -> tuple[str, Sequence[str]]:
        if algorithm == "HS256" and self._secret:
            return self._secret, ["HS256"]
        if algorithm in ("RS256", "ES256") and self._public_key:
            return self._public_key, [algorithm]
        raise TokenError("token_invalid", f"algorithm {algorithm!r} is not accepted")

    def verify(self, token: str) -> Claims:
        if not token:
            raise TokenError("token_missing", "no token was given")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenError("token_invalid", f"malformed token: {exc}") from None
        key, algorithms = self._key_for(str(header.get("alg", "")))
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
