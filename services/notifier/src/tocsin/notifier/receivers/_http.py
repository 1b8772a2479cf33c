"""The HTTP POSTs every HTTP receiver makes, with transport errors translated to outcomes.

A POST goes straight to httpcore's connection pool (httpx's own transport
core: HTTP/1.1 through h11, keep-alive, TLS), not through an `httpx.AsyncClient`,
whose layers (request building, auth, redirects, cookies, the response model)
cost as much CPU again as the request itself on the send loop. What those layers
did that a receiver needs is done here: the URL is read by `httpx.URL` (IDNA,
percent-encoding), credentials in it become Basic auth, and the Host and
Content-Length headers are set. Redirects are not followed and no cookie is
kept, as before; proxies from the environment are not used (sends go to the
receiver directly).

A receiver's answer is read only as far as `MAX_ANSWER_BYTES` (its status and
headers, and the start of its body for the error message), as raw bytes with
no content decoding, so a receiver that answers without end, or with a
compressed bomb, costs at most that much memory. The time it may take is
bounded by the send loop's deadline around the whole send.
"""

from __future__ import annotations

import base64
import email.utils
import functools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import httpcore
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
_USER_AGENT = b"tocsin-notifier"
# Replaced by the request's own: identity, so the bounded read is the whole cost of an answer.
_OWN_HEADERS = frozenset({"host", "content-length", "accept-encoding", "connection"})


@dataclass(frozen=True, slots=True)
class _Target:
    """Where a URL's requests go, and the headers it implies (read once per URL)."""

    url: httpcore.URL
    headers: tuple[tuple[bytes, bytes], ...]


@functools.lru_cache(maxsize=1024)
def _target(url: str) -> _Target:
    parsed = httpx.URL(url)
    headers = [(b"Host", parsed.netloc)]
    if parsed.userinfo:
        # As httpx does with credentials in the URL.
        credentials = f"{parsed.username}:{parsed.password}".encode()
        headers.append((b"Authorization", b"Basic " + base64.b64encode(credentials)))
    target = httpcore.URL(
        scheme=parsed.raw_scheme, host=parsed.raw_host, port=parsed.port, target=parsed.raw_path
    )
    return _Target(target, tuple(headers))


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


async def _answer_start(response: httpcore.Response) -> bytes:
    """At most `MAX_ANSWER_BYTES` of the answer's body, as sent (never decompressed)."""
    kept = bytearray()
    async for chunk in response.aiter_stream():
        kept += chunk
        if len(kept) >= MAX_ANSWER_BYTES:
            break
    return bytes(kept[:MAX_ANSWER_BYTES])


async def _exchange(
    http: httpcore.AsyncConnectionPool,
    url: httpcore.URL,
    headers: list[tuple[bytes, bytes]],
    content: bytes,
    timeouts: dict[str, float],
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """One POST on the pool: the answer's status, headers and the start of its body."""
    async with http.stream(
        b"POST", url, headers=headers, content=content, extensions={"timeout": timeouts}
    ) as response:
        return response.status, response.headers, await _answer_start(response)


def _header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


async def post(
    http: httpcore.AsyncConnectionPool,
    url: str,
    content: bytes,
    headers: Mapping[str, str],
    seconds: float,
) -> None:
    """POST; return on a 2xx answer, raise Temporary/PermanentDeliveryError otherwise.

    `seconds` is the timeout of each phase (connect, write, read, a pooled
    connection); the caller bounds the whole send.
    """
    target = _target(url)
    request_headers = [
        *target.headers,
        (b"Accept", b"*/*"),
        (b"Accept-Encoding", b"identity"),
        (b"Connection", b"keep-alive"),
        (b"User-Agent", _USER_AGENT),
        (b"Content-Length", b"%d" % len(content)),
        *(
            (name.encode("ascii"), value.encode("ascii"))
            for name, value in headers.items()
            if name.lower() not in _OWN_HEADERS
        ),
    ]
    timeouts = {"connect": seconds, "read": seconds, "write": seconds, "pool": seconds}
    request = (target.url, request_headers, content, timeouts)
    try:
        try:
            status, response_headers, start = await _exchange(http, *request)
        except (httpcore.RemoteProtocolError, httpcore.ReadError, httpcore.WriteError):
            # Closed by the server with no answer: most often a kept-alive connection it
            # had just closed (HTTP lets it close one at any time), so the POST never
            # reached it. Once more at once on another connection, as Go's client (and so
            # Alertmanager) does; a repeat failure is the receiver's.
            status, response_headers, start = await _exchange(http, *request)
    except httpcore.TimeoutException as exc:
        raise TemporaryDeliveryError(f"timeout after {seconds}s: {type(exc).__name__}") from None
    except (
        httpcore.NetworkError,
        httpcore.ProtocolError,
        httpcore.ProxyError,
        httpcore.UnsupportedProtocol,
    ) as exc:
        raise TemporaryDeliveryError(f"transport error: {exc}") from None
    if 200 <= status < 300:
        return
    detail = f"HTTP {status}: {start[:200].decode('utf-8', 'replace')}"
    if status == 429 or status >= 500:
        retry_after = retry_after_seconds(_header(response_headers, b"retry-after"))
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

    async def send(self, http: httpcore.AsyncConnectionPool) -> None:
        for request in self.posts:
            await post(http, request.url, request.body, request.headers, self.timeout)


def require(options: Mapping[str, object], key: str, kind: str) -> str:
    value = options.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{kind} receiver needs `{key}`")
    return value
