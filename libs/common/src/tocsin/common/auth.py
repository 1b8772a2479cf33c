"""JWT verification (HS256, RS256, ES256) with expiry, audience and issuer checks.

Errors are `TokenError` values carrying a stable `code` that the gateway maps to
close codes and the HTTP services to 401/403 answers.

Verification is on every WebSocket connect, and PyJWT spends most of its time
validating base64 segments character by character (~60 us a token). Two things
keep that off the connect path:

- The common token, HS256 under a header of only `alg`, `typ` and `kid`, is
  verified with the standard library: strict base64url, HMAC-SHA256 compared in
  constant time, msgspec for the payload, and the same claim checks, in the same
  order and with the same messages, as `jwt.decode` with our options. Anything
  else (other algorithms, other header fields such as `crit`, padded segments, a
  payload msgspec cannot read) goes to PyJWT unchanged, so every refusal and
  every RS256/ES256 answer is PyJWT's.
- A verifier remembers the tokens it accepted, until they expire, in a bounded
  LRU keyed by the whole token: the same string always verifies the same way, so
  a client reconnecting with its token costs a dict lookup. Refused tokens are
  never remembered.
"""

from __future__ import annotations

import binascii
import contextlib
import hashlib
import hmac
import json
import time
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jwt
import msgspec
from jwt.algorithms import HMACAlgorithm

from tocsin.common.config import CommonSettings
from tocsin.common.errors import TokenError

__all__ = ["Claims", "TokenError", "TokenVerifier"]


# base64url to the standard alphabet; `+`, `/` and `=` are not base64url, so they become
# a character that strict decoding refuses.
_FROM_BASE64URL = bytes.maketrans(b"-_+/=", b"+/***")
# A segment 2 or 3 characters past a multiple of 4 leaves bits of its last character
# unused; PyJWT refuses a segment that sets them (it does not re-encode to itself).
_CANONICAL_LAST = (
    b"",
    b"",
    frozenset(b"AQgw"),
    frozenset(b"AEIMQUYcgkosw048"),
)
# A header with only these fields means nothing PyJWT would check beyond `alg` and `kid`.
_PLAIN_HEADER_FIELDS = frozenset(("alg", "typ", "kid"))
_PLAIN_HEADERS_KEPT = 64
_PAYLOAD_DECODER = msgspec.json.Decoder()


def _base64url_decode(segment: bytes) -> bytes | None:
    """`segment` decoded, or None unless it is unpadded, canonical base64url."""
    rest = len(segment) % 4
    if rest == 1 or (rest and segment[-1] not in _CANONICAL_LAST[rest]):
        return None
    try:
        return binascii.a2b_base64(
            segment.translate(_FROM_BASE64URL) + b"=" * (-rest % 4), strict_mode=True
        )
    except binascii.Error:
        return None


def _numeric_date(value: Any) -> int | None:
    # PyJWT's own rule: whatever int() takes (so "1700000000" and 1.5 too), else refused.
    try:
        return int(value)
    except (ValueError, TypeError, OverflowError):
        return None


