"""The gateway's WebSocket protocol against a real gateway process: auth paths, token
refusals with their documented close codes, channel grants, in-band refresh and limits."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from typing import Any

import httpx
import jwt
import pytest
import websockets
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from tests.support import next_frame, recv
from websockets.exceptions import ConnectionClosed

pytestmark = pytest.mark.integration

ISSUER = "tocsin-tests"


async def closed_with(socket: Any, within: float = 15.0) -> tuple[int, str, list[dict[str, Any]]]:
    """Read until the gateway closes; returns the close code, reason and frames seen."""
    frames: list[dict[str, Any]] = []
    closed: ConnectionClosed | None = None
    while closed is None:
        try:
            frames.append(await recv(socket, within))
        except ConnectionClosed as exc:
            closed = exc
    received = closed.rcvd
    assert received is not None, "closed without a close frame"
    return received.code, received.reason, frames


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "oncall",
        "aud": "tocsin",
        "iss": ISSUER,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "scope": "read",
        "channels": ["alerts", "alerts.team.*", "system"],
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs256(payload: dict[str, Any], secret: str | bytes) -> str:
    return jwt.encode(payload, secret, algorithm="HS256")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged_hs256(payload: dict[str, Any], key: bytes) -> str:
    """An HS256 token whose HMAC key is `key` (the public PEM, for key confusion)."""
    signing_input = _b64(b'{"alg":"HS256","typ":"JWT"}') + "." + _b64(json.dumps(payload).encode())
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + _b64(signature)


def unsigned(payload: dict[str, Any]) -> str:
    return _b64(b'{"alg":"none","typ":"JWT"}') + "." + _b64(json.dumps(payload).encode()) + "."


@pytest.fixture
def rsa_keys() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


async def test_each_bad_token_is_refused_with_its_documented_close_code(
    start_service, rsa_keys
) -> None:
    private, public = rsa_keys
    gateway = start_service(
        "gateway",
        TOCSIN_JWT_ISSUER=ISSUER,
        TOCSIN_JWT_PUBLIC_KEY=public.decode(),
        TOCSIN_AUTH_TIMEOUT="1",
    )
    secret = gateway.env["TOCSIN_JWT_SECRET"]
    cases = {
        "expired": (hs256(claims(exp=int(time.time()) - 120), secret), 4003, "token_expired"),
        "not yet valid": (
            hs256(claims(nbf=int(time.time()) + 600), secret),
            4401,
            "token_not_yet_valid",
        ),
        "wrong audience": (hs256(claims(aud="someone-else"), secret), 4401, "token_invalid"),
        "wrong issuer": (hs256(claims(iss="evil"), secret), 4401, "token_invalid"),
        "alg none": (unsigned(claims()), 4401, "token_invalid"),
        "hs/rs key confusion": (forged_hs256(claims(), public), 4401, "token_invalid"),
        "bad signature": (
            hs256(claims(), "another-secret-of-enough-length!!"),
            4401,
            "token_invalid",
        ),
        "malformed": ("not.a.token", 4401, "token_invalid"),
    }
    for name, (token, code, error) in cases.items():
        async with websockets.connect(
            gateway.ws_url, additional_headers={"authorization": f"Bearer {token}"}
        ) as socket:
            got_code, reason, frames = await closed_with(socket)
        assert (got_code, name) == (code, name)
        assert reason in {"token_expired", "token_invalid"}, name
        assert frames, name
        assert (frames[0]["type"], frames[0]["code"]) == ("error", error), name

    # No token at all, and no `auth` frame within the (shortened) auth timeout.
    async with websockets.connect(gateway.ws_url) as socket:
        assert (await closed_with(socket))[:2] == (4402, "token_missing")

    # The RS256 key itself is accepted: the refusals above are not a broken setup.
    good = jwt.encode(claims(), private, algorithm="RS256")
    async with websockets.connect(
        gateway.ws_url, additional_headers={"authorization": f"Bearer {good}"}
    ) as socket:
        assert (await recv(socket))["type"] == "welcome"


@pytest.fixture(scope="module")
def default_gateway(start_module_service: Any) -> Any:
    """One default gateway for the tests that change nothing it keeps: each closes its
    sockets, and none reads a counter another test moves."""
    return start_module_service("gateway")


async def test_every_auth_path_yields_a_welcome(default_gateway: Any, user_token) -> None:
    gateway = default_gateway
    token = user_token()
    async with websockets.connect(
        gateway.ws_url, additional_headers={"authorization": f"Bearer {token}"}
    ) as socket:
        welcome = await recv(socket)
        assert welcome["type"] == "welcome"
        assert welcome["subject"] == "tester"
        assert welcome["limits"]["max_subscriptions"] == 128
    async with websockets.connect(
        gateway.ws_url,
        subprotocols=["tocsin.v1", f"bearer.{token}"],  # type: ignore[list-item]
    ) as socket:
        assert socket.subprotocol == "tocsin.v1"
        assert (await recv(socket))["type"] == "welcome"
    async with websockets.connect(f"{gateway.ws_url}?token={token}") as socket:
        assert (await recv(socket))["type"] == "welcome"
    async with websockets.connect(gateway.ws_url) as socket:
        await socket.send(json.dumps({"type": "auth", "token": token}))
        assert (await recv(socket))["type"] == "welcome"


async def test_a_channel_outside_the_token_grant_is_refused_as_forbidden(
    default_gateway: Any, user_token
) -> None:
    gateway = default_gateway
    token = user_token(channels=["alerts", "alerts.team.*"])
    async with websockets.connect(
        gateway.ws_url, additional_headers={"authorization": f"Bearer {token}"}
    ) as socket:
        await next_frame(socket, "welcome")
        for channel in ("alerts", "alerts.team.storage"):
            await socket.send(json.dumps({"type": "subscribe", "channel": channel}))
            subscribed = await next_frame(socket, "subscribed")
            assert subscribed["channel"] == channel
        for channel in ("system", "alerts.service.db", "alerts.teamx"):
            await socket.send(json.dumps({"type": "subscribe", "channel": channel}))
            error = await next_frame(socket, "error")
            assert (error["code"], error["channel"]) == ("forbidden", channel)
        await socket.send(json.dumps({"type": "subscribe", "channel": "bad channel!"}))
        assert (await next_frame(socket, "error"))["code"] == "bad_channel"


async def test_in_band_refresh_keeps_the_socket_open_past_the_old_expiry(
    start_service, user_token
) -> None:
    gateway = start_service("gateway", TOCSIN_TOKEN_WARNING="3", TOCSIN_TOKEN_GRACE="0.5")
    short = user_token(ttl=4)
    old_expiry = time.time() + 4
    async with (
        websockets.connect(
            gateway.ws_url, additional_headers={"authorization": f"Bearer {short}"}
        ) as refreshing,
        websockets.connect(
            gateway.ws_url, additional_headers={"authorization": f"Bearer {short}"}
        ) as lapsing,
    ):
        old_expiry = (await next_frame(refreshing, "welcome"))["expires_at"]
        warning = await next_frame(refreshing, "token_expiring")
        assert warning["expires_at"] == old_expiry
        await refreshing.send(json.dumps({"type": "refresh", "token": user_token(ttl=600)}))
        refreshed = await next_frame(refreshing, "refreshed")
        assert refreshed["expires_at"] > old_expiry + 300

        # The socket that did not refresh is closed with the reconnect-class code...
        code, reason, frames = await closed_with(lapsing, within=30)
        assert (code, reason) == (4003, "token_expired")
        assert any(f["type"] == "token_expiring" for f in frames)
        # ...by which time the old expiry has passed; the refreshed one still answers.
        assert time.time() > old_expiry
        await refreshing.send(json.dumps({"type": "ping"}))
        assert (await next_frame(refreshing, "pong"))["type"] == "pong"


async def test_limits_each_have_their_close_code_or_error_and_a_metric(
    start_service, user_token
) -> None:
    gateway = start_service(
        "gateway",
        TOCSIN_MAX_SUBSCRIPTIONS="2",
        TOCSIN_MAX_CONNECTIONS="3",
        TOCSIN_MAX_FRAME_BYTES="1024",
        TOCSIN_ALLOWED_ORIGINS="https://console.example",
    )
    headers = {"authorization": f"Bearer {user_token()}"}
    async with websockets.connect(gateway.ws_url, additional_headers=headers) as socket:
        await next_frame(socket, "welcome")
        for channel in ("alerts", "system"):
            await socket.send(json.dumps({"type": "subscribe", "channel": channel}))
            await next_frame(socket, "subscribed")
        await socket.send(json.dumps({"type": "subscribe", "channel": "alerts.team.a"}))
        assert (await next_frame(socket, "error"))["code"] == "too_many_subscriptions"
        await socket.send(json.dumps({"type": "subscribe", "channel": "x" * 2000}))
        assert (await closed_with(socket))[:2] == (4413, "frame_too_large")

    async with websockets.connect(
        gateway.ws_url,
        additional_headers=headers,
        origin="https://evil.example",  # type: ignore[arg-type]
    ) as socket:
        assert (await closed_with(socket))[:2] == (4403, "origin_forbidden")

    async with websockets.connect(gateway.ws_url, additional_headers=headers) as socket:
        await next_frame(socket, "welcome")
        await socket.send("this is not json")
        assert (await closed_with(socket))[:2] == (4400, "protocol_violation")

    held = []
    for _ in range(3):
        socket = await websockets.connect(gateway.ws_url, additional_headers=headers)
        await next_frame(socket, "welcome")
        held.append(socket)
    # A full gateway refuses before upgrading: 503, and when to try again.
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(gateway.ws_url, additional_headers=headers)
    assert refused.value.response.status_code == 503
    assert refused.value.response.headers["Retry-After"] == "2"
    for socket in held:
        await socket.close()

    metrics = (await asyncio.to_thread(httpx.get, f"{gateway.url}/metrics", timeout=10)).text
    for limit in ("subscriptions", "frame_size", "origin", "connections"):
        assert f'tocsin_ws_limit_breaches_total{{limit="{limit}"}} 1.0' in metrics, limit
    assert 'tocsin_ws_disconnects_total{code="slow_consumer"}' not in metrics


async def test_the_browser_sdk_is_served_at_a_stable_path(default_gateway: Any) -> None:
    gateway = default_gateway
    response = await asyncio.to_thread(httpx.get, f"{gateway.url}/sdk/tocsin-client.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert "export class TocsinClient" in response.text
