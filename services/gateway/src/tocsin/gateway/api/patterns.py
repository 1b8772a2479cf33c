"""`GET /v1/patterns`: the latest pattern findings (flapping, storms, noisy sources, recurring).

Stored by the scheduler's pattern detection job every few minutes. Before its
first run the lists are empty and `detected_at` is null.
"""

from __future__ import annotations

import json

from starlette.routing import BaseRoute

from tocsin.common import keys
from tocsin.gateway.api.context import ApiContext
from tocsin.gateway.api.stored import stored_document_route

__all__ = ["routes"]

_NOT_YET = json.dumps(
    {"detected_at": None, "flapping": [], "storms": [], "noisy_sources": [], "recurring": []}
)


def routes(context: ApiContext) -> list[BaseRoute]:
    return [stored_document_route(context, "/v1/patterns", keys.pattern_findings, _NOT_YET)]
