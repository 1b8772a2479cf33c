"""PagerDuty's words for a refused routing key.

Ingest checks a PagerDuty routing key as any producer credential (an API key,
or an `ingest`-scoped JWT), whose refusals carry Tocsin codes and, for a
token, the JWT parser's wording ("Not enough segments"). A PagerDuty client
should read what PagerDuty would say: `Invalid routing key`, with the reason
in `errors` in PagerDuty's phrasing about `routing_key`.
"""

from __future__ import annotations

__all__ = ["INVALID_ROUTING_KEY", "routing_key_errors"]

INVALID_ROUTING_KEY = "Invalid routing key"

_REASONS = {
    "credentials_missing": "'routing_key' is missing",
    "api_key_invalid": "'routing_key' is not a valid integration key",
    "api_key_revoked": "'routing_key' has been revoked",
    "token_expired": "'routing_key' has expired",
    "token_not_yet_valid": "'routing_key' is not valid yet",
    "scope_missing": "'routing_key' may not send events (the token lacks the ingest scope)",
}
# Any other token code: the key was neither a Tocsin API key nor a valid token.
_OTHER = "'routing_key' is not a valid integration key (a Tocsin API key, tsk_...)"


def routing_key_errors(detail: str) -> list[str]:
    """PagerDuty's `errors` for an authentication refusal whose detail is `code: message`."""
    code = detail.partition(":")[0].strip()
    return [_REASONS.get(code, _OTHER)]
