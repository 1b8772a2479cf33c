"""W3C trace context at the producer edge: continue a `traceparent`, or start a trace.

Ingest's own span gets a fresh span id whose parent is the producer's; the
resulting `traceparent` rides in the Dramatiq message options to the processor.
"""

from __future__ import annotations

import random
import re

__all__ = ["continue_trace"]

_TRACEPARENT = re.compile(
    r"^00-(?P<trace>[0-9a-f]{32})-(?P<span>[0-9a-f]{16})-(?P<flags>[0-9a-f]{2})$"
)
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


def continue_trace(header: str | None) -> str:
    """The `traceparent` for ingest's span: a child of `header` when it is valid."""
    # Trace ids need to be unique, not secret (W3C): a seeded PRNG, no system call.
    span_id = f"{random.getrandbits(64) or 1:016x}"
    match = _TRACEPARENT.match(header.strip().lower()) if header else None
    if match and match["trace"] != _ZERO_TRACE and match["span"] != _ZERO_SPAN:
        return f"00-{match['trace']}-{span_id}-{match['flags']}"
    # An invalid header is ignored, as the W3C spec asks: a new trace starts here.
    return f"00-{random.getrandbits(128) or 1:032x}-{span_id}-01"
