"""Hostile templates, bytes and query values against a real gateway: 4xx answers, a live loop."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from tests.support import RawWebSocket, start_previewing_gateway

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gateway(start_module_service: Any) -> Any:
    """One previewing gateway for the module: each test sends its own requests, and a
    traceback any of them caused stays in the log the later ones check."""
    return start_previewing_gateway(start_module_service)


@pytest.fixture
def http(gateway: Any, user_token: Callable[..., str]) -> Iterator[httpx.Client]:
    auth = {"authorization": f"Bearer {user_token()}"}
    with httpx.Client(base_url=gateway.url, headers=auth, timeout=30) as client:
        yield client


COSTLY_TEMPLATES = [
    ("{{ 7 ** 10000000 }}", "**"),
    ("{{ 'x' * 100000000 }}", "over 100000 characters"),
    ("{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}", "CPU"),
    ("{% for i in range(99999) %}{{ 'y' * 99 }}{% endfor %}", "output"),
    ("{{ '{:>999999999}'.format(1) }}", "field widths"),
    ("{{ 'x' | center(100000000) }}", "center"),
]


def test_costly_templates_answer_422_with_the_reason_while_health_answers(
    gateway: Any, http: httpx.Client
) -> None:
    probes: list[int] = []
    stop = threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=gateway.url, timeout=10) as prober:
            while not stop.is_set():
                probes.append(prober.get("/healthz").status_code)
                time.sleep(0.01)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        answers = [
            (
                reason,
                http.post(
                    "/v1/notifications/preview",
                    json={"receiver_type": "slack", "templates": {"title": template}},
                ),
            )
            for template, reason in COSTLY_TEMPLATES
        ]
    finally:
        stop.set()
        prober.join()
    for reason, answer in answers:
        assert answer.status_code == 422, answer.text[:300]
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert reason in answer.text
        assert len(answer.content) < 10_000
    assert probes
    assert set(probes) == {200}


def test_an_ordinary_template_still_renders(http: httpx.Client) -> None:
    answer = http.post(
        "/v1/notifications/preview",
        json={
            "receiver_type": "slack",
            "templates": {"title": "{{ alerts | length }} x {{ 6 * 7 }}"},
        },
    )
    assert answer.status_code == 200, answer.text
    assert "1 x 42" in answer.text


def test_invalid_utf8_inside_json_strings_is_a_400_problem(
    gateway: Any, http: httpx.Client
) -> None:
    for path in ("/v1/notifications/preview", "/v1/alerts/some-alert/ack", "/v1/silences"):
        answer = http.post(
            path, content=b'{"receiver_type": "\xff", "comment": "\xff"}',
            headers={"content-type": "application/json"},
        )  # fmt: skip
        assert answer.status_code == 400, (path, answer.text)
        assert answer.headers["content-type"].startswith("application/problem+json")
    assert "Traceback" not in gateway.log()


CRAFTED_QUERIES = [
    {"since": "nan"},
    {"until": "nan"},
    {"since": "inf"},
    {"until": "-inf"},
    {"since": "9" * 400},
    {"cursor": base64.urlsafe_b64encode(b"nan|x").decode()},
    {"cursor": base64.urlsafe_b64encode(b"1e999|x").decode()},
    {"cursor": base64.urlsafe_b64encode(b"\xff\xfe|x").decode()},
    {"cursor": "!!!"},
    {"cursor": base64.urlsafe_b64encode(b"12.5").decode()},
]


def test_non_finite_times_and_crafted_cursors_are_400_problems(
    gateway: Any, http: httpx.Client
) -> None:
    for params in CRAFTED_QUERIES:
        answer = http.get("/v1/alerts", params=params)
        assert answer.status_code == 400, (params, answer.text)
        assert answer.headers["content-type"].startswith("application/problem+json")
    assert "Traceback" not in gateway.log()


def test_a_binary_frame_with_invalid_utf8_is_refused_without_a_traceback(
    gateway: Any, user_token: Callable[..., str]
) -> None:
    # Before authentication: the in-band auth frame itself is not UTF-8.
    unauthenticated = RawWebSocket(gateway.port, "/ws")
    unauthenticated.send_frame(RawWebSocket.BINARY, b'{"type": "auth", "token": "\xff"}')
    _, code, _ = unauthenticated.frames_until_close()
    unauthenticated.close()
    assert code != 1011
    # After authentication: a request frame that is not UTF-8.
    socket = RawWebSocket(gateway.port, f"/ws?token={user_token()}")
    socket.next_message("welcome")
    socket.send_frame(RawWebSocket.BINARY, b'{"type": "subscribe", "channels": ["\xff"]}')
    _, code, _ = socket.frames_until_close()
    socket.close()
    assert code not in (1006, 1011)
    assert "Traceback" not in gateway.log()


def test_previews_beyond_the_concurrent_bound_are_429_while_health_answers(
    gateway: Any, user_token: Callable[..., str]
) -> None:
    auth = {"authorization": f"Bearer {user_token()}"}
    slow = "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}"
    answers: list[httpx.Response] = []

    def post() -> None:
        with httpx.Client(base_url=gateway.url, headers=auth, timeout=60) as client:
            answers.append(
                client.post(
                    "/v1/notifications/preview",
                    json={"receiver_type": "slack", "templates": {"title": slow}},
                )
            )

    posters = [threading.Thread(target=post) for _ in range(6)]
    for poster in posters:
        poster.start()
    health = httpx.get(f"{gateway.url}/healthz", timeout=30)
    for poster in posters:
        poster.join()
    assert health.status_code == 200
    statuses = sorted(answer.status_code for answer in answers)
    assert 422 in statuses
    assert 429 in statuses
    assert set(statuses) == {422, 429}
    busy = next(answer for answer in answers if answer.status_code == 429)
    assert busy.headers["retry-after"] == "1"
    assert busy.headers["content-type"].startswith("application/problem+json")
