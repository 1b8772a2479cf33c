"""The credential in an `Authorization` header, and PagerDuty's words for a refused one."""

from __future__ import annotations

import base64

import pytest

from tocsin.ingest.credentials import credential_of
from tocsin.ingest.pagerduty_errors import routing_key_errors


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("header", "credential"),
    [
        ("Bearer tsk_a_b", "tsk_a_b"),
        ("bearer  tsk_a_b ", "tsk_a_b"),
        (_basic("alertmanager", "tsk_a_b"), "tsk_a_b"),
        (_basic("tsk_a_b", ""), "tsk_a_b"),
        (_basic("user", "pass:with:colons"), "pass:with:colons"),
        ("Basic not-base64!", ""),
        ("Basic " + base64.b64encode(b"\xff\xfe:x").decode(), ""),
        ("Basic " + "A" * 9000, ""),
        ("Token tsk_a_b", ""),
        ("", ""),
    ],
)
def test_bearer_or_basic_password_is_the_credential(header: str, credential: str) -> None:
    assert credential_of(header) == credential


def test_refused_routing_keys_are_worded_as_pagerduty_does_never_as_the_jwt_parser() -> None:
    assert routing_key_errors("api_key_revoked: the API key has been revoked") == [
        "'routing_key' has been revoked"
    ]
    for detail in ("token_invalid: Not enough segments", "token_invalid: Invalid header", ""):
        [error] = routing_key_errors(detail)
        assert error.startswith("'routing_key' is not a valid integration key")
        assert "segments" not in error