@dataclass(frozen=True, slots=True)
class Claims:
    """The parts of a verified token that Tocsin uses.

    Not the payload itself: the verifier remembers the claims of every token it
    accepted and each socket holds its token's for its whole life, so the claims a
    gateway keeps are one small object per token (the same one in both places).
    """

    subject: str
    scopes: frozenset[str]
    channels: tuple[str, ...]
    expires_at: float | None


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
        # The HMAC state after the key, copied per token; None leaves HS256 to PyJWT
        # (no secret, or one PyJWT refuses as an HMAC key, so it refuses every token).
        self._hs256: hmac.HMAC | None = None
        # Plain HS256 header segments that have signed an accepted token: only the
        # issuer can add one, so refused tokens cannot crowd the issuer's out.
        self._plain_headers: set[bytes] = set()
        if secret:
            self._hs256 = self._hs256_state(secret)

    @staticmethod
    def _hs256_state(secret: str) -> hmac.HMAC | None:
        algorithm = HMACAlgorithm(HMACAlgorithm.SHA256)
        try:
            key = algorithm.prepare_key(secret)
        except jwt.InvalidKeyError:
            return None
        # PyJWT warns on every decode with a short key; once is enough to be told.
        short = algorithm.check_key_length(key)
        if short:
            warnings.warn(short, jwt.InsecureKeyLengthWarning, stacklevel=3)
        return hmac.new(key, digestmod=hashlib.sha256)

    @classmethod
    def from_settings(cls, settings: CommonSettings) -> TokenVerifier:
        """The verifier the `TOCSIN_JWT_*` settings describe."""
        return cls(
            secret=settings.jwt_secret,
            public_key=settings.jwt_public_key,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
        )

    def _key_for(self, algorithm: str) -> tuple[str, Sequence[str]]:
        if algorithm == "HS256" and self._secret:
            return self._secret, ["HS256"]
        if algorithm in ("RS256", "ES256") and self._public_key:
            return self._public_key, [algorithm]
        raise TokenError("token_invalid", f"algorithm {algorithm!r} is not accepted")

    def verify(self, token: str) -> Claims:
        """The claims of `token`, or `TokenError`."""
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
        claims = _claims_of(self._verified_payload(token))
        if self._cache_size > 0:
            accepted[token] = claims
            while len(accepted) > self._cache_size:
                with contextlib.suppress(KeyError):
                    accepted.popitem(last=False)
        return claims

    def _verified_payload(self, token: str) -> dict[str, Any]:
        """The payload of `token` once verified (the fast path, else PyJWT), or `TokenError`."""
        hs256 = self._hs256
        payload = self._verify_plain_hs256(token, hs256) if hs256 is not None else None
        if payload is None:
            payload = self._verify_with_pyjwt(token)
        return payload

    def _verify_plain_hs256(self, token: str, hs256: hmac.HMAC) -> dict[str, Any] | None:
        """The checked payload of a plain HS256 token, `TokenError`, or None: ask PyJWT.

        Refuses only where PyJWT refuses with the same code: a bad signature once all
        three segments decode, and the claim checks. Everything odd returns None.
        """
        try:
            raw = token.encode("ascii")
        except UnicodeEncodeError:
            return None
        header, dot, rest = raw.partition(b".")
        payload_segment, dot, signature_segment = rest.partition(b".")
        if not dot or b"." in signature_segment:
            return None
        known_header = header in self._plain_headers
        if not known_header and not _is_plain_hs256_header(header):
            return None
        payload_json = _base64url_decode(payload_segment)
        signature = _base64url_decode(signature_segment)
        if payload_json is None or signature is None:
            return None
        mac = hs256.copy()
        mac.update(raw[: len(raw) - len(signature_segment) - 1])
        if not hmac.compare_digest(mac.digest(), signature):
            raise TokenError("token_invalid", "Signature verification failed")
        try:
            payload = _PAYLOAD_DECODER.decode(payload_json)
        except (msgspec.MsgspecError, ValueError, RecursionError):
            # json.loads reads more than msgspec (NaN, 1e400, a BOM, UTF-16): PyJWT decides.
            return None
        if type(payload) is not dict:
            return None
        if not known_header and len(self._plain_headers) < _PLAIN_HEADERS_KEPT:
            self._plain_headers.add(header)
        self._check_claims(payload)
        return payload

    def _check_claims(self, payload: dict[str, Any]) -> None:
        """`jwt.decode`'s claim checks with our options, in its order, with its messages."""
        for required in ("exp", "sub"):
            if payload.get(required) is None:
                raise TokenError("token_invalid", f'Token is missing the "{required}" claim')
        now = time.time()
        leeway = self._leeway
        if "iat" in payload:
            # PyJWT 2.x refuses a token issued in the future (past the leeway) as not yet valid.
            issued_at = _numeric_date(payload["iat"])
            if issued_at is None:
                raise TokenError("token_invalid", "Issued At claim (iat) must be an integer.")
            if issued_at > now + leeway:
                raise TokenError("token_not_yet_valid", "the token is not yet valid")
        if "nbf" in payload:
            not_before = _numeric_date(payload["nbf"])
            if not_before is None:
                raise TokenError("token_invalid", "Not Before claim (nbf) must be an integer.")
            if not_before > now + leeway:
                raise TokenError("token_not_yet_valid", "the token is not yet valid")
        expires = _numeric_date(payload["exp"])
        if expires is None:
            raise TokenError("token_invalid", "Expiration Time claim (exp) must be an integer.")
        if expires <= now - leeway:
            raise TokenError("token_expired", "the token has expired")
        if self._issuer is not None:
            if "iss" not in payload:
                raise TokenError("token_invalid", 'Token is missing the "iss" claim')
            issuer = payload["iss"]
            if not isinstance(issuer, str):
                raise TokenError("token_invalid", "Payload Issuer (iss) must be a string")
            if issuer != self._issuer:
                raise TokenError("token_invalid", "Invalid issuer")
        audiences = payload.get("aud")
        if not audiences:
            raise TokenError("token_invalid", 'Token is missing the "aud" claim')
        if isinstance(audiences, str):
            audiences = [audiences]
        if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
            raise TokenError("token_invalid", "Invalid claim format in token")
        if self._audience not in audiences:
            raise TokenError("token_invalid", "Audience doesn't match")
        if not isinstance(payload["sub"], str):
            raise TokenError("token_invalid", "Subject must be a string")
        if "jti" in payload and not isinstance(payload["jti"], str):
            raise TokenError("token_invalid", "JWT ID must be a string")

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

    def _verify_with_pyjwt(self, token: str) -> dict[str, Any]:
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
        except jwt.PyJWTError as exc:
            raise TokenError("token_invalid", str(exc)) from None
        return payload


def _is_plain_hs256_header(segment: bytes) -> bool:
    """Whether the header is HS256 with at most `typ` and `kid` beside, both strings."""
    decoded = _base64url_decode(segment)
    if decoded is None:
        return False
    try:
        # As PyJWT reads it (json, not msgspec): a repeated "alg" means the same to both.
        header = json.loads(decoded)
    except (ValueError, RecursionError):
        return False
    return (
        type(header) is dict
        and header.keys() <= _PLAIN_HEADER_FIELDS
        and header.get("alg") == "HS256"
        and all(isinstance(header[name], str) for name in ("typ", "kid") if name in header)
    )


def _claims_of(payload: dict[str, Any]) -> Claims:
    """Tocsin's view of a verified payload; a signed but ill-typed claim is refused."""
    try:
        scopes = payload.get("scope", "")
        scope_set = frozenset(scopes.split() if isinstance(scopes, str) else scopes)
        channels = payload.get("channels", ["*"])
        if type(channels) is not list or not all(type(c) is str for c in channels):
            # A string would be read one character at a time, and any `*` in it
            # would grant every channel: refuse rather than guess.
            raise TokenError("token_invalid", "the channels claim must be a list of strings")
        return Claims(
            subject=str(payload["sub"]),
            scopes=scope_set,
            channels=tuple(channels),
            expires_at=float(payload["exp"]),
        )
    except (TypeError, ValueError, OverflowError) as exc:
        raise TokenError("token_invalid", f"malformed claims: {exc}") from None
