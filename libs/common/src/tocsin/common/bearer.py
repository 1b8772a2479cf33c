"""Bearer-token authorization of an HTTP request, as the gateway's API and the notifier's
preview endpoint both answer it: the caller's claims, or a 401 (no or bad token) or 403
(scope missing) problem to send back."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tocsin.common.auth import Claims, TokenError, TokenVerifier
from tocsin.common.problems import problem

__all__ = ["check_bearer"]


def check_bearer(verifier: TokenVerifier, request: Request, scope: str) -> Claims | Response:
    """The caller's claims if its bearer token is valid and carries `scope`, else the refusal."""
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else ""
    try:
        claims = verifier.verify(token)
    except TokenError as exc:
        return problem(
            401,
            exc.code.replace("_", "-"),
            "Unauthorized",
            str(exc),
            headers={"www-authenticate": "Bearer"},
        )
    if scope not in claims.scopes:
        return problem(403, "insufficient-scope", "Forbidden", f"the `{scope}` scope is required")
    return claims
