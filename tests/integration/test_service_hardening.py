"""Deployment-facing hardening of every service: a metrics port of its own, signing secrets of
a safe length."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tocsin.client.devserver import free_port

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name", ["gateway", "ingest"])
def test_metrics_port_serves_metrics_and_the_public_port_no_longer_does(
    start_service: Any, name: str
) -> None:
    metrics_port = free_port()
    service = start_service(name, TOCSIN_METRICS_PORT=str(metrics_port))
    assert httpx.get(f"{service.url}/healthz", timeout=10).status_code == 200
    assert httpx.get(f"{service.url}/metrics", timeout=10).status_code == 404
    scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
    assert scraped.status_code == 200
    assert "process_cpu_seconds_total" in scraped.text or "python_info" in scraped.text


@pytest.mark.parametrize("name", ["gateway", "ingest"])
def test_a_signing_secret_shorter_than_32_bytes_stops_the_service_naming_it(
    start_service: Any, name: str
) -> None:
    service = start_service(name, wait=False, TOCSIN_JWT_SECRET="x" * 31)
    assert service.process.wait(timeout=30) != 0
    assert "TOCSIN_JWT_SECRET" in service.log()
    assert "32" in service.log()
