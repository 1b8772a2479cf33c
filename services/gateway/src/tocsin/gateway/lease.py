"""`TokenLease`: how long a socket may stay open on the token it presented.

`token_warning` seconds before the token expires the lease warns the client
(`token_expiring`); `token_grace` seconds after it expires the lease closes the
socket with `token_expired`, unless a `refresh` with a valid token for the same
subject has renewed it. One deadline at a time, on the process's timer wheel
(`tocsin.gateway.wheel`): the warning, which then arms the close.
"""

from __future__ import annotations

import time
from typing import Protocol

from tocsin.common.auth import Claims, TokenError, TokenVerifier
from tocsin.gateway.access import ChannelGrant
from tocsin.gateway.protocol import CloseCode, ErrorCode, encode, error_frame
from tocsin.gateway.wheel import deadlines

__all__ = ["LeaseHolder", "TokenLease"]


class LeaseHolder(Protocol):
    """The socket a lease keeps open: told of the coming expiry, closed at its end."""

    def send_control(self, text: str) -> None: ...

    def close(self, code: CloseCode) -> None: ...


class TokenLease:
    """A socket's claims and grant, with the deadline their expiry sets."""

    __slots__ = ("_grace", "_holder", "_verifier", "_warned", "_warning", "claims", "grant")

    def __init__(
        self,
        claims: Claims,
        verifier: TokenVerifier,
        holder: LeaseHolder,
        *,
        warning: float,
        grace: float,
    ) -> None:
        self.claims = claims
        self.grant = ChannelGrant(claims.channels)
        self._verifier = verifier
        self._holder = holder
        self._warning = warning
        self._grace = grace
        # Whether the deadline on the wheel is the close (the warning went) or the warning.
        self._warned = False

    def start(self) -> None:
        """Arm the expiry warning for the current claims (replacing any deadline)."""
        self.cancel()
        expires_at = self.claims.expires_at
        if expires_at is None:
            return
        self._warned = False
        deadlines.after(self, max(0.0, expires_at - self._warning - time.time()))

    def cancel(self) -> None:
        deadlines.cancel(self)

    def expire(self, lateness: float) -> None:
        """The deadline came: warn the client, or (warned already) close the socket."""
        if self._warned:
            self._holder.close(CloseCode.TOKEN_EXPIRED)
            return
        expires_at = self.claims.expires_at
        if expires_at is None:
            return
        self._warned = True
        deadlines.after(self, max(0.0, expires_at + self._grace - time.time()))
        self._holder.send_control(
            encode({"type": "token_expiring", "expires_at": expires_at, "grace": self._grace})
        )

    def refresh(self, token: str) -> str:
        """Renew the lease with `token`; returns the frame that answers the client."""
        try:
            claims = self._verifier.verify(token)
        except TokenError as exc:
            return error_frame(ErrorCode.TOKEN_INVALID, str(exc), reason=exc.code)
        if claims.subject != self.claims.subject:
            return error_frame(ErrorCode.TOKEN_INVALID, "a refresh must keep the subject")
        self.claims = claims
        self.grant = ChannelGrant(claims.channels)
        self.start()
        return encode({"type": "refreshed", "expires_at": claims.expires_at})
