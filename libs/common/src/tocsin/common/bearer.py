"""Bearer-token authorization of an HTTP request, as the gateway's API and the notifier's
preview endpoint both answer it: 401 (no or bad token) or 403 (scope missing) problems."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tocsin.common.auth import Claims, TokenError, TokenVerifier
from tocsin.common.problems import problem

__all__ = ["Unauthorized", "authorize"]


class Unauthorized(Exception):  # noqa: N818 -- it carries the response, it is not an error value
    """Raised by `authorize`; carries the 401/403 problem response to return."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def authorize(verifier: TokenVerifier, request: Request, scope: str) -> Claims:
    """The caller's claims, if its bearer token is valid and carries `scope`."""
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else ""
    try:
        claims = verifier.verify(token)
    except TokenError as exc:
        raise Unauthorized(
            problem(
                401,
                exc.code.replace("_", "-"),
                "Unauthorized",
                str(exc),
                headers={"www-authenticate": "Bearer"},
            )
        ) from None
    if scope not in claims.scopes:
        raise Unauthorized(
            problem(403, "insufficient-scope", "Forbidden", f"the `{scope}` scope is required")
        )
    return claims
