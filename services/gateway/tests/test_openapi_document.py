"""The gateway's OpenAPI document covers every dashboard route, and only those."""

from __future__ import annotations

from tocsin.common.auth import TokenVerifier
from tocsin.common.broker import build_broker
from tocsin.common.redis import async_client
from tocsin.gateway.api import ApiContext, dashboard_routes
from tocsin.gateway.api.openapi import openapi_document
from tocsin.gateway.settings import GatewaySettings


def test_every_dashboard_route_and_method_is_documented_and_nothing_else() -> None:
    settings = GatewaySettings(jwt_secret="a-secret-long-enough-for-hs256-tokens")
    context = ApiContext(
        settings,
        async_client(settings.redis_url),
        build_broker(settings.redis_url),
        TokenVerifier.from_settings(settings),
    )
    served = {
        (route.path, method.lower())
        for route in dashboard_routes(context)
        for method in (getattr(route, "methods", None) or ()) if method != "HEAD"
    }  # fmt: skip
    documented = {
        (path, method) for path, item in openapi_document()["paths"].items() for method in item
    }
    assert served == documented
