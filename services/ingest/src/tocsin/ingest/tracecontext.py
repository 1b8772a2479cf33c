"""W3C trace context at the producer edge: continue a `traceparent`, or start a trace.

Ingest's own span gets a fresh span id whose parent is the producer's; the
resulting `traceparent` rides in the Dramatiq message options to the processor.
"""

from __future__ import annotations

import random

from tocsin.common.telemetry.propagation import own_traceparent

__all__ = ["continue_trace"]


def continue_trace(header: str | None) -> str:
    """The `traceparent` for ingest's span: a child of `header` when it is valid."""
    # Trace ids need to be unique, not secret (W3C): a seeded PRNG, no system call.
    span_id = f"{random.getrandbits(64) or 1:016x}"
    parts = own_traceparent(header.strip().lower()) if header else None
    if parts is not None:
        trace_id, _, flags = parts
        return f"00-{trace_id}-{span_id}-{flags}"
    # An invalid header is ignored, as the W3C spec asks: a new trace starts here.
    return f"00-{random.getrandbits(128) or 1:032x}-{span_id}-01"
