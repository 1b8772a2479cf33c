"""`GET /v1/predictions/volume`: the latest hourly alert-volume forecast per service.

Stored by the scheduler's `volume_forecast` job each hour (docs/prediction.md).
Before its first run `forecast_at` is null and the lists are empty. Incident
predictions are served inside `GET /v1/alerts/{id}` as `prediction`.
"""

from __future__ import annotations

import json

from starlette.routing import BaseRoute

from tocsin.common import keys
from tocsin.gateway.api.context import ApiContext
from tocsin.gateway.api.stored import stored_document_route

__all__ = ["routes"]

_NOT_YET = json.dumps(
    {"forecast_at": None, "interval": None, "services": [], "storms": [], "skipped": {}}
)


def routes(context: ApiContext) -> list[BaseRoute]:
    volume = stored_document_route(
        context, "/v1/predictions/volume", keys.prediction_volume, _NOT_YET
    )
    return [volume]
