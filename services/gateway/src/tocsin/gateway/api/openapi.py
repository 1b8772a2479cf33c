"""The OpenAPI 3.1 document of the dashboard API, generated from the models that validate.

Request bodies are the structs the handlers decode with (`SilenceIn`, the
action body, `PreviewRequest`); the list's query parameters come from the
constants `parse_query` checks against; answers are the structs the handlers
encode (`StoredAlert`, `AlertSummary`) or, where a handler builds a mapping,
a struct here that says what it holds. `tests/integration/test_gateway_schemathesis.py`
holds every answer to this document.

Over 400 lines: it is declarations (one struct per answer shape) and no logic;
split, one document would be scattered over several modules.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from tocsin.common.health import ComponentScore
from tocsin.common.models import StoredAlert
from tocsin.common.preview import PreviewRequest
from tocsin.common.problems import ProblemDetails
from tocsin.common.silences import Matcher, SilenceIn
from tocsin.gateway.api.alert_views import FULL, STORED_FIELDS, SUMMARY, AlertSummary
from tocsin.gateway.api.alerts import (
    DEFAULT_LIMIT,
    MAX_ACTION_BYTES,
    MAX_LIMIT,
    SEVERITIES,
    STATUSES,
    ActionBody,
)
from tocsin.gateway.api.silences import MAX_SILENCE_BYTES, SILENCE_STATES

__all__ = ["OPENAPI_PATH", "openapi_document"]

OPENAPI_PATH = "/openapi.json"
_REF = "#/components/schemas/{name}"
_PROBLEM = "application/problem+json"


class TimelineEntry(msgspec.Struct, kw_only=True):
    """One transition of an alert: `kind` is firing, acknowledged, unacknowledged, resolved..."""

    seq: int
    kind: str
    at: float | str
    by: str = ""
    comment: str = ""


class NotificationAttempt(msgspec.Struct, kw_only=True):
    """One attempt to notify a receiver about the alert, and its outcome (newest first)."""

    notification_id: str
    receiver: str
    receiver_type: str
    status: str
    outcome: str
    attempt: int
    at: float
    group_key: str = ""
    error: str = ""


class AlertDetail(StoredAlert, kw_only=True):
    """A stored alert with its timeline (oldest first), notification attempts (newest first)
    and the prediction of its episode (null until made; docs/prediction.md)."""

    timeline: list[TimelineEntry]
    notifications: list[NotificationAttempt]
    prediction: dict[str, Any] | None = None


class ActionAccepted(msgspec.Struct, kw_only=True):
    """An action queued for the processor; the alert changes (and an event follows) when applied."""

    action_id: str
    action: Literal["acknowledge", "unacknowledge", "resolve"]
    alert_id: str


class SilenceState(msgspec.Struct):
    """Where a silence stands now."""

    state: Literal["pending", "active", "expired"]


class SilenceView(msgspec.Struct, kw_only=True):
    """A silence as listed, with its state now (Alertmanager's shape)."""

    id: str
    matchers: list[Matcher]
    startsAt: str  # noqa: N815 -- Alertmanager's field name
    endsAt: str  # noqa: N815 -- Alertmanager's field name
    createdBy: str  # noqa: N815 -- Alertmanager's field name
    comment: str
    updatedAt: str  # noqa: N815 -- Alertmanager's field name
    status: SilenceState


class SilenceCreated(SilenceView, kw_only=True):
    """A created silence; `silenceID` as Alertmanager names it."""

    silenceID: str  # noqa: N815 -- Alertmanager's field name


class MinuteCount(msgspec.Struct):
    """Alert messages received in one minute (`minute`: epoch seconds of its start)."""

    minute: int
    count: int


class Stats(msgspec.Struct, kw_only=True):
    """Counts by status (every stored alert), by severity and service (open alerts), per minute."""

    total: int
    by_status: dict[str, int]
    open_by_severity: dict[str, int]
    open_by_service: dict[str, int]
    alerts_per_minute: list[MinuteCount]


class Health(msgspec.Struct, kw_only=True):
    """The last 0-100 health score, its components, and how old it is (docs/health.md)."""

    score: int
    computed_at: float
    window_seconds: int
    components: list[ComponentScore]
    age_seconds: float
    stale: bool


class Patterns(msgspec.Struct, kw_only=True):
    """The latest pattern findings (docs/scheduler.md); `detected_at` null before the first run."""

    detected_at: float | str | None
    flapping: list[dict[str, Any]]
    storms: list[dict[str, Any]]
    noisy_sources: list[dict[str, Any]]
    recurring: list[dict[str, Any]]


class Schedules(msgspec.Struct):
    """Every configured schedule with its last and next run (docs/scheduler.md)."""

    schedules: list[dict[str, Any]]


class VolumeForecast(msgspec.Struct, kw_only=True):
    """The latest hourly alert-volume forecast per service (docs/prediction.md)."""

    forecast_at: float | str | None
    interval: float | None
    services: list[dict[str, Any]]
    storms: list[str]
    skipped: dict[str, str]


class Preview(msgspec.Struct):
    """A rendered notification; nothing was sent."""

    receiver_type: str
    rendered: dict[str, Any]


def _json(schema: dict[str, Any], media: str = "application/json") -> dict[str, Any]:
    return {"content": {media: {"schema": schema}}}


def _answer(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description}
    if schema is not None:
        answer.update(_json(schema))
    return answer


_PROBLEM_SCHEMA = {"$ref": _REF.format(name="ProblemDetails")}


def _refused(description: str) -> dict[str, Any]:
    """An answer carrying an RFC 9457 problem."""
    return {"description": description, **_json(_PROBLEM_SCHEMA, _PROBLEM)}


def _page(summary: dict[str, Any], full: dict[str, Any]) -> dict[str, Any]:
    """One page of alerts; `total` only on a first page without label matchers."""
    picked = {"type": "object", "required": ["id"], "description": "the fields asked for"}
    return {
        "type": "object",
        "required": ["alerts", "total", "next_cursor"],
        "properties": {
            "alerts": {"type": "array", "items": {"anyOf": [summary, full, picked]}},
            "total": {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "null"}]},
            "next_cursor": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
    }


