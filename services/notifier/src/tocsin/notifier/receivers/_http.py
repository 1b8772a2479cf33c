"""The one HTTP POST every HTTP receiver makes, with httpx errors translated to outcomes."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping

import httpx

from tocsin.notifier.receivers._errors import PermanentDeliveryError, TemporaryDeliveryError

__all__ = ["post", "require", "retry_after_seconds"]


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def post(
    http: httpx.Client,
    url: str,
    content: bytes,
    headers: Mapping[str, str],
    timeout: float,
) -> httpx.Response:
    """POST and return a 2xx response; raise Temporary/PermanentDeliveryError otherwise."""
    try:
        response = http.post(url, content=content, headers=dict(headers), timeout=timeout)
    except httpx.TimeoutException as exc:
        raise TemporaryDeliveryError(f"timeout after {timeout}s: {type(exc).__name__}") from None
    except httpx.TransportError as exc:
        raise TemporaryDeliveryError(f"transport error: {exc}") from None
    status = response.status_code
    if 200 <= status < 300:
        return response
    detail = f"HTTP {status}: {response.text[:200]}"
    if status == 429 or status >= 500:
        retry_after = retry_after_seconds(response.headers.get("retry-after"))
        raise TemporaryDeliveryError(detail, retry_after)
    raise PermanentDeliveryError(detail)


def require(options: Mapping[str, object], key: str, kind: str) -> str:
    value = options.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{kind} receiver needs `{key}`")
    return value
