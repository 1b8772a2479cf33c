"""The standard-library HS256 path agrees with PyJWT on every token, and takes the common ones.

Each differential test runs one token through `TokenVerifier.verify` (memory off, so the
fast path decides whatever it can) and through the PyJWT path alone, and requires the
same answer: the same claims, or the same error code and message.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tocsin.client.devtoken import mint_token
from tocsin.common import auth
from tocsin.common.auth import TokenError, TokenVerifier

SECRET = "unit-test-secret-of-at-least-32-bytes!"
OTHER_SECRET = "another-secret-of-at-least-32-bytes!!!"
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
LEEWAY = 5.0

HEADERS = [
    '{"alg":"HS256","typ":"JWT"}',
    '{"typ":"JWT","alg":"HS256"}',
    '{"alg":"HS256"}',
    ' {"alg": "HS256"} ',
    '{"alg":"HS256","kid":"k1"}',
    '{"alg":"HS256","kid":7}',
    '{"alg":"HS256","typ":7}',
    '{"alg":"HS256","crit":["b64"],"b64":true}',
    '{"alg":"HS256","crit":["exp"]}',
    '{"alg":"HS256","crit":[]}',
    '{"alg":"HS256","b64":false}',
    '{"alg":"HS256","jku":"https://keys.invalid/k"}',
    '{"alg":"HS256","x5u":"https://keys.invalid/c"}',
    '{"alg":"none","alg":"HS256"}',
    '{"alg":"HS256","alg":"none"}',
    '{"alg":"none","typ":"JWT"}',
    '{"alg":"HS384","typ":"JWT"}',
    '{"alg":"RS256","typ":"JWT"}',
    '{"alg":"ES256"}',
    '{"alg":"hs256"}',
    '{"alg":null}',
    '{"typ":"JWT"}',
    "[]",
    '"HS256"',
    '{"alg":"HS256"',
    "",
]
MUTATIONS = [
    "none",
    "tamper_header",
    "tamper_payload",
    "tamper_signature",
    "wrong_secret",
    "pad_signature",
    "pad_before_signing",
    "junk_character",
    "extra_segment",
    "no_signature",
    "empty_signature",
    "non_canonical_signature",
    "non_canonical_payload",
    "non_ascii",
]
# (audience, issuer) a verifier is configured with.
CONFIGS = [("tocsin", ""), ("tocsin", "issuer"), ("", ""), ("other", "")]

DROP = object()  # a claim left out
AUDIENCES = [DROP, "tocsin", "other", ["other", "tocsin"], ["other"], [], "", [1, "tocsin"], 5]
AUDIENCES += [{"tocsin": 1}, None, [""]]
OFFSETS = st.sampled_from([-100_000, -60, -3, 0, 2, 60, 3600])


def _time_value(now: int) -> st.SearchStrategy[Any]:
    return st.one_of(
        OFFSETS.map(lambda offset: now + offset),
        OFFSETS.map(lambda offset: now + offset + 0.5),
        OFFSETS.map(lambda offset: str(now + offset)),
        st.sampled_from(
            [None, True, "soon", "", [now], {"at": now}, math.inf, math.nan, 10**400, -(10**30)]
        ),
    )


def _claims(now: int) -> st.SearchStrategy[dict[str, Any]]:
    """Valid claims with any of them dropped or replaced, and a few more beside."""
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
        max_leaves=6,
    )
    changes = st.fixed_dictionaries(
        {},
        optional={
            "sub": st.one_of(st.just(DROP), st.text(max_size=12), st.none(), st.integers()),
            "exp": st.one_of(st.just(DROP), _time_value(now)),
            "nbf": _time_value(now),
            "iat": _time_value(now),
            "aud": st.sampled_from(AUDIENCES),
            "iss": st.sampled_from(["issuer", "other", 5, None, ""]),
            "jti": st.sampled_from(["j-1", 5, None]),
            "scope": st.sampled_from(["read ack", ["read"], 5, None, ""]),
            "channels": st.sampled_from([["alerts"], "ab", None, 5, []]),
            "extra": json_values,
        },
    )
    return st.builds(
        lambda base, changed: {
            name: value for name, value in {**base, **changed}.items() if value is not DROP
        },
        _valid_claims(now),
        changes,
    )


def _valid_claims(now: int) -> st.SearchStrategy[dict[str, Any]]:
    """Claims that pass with the default configuration, so mutations decide the outcome."""
    return st.fixed_dictionaries(
        {
            "sub": st.text(max_size=12),
            "aud": st.sampled_from(["tocsin", ["other", "tocsin"]]),
            "exp": st.sampled_from([now + 60, now + 3600, now - 3, float(now + 60)]),
        },
        optional={"iat": st.just(now), "nbf": st.just(now), "scope": st.just("read")},
    )


RAW_PAYLOADS = [
    b"[1]",
    b'"claims"',
    b"1",
    b"null",
    b"{",
    b"",
    b'{"sub":"a","aud":"tocsin","exp":1e400}',
    b'{"sub":"a","aud":"tocsin","exp":NaN}',
    b'{"sub":"a","aud":"tocsin","exp":9999999999,"x":Infinity}',
    b'\xef\xbb\xbf{"sub":"a","aud":"tocsin","exp":9999999999}',
    '{"sub":"a","aud":"tocsin","exp":9999999999}'.encode("utf-16-le"),
    b'{"sub":"\\ud800","aud":"tocsin","exp":9999999999}',
    b'{"sub":"\xed\xa0\x80","aud":"tocsin","exp":9999999999}',
    b'{"sub":"a","aud":"tocsin","exp":9999999999,"sub":5}',
    b'{"sub":"a","aud":"tocsin","exp":9999999999,"n":' + b"[" * 3000 + b"]" * 3000 + b"}",
]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _padded(segment: str) -> str:
    return segment + "=" * (-len(segment) % 4)


def _sign(signing_input: str, secret: str = SECRET) -> str:
    return _b64(hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest())


def _other_character(character: str, shift: int) -> str:
    index = ALPHABET.find(character)
    return ALPHABET[(max(index, 0) + 1 + shift % 63) % 64]


def _non_canonical(segment: str) -> str:
    """The same bytes with the last character's unused bits set, where it has any."""
    if len(segment) % 4 in (2, 3):
        return segment[:-1] + ALPHABET[ALPHABET.index(segment[-1]) + 1]
    return segment


