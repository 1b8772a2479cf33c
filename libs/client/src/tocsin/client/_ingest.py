"""Sending alerts to ingest."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from tocsin.client._http import checked

__all__ = ["IngestClient"]


class IngestClient:
    """A small synchronous client for ingest's native endpoint."""

    def __init__(self, base_url: str, api_key: str = "", timeout: float = 10.0) -> None:
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)

    def send(self, alerts: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
        """Post one alert or a batch; return the accepted ids and fingerprints.

        Raises `UnreachableError` when ingest does not answer and `RequestError`
        (with its problem+json body) when it refuses the alerts.
        """
        response = checked(self._http, "ingest", "POST", "/v1/alerts", json=alerts)
        accepted: list[dict[str, str]] = response.json()["accepted"]
        return accepted

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> IngestClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