def _query(name: str, schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description, **extra}  # fmt: skip


def _list_parameters() -> list[dict[str, Any]]:
    def listed(values: tuple[str, ...]) -> dict[str, Any]:
        # What `parse_query` takes: comma-separated known values; empty parts are ignored.
        value = f"\\s*({'|'.join(values)})?\\s*"
        return {"type": "array", "items": {"type": "string", "pattern": f"^{value}(,{value})*$"}}

    text_list = {"type": "array", "items": {"type": "string"}}
    when = {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "number"}]}
    return [
        _query("status", listed(STATUSES), "Any of these statuses (repeat or comma-separate).",
               explode=True),
        _query("severity", listed(SEVERITIES), "Any of these severities.", explode=True),
        _query("service", text_list, "Any of these services.", explode=True),
        _query("team", text_list, "Any of these teams (the `team` label).", explode=True),
        _query("label", {"type": "array", "items": {
                   "type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*(=~|!~|!=|=).*$"}},
               "Label matchers, all of which must hold: `name=value`, `name!=value`, "
               "`name=~regex`, `name!~regex` (anchored; `alertname` is the alert's name).",
               explode=True),
        _query("since", when, "Last changed at or after (RFC 3339 or epoch seconds)."),
        _query("until", when, "Last changed at or before."),
        _query("sort", {"type": "string", "enum": ["-updated", "updated"],
                        "default": "-updated"}, "By last change, newest first by default."),
        _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                         "default": DEFAULT_LIMIT}, "Alerts per page."),
        _query("cursor", {"type": "string"}, "`next_cursor` of the previous page (opaque; "
               "anything else is refused with 400)."),
        _query("fields", {"type": "string", "default": SUMMARY,
                          "pattern": rf"^(|{SUMMARY}|{FULL}|({'|'.join(STORED_FIELDS)})"
                                     rf"(,({'|'.join(STORED_FIELDS)}))*)$"},
               f"`{SUMMARY}` (default): what a list shows; `{FULL}`: the stored records; or "
               "stored field names, comma-separated (`id` always comes)."),
    ]  # fmt: skip