def _token(header: str, payload: bytes, mutation: str, where: int, junk: str) -> str:
    head, body = _b64(header.encode()), _b64(payload)
    if mutation == "pad_before_signing":
        head, body = _padded(head), _padded(body)
    if mutation == "non_canonical_payload":
        body = _non_canonical(body)
    signing_input = f"{head}.{body}"
    secret = OTHER_SECRET if mutation == "wrong_secret" else SECRET
    signature = _sign(signing_input, secret)
    if mutation == "non_canonical_signature":
        signature = _non_canonical(signature)
    if mutation == "pad_signature":
        signature = _padded(signature) if len(signature) % 4 else signature + "="
    token = f"{signing_input}.{signature}"
    segments = token.split(".")
    for index, name in enumerate(("tamper_header", "tamper_payload", "tamper_signature")):
        if mutation == name and segments[index]:
            segment = segments[index]
            at = where % len(segment)
            segments[index] = (
                segment[:at] + _other_character(segment[at], where) + segment[at + 1 :]
            )
            token = ".".join(segments)
    if mutation == "junk_character":
        at = where % (len(token) + 1)
        token = token[:at] + junk + token[at:]
    elif mutation == "extra_segment":
        token = f"{token}.{_b64(b'more')}"
    elif mutation == "no_signature":
        token = signing_input
    elif mutation == "empty_signature":
        token = f"{signing_input}."
    elif mutation == "non_ascii":
        token = token[: where % len(token)] + "é" + token[where % len(token) :]
    return token


def _outcome(payload_of: Any) -> tuple[Any, ...]:
    try:
        payload = payload_of()
        claims = auth._claims_of(payload)
    except TokenError as exc:
        return (exc.code, str(exc))
    # repr: a NaN in the payload is equal to itself only as text.
    return ("accepted", claims.subject, claims.scopes, claims.channels, repr(payload))


def _both_ways(verifier: TokenVerifier, token: str) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """The verifier's path (what `verify` builds its claims from) against PyJWT alone:
    the same claims, the same payload, or the same refusal."""
    fast = _outcome(lambda: verifier._verified_payload(token))
    pyjwt = _outcome(lambda: verifier._verify_with_pyjwt(token))
    return fast, pyjwt


def _verifier(config: tuple[str, str]) -> TokenVerifier:
    audience, issuer = config
    return TokenVerifier(
        secret=SECRET, audience=audience, issuer=issuer, leeway=LEEWAY, cache_size=0
    )


