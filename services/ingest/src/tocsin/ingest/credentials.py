"""The producer credential in an `Authorization` header: Bearer, or Basic with the key as password.

Alertmanager's and Prometheus's `basic_auth` (and many webhook senders) can only
send a user name and a password; ingest takes the password as the API key or
token and ignores the user name, so `basic_auth: {username: tocsin, password:
<api key>}` works like `authorization: {credentials: <api key>}`. A Basic
header with an empty password uses the user name, for senders that put the
secret there.
"""

from __future__ import annotations

import base64
import binascii

__all__ = ["credential_of"]

# A credential is at most a JWT or an API key; more is not worth decoding.
_MAX_BASIC_BYTES = 8192


def credential_of(authorization: str) -> str:
    """The API key or token an `Authorization` header carries ("" when none)."""
    scheme, _, value = authorization.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return value.strip()
    if scheme != "basic" or len(value) > _MAX_BASIC_BYTES:
        return ""
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return ""
    user, _, password = decoded.partition(":")
    return password or user