def openapi_document() -> dict[str, Any]:
    (
        (
            summary,
            full,
            detail,
            action_body,
            accepted,
            silence_in,
            silence_view,
            silence_created,
            stats,
            health,
            patterns,
            schedules,
            volume,
            preview_in,
            preview,
            _,
        ),
        components,
    ) = msgspec.json.schema_components(
        [
            AlertSummary,
            StoredAlert,
            AlertDetail,
            ActionBody,
            ActionAccepted,
            SilenceIn,
            list[SilenceView],
            SilenceCreated,
            Stats,
            Health,
            Patterns,
            Schedules,
            VolumeForecast,
            PreviewRequest,
            Preview,
            ProblemDetails,
        ],
        ref_template=_REF,
    )
    page = _page(summary, full)
    # What any operation may answer before it runs: the server's URL bound, then the token.
    denied = {
        "401": _refused("no bearer token, or an invalid or expired one"),
        "403": _refused("the token lacks the scope this operation needs"),
        "414": _refused("a request URL over `TOCSIN_HTTP_MAX_URL_BYTES` (8,192 by default)"),
    }
    read: list[dict[str, list[str]]] = [{"bearerJwt": ["read"]}]
    write: list[dict[str, list[str]]] = [{"bearerJwt": ["write"]}]
    alert_id = {"name": "alert_id", "in": "path", "required": True, "schema": {"type": "string"}}

    def action(verb: str, summary: str) -> dict[str, Any]:
        return {
            "post": {
                "operationId": f"{verb}Alert",
                "summary": summary,
                "security": write,
                "parameters": [alert_id],
                "requestBody": {"required": False, **_json(action_body)},
                "responses": {
                    "202": _answer("queued for the processor", accepted),
                    "400": _refused("the body is not an action body"),
                    **denied,
                    "404": _refused("no such alert"),
                    "413": _refused(f"a body over {MAX_ACTION_BYTES} bytes"),
                },
            }
        }

    paths: dict[str, Any] = {
        "/v1/alerts": {
            "get": {
                "operationId": "listAlerts",
                "summary": "List alerts by last change, filtered, a page at a time.",
                "security": read,
                "parameters": _list_parameters(),
                "responses": {
                    "200": _answer("one page (items as `fields` asks)", page),
                    "400": _refused("a parameter that cannot be understood"),
                    **denied,
                },
            }
        },
        "/v1/alerts/{alert_id}": {
            "get": {
                "operationId": "getAlert",
                "summary": "One alert with its timeline and notification attempts.",
                "security": read,
                "parameters": [alert_id],
                "responses": {
                    "200": _answer("the alert", detail),
                    **denied,
                    "404": _refused("no such alert"),
                },
            }
        },
        "/v1/alerts/{alert_id}/ack": action("acknowledge", "Acknowledge (with a comment)."),
        "/v1/alerts/{alert_id}/unack": action("unacknowledge", "Take an acknowledgement back."),
        "/v1/alerts/{alert_id}/resolve": action("resolve", "Resolve by hand."),
        "/v1/silences": {
            "get": {
                "operationId": "listSilences",
                "summary": "Every silence, latest end first.",
                "security": read,
                "parameters": [
                    _query(
                        "state",
                        {"type": "string", "enum": list(SILENCE_STATES)},
                        "Only silences in this state.",
                    )
                ],
                "responses": {
                    "200": _answer("the silences", silence_view),
                    "400": _refused("an unknown state"),
                    **denied,
                },
            },
            "post": {
                "operationId": "createSilence",
                "summary": "Silence alerts matching every matcher between two times.",
                "security": write,
                "requestBody": {"required": True, **_json(silence_in)},
                "responses": {
                    "201": _answer("created", silence_created),
                    "400": _refused("an invalid silence"),
                    **denied,
                    "413": _refused(f"a body over {MAX_SILENCE_BYTES} bytes"),
                },
            },
        },
        "/v1/silences/{silence_id}": {
            "delete": {
                "operationId": "expireSilence",
                "summary": "Expire a silence now (it stays listed, `expired`).",
                "security": write,
                "parameters": [
                    {
                        "name": "silence_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": _answer("the expired silence", silence_view),
                    **denied,
                    "404": _refused("no such silence"),
                },
            }
        },
        "/v1/stats": {
            "get": {
                "operationId": "getStats",
                "summary": "Alert counts and alerts received per minute over the last hour.",
                "security": read,
                "responses": {"200": _answer("the counts", stats), **denied},
            }
        },
        "/v1/health": {
            "get": {
                "operationId": "getHealth",
                "summary": "The 0-100 health score and what makes it.",
                "security": read,
                "responses": {
                    "200": _answer("the last score", health),
                    **denied,
                    "503": _refused("no score computed yet"),
                },
            }
        },
        "/v1/analytics/daily": {
            "get": {
                "operationId": "getDailyAnalytics",
                "summary": "One UTC day's analytics: MTTA, MTTR, noisy alerts (docs/scheduler.md).",
                "security": read,
                "parameters": [
                    _query(
                        "date",
                        {"type": "string", "format": "date"},
                        "YYYY-MM-DD (UTC); yesterday by default.",
                    )
                ],
                "responses": {
                    "200": _answer("the day's analytics", {"type": "object"}),
                    "400": _refused("a malformed date"),
                    **denied,
                    "404": _refused("that day is not computed (yet)"),
                },
            }
        },
        "/v1/patterns": {
            "get": {
                "operationId": "getPatterns",
                "summary": "Flapping alerts, storms, noisy sources and recurring alerts.",
                "security": read,
                "responses": {"200": _answer("the latest findings", patterns), **denied},
            }
        },
        "/v1/schedules": {
            "get": {
                "operationId": "listSchedules",
                "summary": "The scheduler's schedules with their last and next runs.",
                "security": read,
                "responses": {"200": _answer("the schedules", schedules), **denied},
            }
        },
        "/v1/predictions/volume": {
            "get": {
                "operationId": "getVolumeForecast",
                "summary": "The hourly alert-volume forecast per service, with likely storms.",
                "security": read,
                "responses": {"200": _answer("the latest forecast", volume), **denied},
            }
        },
        "/v1/notifications/preview": {
            "post": {
                "operationId": "previewNotification",
                "summary": "Render a receiver's message for a sample alert; nothing is sent.",
                "security": read,
                "requestBody": {"required": True, **_json(preview_in)},
                "responses": {
                    "200": _answer("the rendered message", preview),
                    "400": _refused("an invalid body"),
                    **denied,
                    "413": _refused("a body over the preview's size bound"),
                    "422": _refused("a template that does not render, or over its budget"),
                    "429": _refused("too many previews rendering; retry after `Retry-After`"),
                    "503": _refused("no notifier configured (`TOCSIN_NOTIFIER_URL`) or reachable"),
                },
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Tocsin dashboard API",
            "version": "1",
            "description": "Alerts, actions, silences and reports, served by the gateway "
            "(docs/dashboard-api.md). Live events are on the WebSocket (docs/protocol.md).",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearerJwt": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "a user JWT; reads need the `read` scope, actions `write`",
                }
            },
        },
    }