DIFFERENTIAL = settings(max_examples=400)


@DIFFERENTIAL
@given(
    data=st.data(),
    header=st.sampled_from(HEADERS),
    config=st.sampled_from(CONFIGS),
)
def test_fast_path_and_pyjwt_agree_on_any_claims(
    data: st.DataObject, header: str, config: tuple[str, str]
) -> None:
    claims = data.draw(_claims(int(time.time())))
    token = _token(header, json.dumps(claims).encode(), "none", 0, "")
    fast, pyjwt = _both_ways(_verifier(config), token)
    assert fast == pyjwt


@DIFFERENTIAL
@given(
    data=st.data(),
    header=st.sampled_from(HEADERS[:6]),
    mutation=st.sampled_from(MUTATIONS),
    where=st.integers(min_value=0, max_value=10_000),
    junk=st.sampled_from(["=", "+", "/", " ", "!", ".", "\n", "\x00", "%", "é"]),
)
def test_fast_path_and_pyjwt_agree_on_mangled_tokens(
    data: st.DataObject, header: str, mutation: str, where: int, junk: str
) -> None:
    claims = data.draw(_valid_claims(int(time.time())))
    token = _token(header, json.dumps(claims).encode(), mutation, where, junk)
    fast, pyjwt = _both_ways(_verifier(CONFIGS[0]), token)
    assert fast == pyjwt


@pytest.mark.parametrize("payload", RAW_PAYLOADS)
@pytest.mark.parametrize("header", HEADERS[:3])
def test_fast_path_and_pyjwt_agree_on_payloads_that_are_not_plain_json_objects(
    header: str, payload: bytes
) -> None:
    token = _token(header, payload, "none", 0, "")
    fast, pyjwt = _both_ways(_verifier(CONFIGS[0]), token)
    assert fast == pyjwt


@pytest.mark.parametrize(
    ("claims", "code"),
    [
        ({"sub": "a", "aud": "tocsin", "exp": 0}, "token_expired"),
        ({"sub": "a", "aud": "tocsin", "exp": "now + 1h"}, "token_invalid"),
        ({"sub": "a", "aud": "tocsin", "exp": "+1h", "nbf": "+1h"}, "token_not_yet_valid"),
        ({"sub": "a", "aud": "tocsin", "exp": "+1h", "iat": "+1h"}, "token_not_yet_valid"),
        ({"sub": "a", "aud": "tocsin", "exp": "+1h", "iat": "+4s", "nbf": "+4s"}, "accepted"),
        ({"sub": "a", "aud": "tocsin", "exp": "-4s"}, "accepted"),
        ({"sub": "a", "aud": "tocsin", "exp": "+1h", "iat": "1.5"}, "token_invalid"),
        ({"sub": "a", "aud": ["x", "tocsin"], "exp": "+1h"}, "accepted"),
        ({"sub": "a", "aud": ["x"], "exp": "+1h"}, "token_invalid"),
        ({"sub": "a", "exp": "+1h"}, "token_invalid"),
        ({"aud": "tocsin", "exp": "+1h"}, "token_invalid"),
        ({"sub": 5, "aud": "tocsin", "exp": "+1h"}, "token_invalid"),
        ({"sub": "a", "aud": "tocsin", "exp": "+1h", "scope": 5}, "token_invalid"),
    ],
)
def test_claims_are_judged_like_pyjwt_judges_them(claims: dict[str, Any], code: str) -> None:
    now = int(time.time())
    offsets = {"+1h": now + 3600, "+4s": now + 4, "-4s": now - 4}
    resolved = {
        name: offsets.get(value, value) if isinstance(value, str) else value
        for name, value in claims.items()
    }
    token = _token(HEADERS[0], json.dumps(resolved).encode(), "none", 0, "")
    fast, pyjwt = _both_ways(_verifier(CONFIGS[0]), token)
    assert fast == pyjwt
    assert fast[0] == code


@pytest.mark.parametrize(
    ("config", "iss", "code"),
    [
        (("tocsin", "issuer"), "issuer", "accepted"),
        (("tocsin", "issuer"), "other", "token_invalid"),
        (("tocsin", "issuer"), None, "token_invalid"),
        (("tocsin", ""), "anyone", "accepted"),
    ],
)
def test_the_issuer_is_checked_only_when_configured(
    config: tuple[str, str], iss: str | None, code: str
) -> None:
    claims: dict[str, Any] = {"sub": "a", "aud": "tocsin", "exp": int(time.time()) + 60}
    if iss is not None:
        claims["iss"] = iss
    fast, pyjwt = _both_ways(_verifier(config), mint_like(claims))
    assert fast == pyjwt
    assert fast[0] == code


