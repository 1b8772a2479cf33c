"""Development tokens: what `tocsin dev` hands the CLI and the console, and what tests sign.

Production tokens come from the deployment's identity provider; services only
verify them (`tocsin.common.auth`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import jwt

__all__ = ["mint_token"]


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
