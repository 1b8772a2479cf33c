"""The HTTP POSTs every HTTP receiver makes, with httpx errors translated to outcomes.

A receiver's answer is read only as far as `MAX_ANSWER_BYTES` (its status and
headers, and the start of its body for the error message), as raw bytes with
no content decoding, so a receiver that answers without end, or with a
compressed bomb, costs at most that much memory. The time it may take is
bounded by the send loop's deadline around the whole send.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import httpx

from tocsin.notifier.receivers._errors import PermanentDeliveryError, TemporaryDeliveryError

__all__ = [
    "MAX_ANSWER_BYTES",
    "HttpPost",
    "HttpPosts",
    "post",
    "require",
    "retry_after_seconds",
]

# Most of a receiver's answer body read: enough for an error message, and small enough
# that a receiver cannot make a send hold memory.
MAX_ANSWER_BYTES = 16 * 1024


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


async def _answer_start(response: httpx.Response) -> bytes:
    """At most `MAX_ANSWER_BYTES` of the answer's body, as sent (never decompressed)."""
    kept = bytearray()
    async for chunk in response.aiter_raw():
        kept += chunk
        if len(kept) >= MAX_ANSWER_BYTES:
            break
    return bytes(kept[:MAX_ANSWER_BYTES])


async def post(
    http: httpx.AsyncClient,
    url: str,
    content: bytes,
    headers: Mapping[str, str],
    seconds: float,
) -> None:
    """POST; return on a 2xx answer, raise Temporary/PermanentDeliveryError otherwise.

    `seconds` is httpx's timeout of each phase; the caller bounds the whole send.
    """
    try:
        async with http.stream(
            "POST",
            url,
            content=content,
            # Identity, so the bounded read above is the whole cost of an answer.
            headers={**headers, "accept-encoding": "identity"},
            timeout=seconds,
        ) as response:
            start = await _answer_start(response)
    except httpx.TimeoutException as exc:
        raise TemporaryDeliveryError(f"timeout after {seconds}s: {type(exc).__name__}") from None
    except httpx.TransportError as exc:
        raise TemporaryDeliveryError(f"transport error: {exc}") from None
    status = response.status_code
    if 200 <= status < 300:
        return
    detail = f"HTTP {status}: {start[:200].decode('utf-8', 'replace')}"
    if status == 429 or status >= 500:
        retry_after = retry_after_seconds(response.headers.get("retry-after"))
        raise TemporaryDeliveryError(detail, retry_after)
    raise PermanentDeliveryError(detail)


@dataclass(frozen=True, slots=True)
class HttpPost:
    """One rendered POST: where, what and with which headers."""

    url: str
    body: bytes
    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class HttpPosts:
    """A rendered notification for an HTTP receiver: its POSTs, sent in order."""

    posts: Sequence[HttpPost]
    timeout: float

    async def send(self, http: httpx.AsyncClient) -> None:
        for request in self.posts:
            await post(http, request.url, request.body, request.headers, self.timeout)


def require(options: Mapping[str, object], key: str, kind: str) -> str:
    value = options.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{kind} receiver needs `{key}`")
    return value
