"""The gateway's dashboard API (`/v1/alerts`, `/v1/silences`, `/v1/health`) for the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx

from tocsin.client._http import checked

__all__ = ["GatewayClient"]

SERVICE = "gateway"


class GatewayClient:
    """A small synchronous client for the gateway's HTTP API, with a bearer token."""

    def __init__(self, base_url: str, token: str, timeout: float = 10.0) -> None:
        self._http = httpx.Client(
            base_url=base_url, headers={"authorization": f"Bearer {token}"}, timeout=timeout
        )

    def _json(self, method: str, path: str, **options: Any) -> Any:
        return checked(self._http, SERVICE, method, path, **options).json()

    def alerts(self, params: list[tuple[str, str]], limit: int) -> Iterator[dict[str, Any]]:
        """Alerts matching `params` (query parameters), newest change first, following cursors
        until `limit` alerts (0: all)."""
        cursor = ""
        taken = 0
        while True:
            page_size = min(500, limit - taken) if limit else 500
            query = [*params, ("limit", str(page_size))] + ([("cursor", cursor)] if cursor else [])
            page = self._json("GET", "/v1/alerts", params=query)
            for alert in page.get("alerts", []):
                yield alert
                taken += 1
            cursor = page.get("next_cursor") or ""
            if not cursor or (limit and taken >= limit):
                return

    def alert(self, alert_id: str) -> dict[str, Any]:
        """One alert with its timeline and notifications."""
        found: dict[str, Any] = self._json("GET", f"/v1/alerts/{quote(alert_id, safe='')}")
        return found

    def act(self, alert_id: str, action: str, comment: str) -> dict[str, Any]:
        """`ack`, `unack` or `resolve` the alert; the gateway answers once it is queued."""
        path = f"/v1/alerts/{quote(alert_id, safe='')}/{action}"
        answer: dict[str, Any] = self._json("POST", path, json={"comment": comment})
        return answer

    def silences(self, state: str = "") -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._json(
            "GET", "/v1/silences", params={"state": state} if state else {}
        )
        return found

    def create_silence(self, silence: dict[str, Any]) -> dict[str, Any]:
        created: dict[str, Any] = self._json("POST", "/v1/silences", json=silence)
        return created

    def expire_silence(self, silence_id: str) -> dict[str, Any]:
        expired: dict[str, Any] = self._json("DELETE", f"/v1/silences/{quote(silence_id, safe='')}")
        return expired

    def health(self) -> dict[str, Any]:
        report: dict[str, Any] = self._json("GET", "/v1/health")
        return report

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
