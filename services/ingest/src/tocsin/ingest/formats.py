"""What every producer format provides: how its body becomes work, and how it says no.

Each format's module (`native`, `alertmanager`, `pagerduty`) subclasses
`Format`: `parse` turns a body into the one queue message it becomes and the
answer it gets (`Work`), and `refusal_answer` renders a `Refusal` -- a reason
independent of any dialect -- in that format's own shape. The accept pipeline
(`tocsin.ingest.accept`) runs the same steps for all of them.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

import msgspec
from starlette.responses import Response

from tocsin.common.errors import TocsinError
from tocsin.common.models import FieldError
from tocsin.ingest.producers import Producer

__all__ = ["Format", "Refusal", "RefusedError", "Work"]


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused, independent of the dialect that will say it."""

    status: int
    reason: str  # the metrics label and, for problem+json, the type slug
    title: str
    detail: str = ""
    errors: list[FieldError] = field(default_factory=list)
    retry_after: int = 0

    def headers(self) -> dict[str, str] | None:
        return {"Retry-After": str(self.retry_after)} if self.retry_after else None


class RefusedError(TocsinError):  # a refusal of any branch: 4xx, or 503 for the store
    """Raised by a step of the accept pipeline to end the request with a refusal."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.title)
        self.refusal = refusal


class Work(msgspec.Struct, frozen=True):
    """A parsed request: the one queue message it becomes and the answer it gets.

    A Struct rather than a dataclass: one is made per request, and a frozen
    dataclass's `__init__` costs several times as much.
    """

    actor: str
    args: tuple[Any, ...]
    alerts: int
    answer: bytes
    status: int
    media_type: bytes | None = b"application/json"


class Format(abc.ABC):
    """A producer format: its metrics name, body limit, parser and refusal dialect."""

    # The label of the format's metrics.
    name = ""
    # The status of a body that does not parse: 422 in Tocsin's format, 400 in the others'.
    invalid_status = 400
    # Whether the credential may come inside the body (PagerDuty's routing key), in
    # which case the body is read before the producer is authenticated.
    credential_in_body = False

    def __init__(self, body_limit: int, max_batch: int = 1) -> None:
        self.body_limit = body_limit
        self.max_batch = max_batch  # the most alerts one request may carry

    @abc.abstractmethod
    def parse(self, body: bytes, producer: Producer) -> Work:
        """The work `body` becomes; raises `InvalidBodyError` (or `UnicodeDecodeError`)."""

    def body_credential(self, body: bytes) -> str:
        """The credential inside `body`, for a format with `credential_in_body`."""
        raise NotImplementedError(f"{self.name} carries no credential in its body")

    @abc.abstractmethod
    def refusal_answer(self, refusal: Refusal) -> Response:
        """`refusal` as this format's producers expect to read it."""
