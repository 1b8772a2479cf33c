"""Hooks for the schemathesis run (loaded through SCHEMATHESIS_HOOKS).

An Idempotency-Key names one request: a client sends a new key for a new
request, and ingest answers 422 to a key reused with another body (the IETF
draft's rule). schemathesis draws header values from a small space, so two
different bodies often share a key; each generated key is made unique here,
as a real client's would be. Whether the header is sent at all stays random.
"""

from __future__ import annotations

import uuid
from typing import Any

import schemathesis


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    headers = case.headers or {}
    for name in list(headers):
        if name.lower() == "idempotency-key":
            headers[name] = uuid.uuid4().hex
