"""What verifying a JWT costs the gateway per connect: PyJWT alone vs `TokenVerifier`.

Every token is distinct (a new client brings a new token), so the verifier's memory of
accepted tokens is bypassed unless a row says otherwise. Pinned to one core, in-process.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import jwt

from tocsin.client.devtoken import mint_token
from tocsin.common.auth import TokenVerifier

SECRET = "bench-secret-of-at-least-thirty-two-bytes"
TOKENS = 20_000
REPEATS = 5


def _per_call_us(run: Callable[[], None], calls: int) -> float:
    timings = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        run()
        timings.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(timings)


def _verify_each(verifier: TokenVerifier, tokens: list[str]) -> Callable[[], None]:
    verify = verifier.verify

    def run() -> None:
        for token in tokens:
            verify(token)

    return run


def _pyjwt_each(tokens: list[str]) -> Callable[[], None]:
    options: Any = {"require": ["exp", "sub"]}

    def run() -> None:
        for token in tokens:
            jwt.decode(
                token, SECRET, algorithms=["HS256"], audience="tocsin", leeway=5.0, options=options
            )

    return run


def _with_extra_header(token: str) -> str:
    """The same claims under a header the fast path leaves to PyJWT."""
    claims = jwt.decode(token, options={"verify_signature": False})
    return jwt.encode(claims, SECRET, algorithm="HS256", headers={"x5t": "bench"})


def main() -> None:
    os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    tokens = [
        mint_token(SECRET, f"user-{n}", scopes=("read", "ack"), channels=("alerts", f"team-{n}"))
        for n in range(TOKENS)
    ]
    unusual = [_with_extra_header(token) for token in tokens[:2000]]
    rows = [
        ("jwt.decode alone (PyJWT, HS256)", _per_call_us(_pyjwt_each(tokens), TOKENS)),
        (
            "TokenVerifier.verify, distinct tokens, no memory",
            _per_call_us(_verify_each(TokenVerifier(secret=SECRET, cache_size=0), tokens), TOKENS),
        ),
        (
            "TokenVerifier.verify, header with x5t (PyJWT path)",
            _per_call_us(
                _verify_each(TokenVerifier(secret=SECRET, cache_size=0), unusual), len(unusual)
            ),
        ),
    ]
    remembering = TokenVerifier(secret=SECRET, cache_size=TOKENS)
    _verify_each(remembering, tokens)()
    rows.append(
        (
            "TokenVerifier.verify, token seen before (memory hit)",
            _per_call_us(_verify_each(remembering, tokens), TOKENS),
        )
    )
    width = max(len(name) for name, _ in rows)
    print(f"{TOKENS} distinct tokens, one core")
    print(f"{'operation'.ljust(width)}  us/verify (median of {REPEATS})")
    for name, cost in rows:
        print(f"{name.ljust(width)}  {cost:8.2f}")
