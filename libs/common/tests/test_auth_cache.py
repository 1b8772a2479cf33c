"""The token verifier's memory of accepted tokens: reuse, expiry and refusals."""

from __future__ import annotations

import time

import jwt
import pytest

from tocsin.client.devtoken import mint_token
from tocsin.common.auth import TokenError, TokenVerifier

SECRET = "unit-test-secret-of-at-least-32-bytes!"


def test_a_token_seen_again_is_accepted_without_decoding_it_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    verifier = TokenVerifier(secret=SECRET)
    token = mint_token(SECRET, "oncall", channels=["alerts"])
    first = verifier.verify(token)

    def not_again(*args: object, **kwargs: object) -> object:
        raise AssertionError("the token was decoded again")

    # Neither the standard-library HS256 path nor PyJWT's.
    monkeypatch.setattr(verifier, "_verify_plain_hs256", not_again)
    monkeypatch.setattr(verifier, "_verify_with_pyjwt", not_again)
    monkeypatch.setattr(jwt, "decode", not_again)
    assert verifier.verify(token) == first


def test_a_remembered_token_is_refused_as_expired_once_its_expiry_passes() -> None:
    verifier = TokenVerifier(secret=SECRET, leeway=0)
    token = mint_token(SECRET, "oncall", ttl=1)
    claims = verifier.verify(token)
    assert claims.expires_at is not None
    while time.time() < claims.expires_at:
        time.sleep(0.05)
    with pytest.raises(TokenError) as refused:
        verifier.verify(token)
    assert refused.value.code == "token_expired"


def test_a_tampered_token_is_refused_even_when_its_header_was_seen() -> None:
    verifier = TokenVerifier(secret=SECRET)
    token = mint_token(SECRET, "oncall")
    verifier.verify(token)
    head, payload, signature = token.split(".")
    forged_payload = mint_token(SECRET, "root").split(".")[1]
    for forged in (
        f"{head}.{forged_payload}.{signature}",
        f"{head}.{payload}.{signature[:-4]}AAAA",
    ):
        for _ in range(2):  # a refusal is never remembered as an acceptance
            with pytest.raises(TokenError) as refused:
                verifier.verify(forged)
            assert refused.value.code == "token_invalid"


def test_the_memory_holds_at_most_cache_size_tokens() -> None:
    verifier = TokenVerifier(secret=SECRET, cache_size=3)
    tokens = [mint_token(SECRET, f"user-{n}") for n in range(5)]
    for token in tokens:
        verifier.verify(token)
    assert list(verifier._accepted) == tokens[-3:]
