"""HTTP errors translated at the boundary: one line naming the service, its address and why."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tocsin.client._exceptions import NotFoundError, RequestError, UnreachableError

__all__ = ["checked", "reason_of"]

_ERRNO = re.compile(r"^\[Errno -?\d+\]\s*")
_REDIS_CONNECT = re.compile(r"^Error -?\d+ connecting to \S+:\d+\.\s*(.+?)\.?$")


def reason_of(exc: BaseException) -> str:
    """`connection refused` out of `[Errno 111] Connection refused` and the like."""
    text = str(exc) or type(exc).__name__
    text = _ERRNO.sub("", text.splitlines()[0]).strip()
    text = _REDIS_CONNECT.sub(r"\1", text)
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({text})" if text else "timed out"
    return text[:1].lower() + text[1:]


def _problem_text(response: httpx.Response) -> tuple[str, dict[str, Any] | None]:
    problem: dict[str, Any] | None = None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        problem = body
        # Problem details (RFC 9457), or PagerDuty's and other shapes' message fields.
        parts = [str(body[k]) for k in ("title", "detail", "message") if body.get(k)]
        errors = body.get("errors")
        if isinstance(errors, list) and errors:
            parts.append("; ".join(str(e.get("message", e)) if isinstance(e, dict) else str(e)
                                   for e in errors[:3]))  # fmt: skip
        if parts:
            return ": ".join(parts), problem
    text = " ".join(response.text.split())[:200]
    return text or response.reason_phrase, problem


def checked(
    http: httpx.Client, service: str, method: str, path: str, **options: Any
) -> httpx.Response:
    """Send one request; raise `UnreachableError`, `NotFoundError` or `RequestError` instead of
    returning a failure."""
    url = f"{str(http.base_url).rstrip('/')}{path}"
    try:
        response = http.request(method, path, **options)
    except httpx.HTTPError as exc:
        raise UnreachableError(service, str(http.base_url).rstrip("/"), reason_of(exc)) from None
    if response.is_success:
        return response
    text, problem = _problem_text(response)
    message = f"{service} answered {response.status_code} to {method} {url}: {text}"
    error = NotFoundError if response.status_code == 404 else RequestError
    raise error(response.status_code, message, problem)
