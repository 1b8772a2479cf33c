"""The OpenAPI 3.1 document of the producer API, generated from the models that validate."""

from __future__ import annotations

from typing import Any

import msgspec

from tocsin.common.models import AlertIn
from tocsin.common.problems import FieldErrorDetail, ProblemDetails
from tocsin.ingest.alertmanager import AlertmanagerError, PostableAlert, WebhookMessage
from tocsin.ingest.changes import ChangeAccepted, ChangeEvent
from tocsin.ingest.native import AlertsAccepted
from tocsin.ingest.pagerduty import Event, EventAccepted, EventRefused

__all__ = ["FieldErrorDetail", "ProblemDetails", "openapi_document"]


_REF = "#/components/schemas/{name}"
_PROBLEM = "application/problem+json"


def _content(schema: dict[str, Any], media: str = "application/json") -> dict[str, Any]:
    return {"content": {media: {"schema": schema}}}


def _answer(description: str, schema: dict[str, Any] | None, media: str) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description}
    if schema is not None:
        answer.update(_content(schema, media))
    return answer


def _errors(schema: dict[str, Any], media: str, invalid: int) -> dict[str, Any]:
    retry = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
    answers = {
        "400": _answer("the body is not valid UTF-8 (or, here, invalid)", schema, media),
        str(invalid): _answer("the body is invalid", schema, media),
        "422": _answer(
            "the body is invalid, or the Idempotency-Key was first sent with another request",
            schema,
            media,
        ),
        "401": _answer("no, a wrong or a revoked credential", schema, media),
        "403": _answer("a token without the ingest scope", schema, media),
        "413": _answer("the body is over the size limit", schema, media),
        "429": _answer("the producer's rate limit is spent", schema, media),
        "503": _answer(
            "not accepted: the alerts backlog is full, or Redis is unreachable", schema, media
        ),
        "504": _answer(
            "outcome unknown: Redis stopped answering after the request was sent; retry "
            "with the same Idempotency-Key",
            schema,
            media,
        ),
    }
    answers["429"]["headers"] = retry
    answers["503"]["headers"] = retry
    answers["504"]["headers"] = retry
    return answers


def _with_parser_rules(components: dict[str, Any]) -> None:
    """Add the rules the parsers check beyond the models' types, so the document is honest.

    Found by schemathesis's `positive_data_acceptance` check: each was a body the
    schema allowed and the endpoint refused.
    """
    native = components["AlertIn"]["properties"]
    for name in ("PostableAlert", "WebhookAlert"):
        properties = components[name]["properties"]
        # Alertmanager's labels and annotations become Tocsin's, with Tocsin's bounds.
        for field in ("labels", "annotations"):
            properties[field] = {
                **properties[field],
                "propertyNames": native[field]["propertyNames"],
                "additionalProperties": native[field]["additionalProperties"],
            }
        for field in ("startsAt", "endsAt"):
            properties[field] = {
                "anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}],
                "default": None,
            }
    labels = components["PostableAlert"]["properties"]["labels"]
    labels["required"] = ["alertname"]
    labels["properties"] = {"alertname": {"type": "string", "minLength": 1}}
    components["Event"]["allOf"] = [
        {
            "if": {"properties": {"event_action": {"const": "trigger"}}},
            "then": {"required": ["payload"], "properties": {"payload": {"type": "object"}}},
        },
        {
            "if": {"properties": {"event_action": {"enum": ["acknowledge", "resolve"]}}},
            "then": {"required": ["dedup_key"], "properties": {"dedup_key": {"type": "string"}}},
        },
    ]


def openapi_document() -> dict[str, Any]:
    (
        (
            alert,
            alerts,
            accepted,
            problem,
            webhook,
            postable,
            am_error,
            event,
            event_ok,
            event_error,
        ),
        components,
    ) = msgspec.json.schema_components(
        [
            AlertIn,
            list[AlertIn],
            AlertsAccepted,
            ProblemDetails,
            WebhookMessage,
            list[PostableAlert],
            AlertmanagerError,
            Event,
            EventAccepted,
            EventRefused,
        ],
        ref_template=_REF,
    )
    _with_parser_rules(components)
    alerts = {**alerts, "minItems": 1}
    idempotency = {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "maxLength": 255},
        "description": (
            "A retried request with the same key gets the first answer (24 h); the key "
            "sent with another body or to another endpoint answers 422."
        ),
    }
    traceparent = {
        "name": "traceparent",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "W3C trace context, continued into the queued message.",
    }
    parameters = [idempotency, traceparent]
    security: list[dict[str, list[str]]] = [{"apiKey": []}, {"bearerJwt": []}]
    paths = {
        "/v1/alerts": {
            "post": {
                "operationId": "postAlerts",
                "summary": "Send one alert or a batch in Tocsin's format (unknown fields refused).",
                "parameters": parameters,
                "security": security,
                "requestBody": {"required": True, **_content({"anyOf": [alert, alerts]})},
                "responses": {
                    "202": _answer(
                        "accepted: ids and fingerprints in request order",
                        accepted,
                        "application/json",
                    ),
                    **_errors(problem, _PROBLEM, 422),
                },
            }
        },
        "/v1/integrations/alertmanager": {
            "post": {
                "operationId": "postAlertmanagerWebhook",
                "summary": "Alertmanager webhook receiver (notification version 4).",
                "parameters": parameters,
                "security": security,
                "requestBody": {"required": True, **_content(webhook)},
                "responses": {
                    "200": _answer("accepted", accepted, "application/json"),
                    **_errors(am_error, "application/json", 400),
                },
            }
        },
        "/api/v2/alerts": {
            "post": {
                "operationId": "postAlertmanagerAlerts",
                "summary": "Alertmanager's alert push API, as Prometheus sends it.",
                "parameters": parameters,
                "security": security,
                "requestBody": {"required": True, **_content(postable)},
                "responses": {
                    "200": {"description": "accepted (empty body, as Alertmanager answers)"},
                    **_errors(am_error, "application/json", 400),
                },
            }
        },
        "/v2/enqueue": {
            "post": {
                "operationId": "postPagerDutyEvent",
                "summary": "PagerDuty Events API v2; the routing key is a Tocsin API key.",
                "parameters": parameters,
                "requestBody": {"required": True, **_content(event)},
                "responses": {
                    "202": _answer("event processed", event_ok, "application/json"),
                    **_errors(event_error, "application/json", 400),
                },
            }
        },
    }
    (change, change_ok), change_schemas = msgspec.json.schema_components(
        [ChangeEvent, ChangeAccepted], ref_template=_REF
    )
    components.update(change_schemas)
    change_operation: dict[str, Any] = {
        "post": {
            "operationId": "postPagerDutyChangeEvent",
            "summary": "PagerDuty change event: published on the `changes` channel, never paged.",
            "requestBody": {"required": True, **_content(change)},
            "responses": {
                "202": _answer("change event processed", change_ok, "application/json"),
                **_errors(event_error, "application/json", 400),
            },
        }
    }
    paths["/v2/change/enqueue"] = change_operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Tocsin ingest",
            "version": "1",
            "description": "The producer API: Tocsin's format, Alertmanager and PagerDuty.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a producer API key (tsk_...)",
                },
                "bearerJwt": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "a JWT with the ingest scope",
                },
            },
        },
    }
