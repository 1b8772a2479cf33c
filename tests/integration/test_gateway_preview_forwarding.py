"""The template preview across the gateway -> notifier hop, with real processes: what a
client gets when the notifier is missing, down or hanging, and that the notifier's own
endpoint refuses whoever has no token."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from tests.support import start_previewing_gateway

from tocsin.common.preview import MAX_PREVIEW_BYTES, PREVIEW_PATH

pytestmark = pytest.mark.integration

SLACK = {"receiver_type": "slack", "templates": {"title": "{{ 6 * 7 }}"}}


def _problem(answer: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = answer.json()
    assert body["type"].endswith("/" + kind), body
    return body


@pytest.fixture
def auth(user_token: Callable[..., str]) -> dict[str, str]:
    return {"authorization": f"Bearer {user_token()}"}


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A port that accepts connections and never answers (a notifier frozen mid-render)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield server.getsockname()[1]


def test_gateway_answers_503_problems_when_the_notifier_is_down_or_hanging(
    start_service: Any, auth: dict[str, str], silent_listener: int
) -> None:
    notifier = start_service("notifier")
    gateway = start_service("gateway", TOCSIN_NOTIFIER_URL=notifier.url)
    url = gateway.url + PREVIEW_PATH
    assert httpx.post(url, headers=auth, json=SLACK, timeout=30).status_code == 200
    notifier.stop()
    down = _problem(
        httpx.post(url, headers=auth, json=SLACK, timeout=30), 503, "notifier-unavailable"
    )
    assert notifier.url in down["detail"]
    # A short wait: the silent notifier never answers, however long the gateway waits.
    hanging = start_service(
        "gateway",
        TOCSIN_NOTIFIER_URL=f"http://127.0.0.1:{silent_listener}",
        TOCSIN_NOTIFIER_TIMEOUT="1",
    )
    answer = httpx.post(hanging.url + PREVIEW_PATH, headers=auth, json=SLACK, timeout=60)
    assert "ReadTimeout" in _problem(answer, 503, "notifier-unavailable")["detail"]
    assert "Traceback" not in gateway.log() + hanging.log()


def test_gateway_without_a_notifier_url_says_so(start_service: Any, auth: dict[str, str]) -> None:
    gateway = start_service("gateway")
    answer = httpx.post(gateway.url + PREVIEW_PATH, headers=auth, json=SLACK, timeout=30)
    assert "TOCSIN_NOTIFIER_URL" in _problem(answer, 503, "notifier-not-configured")["detail"]
    # Authorization and the body are still checked first.
    assert httpx.post(gateway.url + PREVIEW_PATH, json=SLACK, timeout=30).status_code == 401


def test_notifier_preview_endpoint_takes_only_a_valid_token_with_the_read_scope(
    start_service: Any, user_token: Callable[..., str]
) -> None:
    notifier = start_service("notifier")
    url = notifier.url + PREVIEW_PATH
    _problem(httpx.post(url, json=SLACK, timeout=30), 401, "token-missing")
    forged = {"authorization": "Bearer " + user_token()[:-4] + "AAAA"}
    assert httpx.post(url, headers=forged, json=SLACK, timeout=30).status_code == 401
    no_read = {"authorization": f"Bearer {user_token(scopes=('write',))}"}
    _problem(httpx.post(url, headers=no_read, json=SLACK, timeout=30), 403, "insufficient-scope")
    reader = {"authorization": f"Bearer {user_token(scopes=('read',))}"}
    answer = httpx.post(url, headers=reader, json=SLACK, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["rendered"]["payload"]["blocks"][0]["text"]["text"] == "42"


def test_a_preview_body_over_the_bound_is_413_at_the_gateway_and_at_the_notifier(
    start_service: Any, auth: dict[str, str]
) -> None:
    gateway = start_previewing_gateway(start_service)
    notifier_url = gateway.env["TOCSIN_NOTIFIER_URL"]
    huge = {"receiver_type": "slack", "templates": {"title": "x" * MAX_PREVIEW_BYTES}}
    for base in (gateway.url, notifier_url):
        answer = httpx.post(base + PREVIEW_PATH, headers=auth, json=huge, timeout=30)
        _problem(answer, 413, "body-too-large")


def test_a_notifier_without_a_jwt_key_stays_ready_but_refuses_every_preview(
    start_service: Any, auth: dict[str, str]
) -> None:
    notifier = start_service("notifier", TOCSIN_JWT_SECRET="")
    answer = httpx.post(notifier.url + PREVIEW_PATH, headers=auth, json=SLACK, timeout=30)
    assert "TOCSIN_JWT_SECRET" in _problem(answer, 503, "preview-unavailable")["detail"]
    assert httpx.get(notifier.url + "/readyz", timeout=30).status_code == 200