def mint_like(claims: dict[str, Any]) -> str:
    return jwt.encode(claims, SECRET, algorithm="HS256")


def test_plain_hs256_tokens_are_judged_without_pyjwt(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_pyjwt(*args: object, **kwargs: object) -> object:
        raise AssertionError("PyJWT was asked")

    monkeypatch.setattr(jwt, "decode", no_pyjwt)
    verifier = TokenVerifier(secret=SECRET, cache_size=0)
    now = int(time.time())
    assert verifier.verify(mint_token(SECRET, "oncall", channels=["alerts"])).subject == "oncall"
    kid = jwt.encode({"sub": "a", "aud": "tocsin", "exp": now + 60}, SECRET, headers={"kid": "k"})
    assert verifier.verify(kid).subject == "a"
    refusals = {
        mint_token(SECRET, "oncall", ttl=-60): "token_expired",
        mint_token(OTHER_SECRET, "oncall"): "token_invalid",
        mint_token(SECRET, "oncall", audience="other"): "token_invalid",
    }
    for token, code in refusals.items():
        with pytest.raises(TokenError) as refused:
            verifier.verify(token)
        assert refused.value.code == code


def test_unusual_headers_are_left_to_pyjwt(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = 0
    real_decode = jwt.decode

    def counting_decode(*args: Any, **kwargs: Any) -> Any:
        nonlocal asked
        asked += 1
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting_decode)
    verifier = TokenVerifier(secret=SECRET, cache_size=0)
    claims = {"sub": "a", "aud": "tocsin", "exp": int(time.time()) + 60}
    assert verifier.verify(jwt.encode(claims, SECRET, headers={"x5t": "t"})).subject == "a"
    assert verifier.verify(jwt.encode(claims, SECRET, headers={"jku": "k"})).subject == "a"
    assert asked == 2
    with pytest.raises(TokenError) as refused:
        verifier.verify(jwt.encode(claims, SECRET, headers={"crit": ["exp"], "exp": 1}))
    assert str(refused.value) == "malformed token: Unsupported critical extension: exp"


def test_public_key_tokens_still_verify_through_pyjwt() -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    claims = {"sub": "svc", "aud": "tocsin", "exp": int(time.time()) + 60}
    es256 = jwt.encode(claims, private, algorithm="ES256")
    only_public = TokenVerifier(public_key=public_pem, cache_size=0)
    both = TokenVerifier(secret=SECRET, public_key=public_pem, cache_size=0)
    assert only_public.verify(es256).subject == "svc"
    assert both.verify(es256).subject == "svc"
    assert both.verify(mint_like(claims)).subject == "svc"
    with pytest.raises(TokenError) as refused:
        only_public.verify(mint_like(claims))
    assert refused.value.code == "token_invalid"


def test_a_secret_pyjwt_refuses_as_an_hmac_key_refuses_every_token_as_before() -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    claims = {"sub": "a", "aud": "tocsin", "exp": int(time.time()) + 60}
    token = _token(HEADERS[0], json.dumps(claims).encode(), "none", 0, "")
    token = token.rpartition(".")[0] + "." + _sign(token.rpartition(".")[0], pem)
    verifier = TokenVerifier(secret=pem, cache_size=0)
    fast, pyjwt = _both_ways(verifier, token)
    assert fast == pyjwt
    assert fast[0] == "token_invalid"


@given(st.text(alphabet=ALPHABET + "=+/ .!é\n", max_size=12))
@example("QUI")
@example("QUJ")
@example("QQ")
@example("QR")
@example("Q")
@example("QUI=")
def test_segments_decode_only_where_pyjwt_reads_the_same_bytes(segment: str) -> None:
    ours = auth._base64url_decode(segment.encode())
    try:
        theirs: bytes | None = jwt.api_jws.PyJWS._decode_base64url_segment(
            segment.encode(), "segment"
        )
    except jwt.DecodeError:
        theirs = None
    if "=" in segment:
        assert ours is None  # padded: PyJWT decides, and it may accept
    else:
        assert ours == theirs
