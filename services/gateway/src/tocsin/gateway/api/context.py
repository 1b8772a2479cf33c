"""What every dashboard API handler needs: Redis, the broker, and token checks.

The cached reads (`/v1/alerts`, `/v1/stats`) run their scripts over one
pipelined connection (`pipelined`), which costs the event loop a fraction of
a pooled redis-py call; everything else uses the pooled client (`redis`).
"""

from __future__ import annotations

import functools
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import redis.asyncio as redis_async
from dramatiq.brokers.redis import RedisBroker
from starlette.requests import Request
from starlette.responses import Response

from tocsin.common.auth import Claims, TokenVerifier
from tocsin.common.bearer import check_bearer
from tocsin.common.errors import CredentialError
from tocsin.common.pipelining import PipelinedRedis
from tocsin.gateway.settings import GatewaySettings

__all__ = ["ApiContext", "Unauthorized"]


class Unauthorized(CredentialError):  # noqa: N818 -- it carries the response, it is not an error value
    """Raised by `authorize`; carries the 401/403 problem response to return."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


@dataclass(frozen=True)
class ApiContext:
    """Shared handles for the API handlers of one gateway process."""

    settings: GatewaySettings
    redis: redis_async.Redis
    broker: RedisBroker
    verifier: TokenVerifier
    # What handlers opened for the process's life (the preview client), closed at shutdown.
    resources: AsyncExitStack = field(default_factory=AsyncExitStack)

    @functools.cached_property
    def pipelined(self) -> PipelinedRedis:
        """One pipelined connection for the cached reads' scripts (opened on first use)."""
        return PipelinedRedis(self.settings.redis_url, coalesce=False)

    def authorize(self, request: Request, scope: str) -> Claims:
        """The caller's claims, if its bearer token is valid and carries `scope`."""
        checked = check_bearer(self.verifier, request, scope)
        if isinstance(checked, Response):
            raise Unauthorized(checked)
        return checked
