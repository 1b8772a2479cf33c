"""The public surface of `tocsin.common`, pinned: services build on these names.

Removing or renaming a name fails here first; adding one means adding it here,
on purpose. The services and the client may import only declared names.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import tocsin.common
import tocsin.common.queue
import tocsin.common.telemetry

ROOT = Path(__file__).resolve().parents[3]

SURFACE: dict[str, list[str]] = {
    "tocsin.common.apikeys": [
        "ApiKeyRecord",
        "ApiKeyStore",
        "InvalidKeyError",
        "KEY_PREFIX",
        "PRODUCER_PATTERN",
        "hash_secret",
        "looks_like_key",
        "parse_key",
    ],
    "tocsin.common.auth": ["Claims", "TokenError", "TokenVerifier"],
    "tocsin.common.bearer": ["check_bearer"],
    "tocsin.common.broker": [
        "ALERTS_QUEUE",
        "APPLY_ACTION_ACTOR",
        "DELIVER_NOTIFICATION_ACTOR",
        "NOTIFICATIONS_QUEUE",
        "PREDICTION_QUEUE",
        "PREDICT_INCIDENT_ACTOR",
        "PROCESS_ALERTS_ACTOR",
        "QueueWakeup",
        "build_broker",
        "build_message",
    ],
    "tocsin.common.cache": [
        "CACHE_HITS",
        "CACHE_INVALIDATIONS",
        "CACHE_MISSES",
        "CACHE_OPERATION_SECONDS",
        "ReadThroughCache",
        "normalised_query",
    ],
    "tocsin.common.config": [
        "CommonSettings",
        "ConfigError",
        "env_name",
        "load_settings",
        "setting",
    ],
    "tocsin.common.errors": [
        "ConfigError",
        "CredentialError",
        "FieldError",
        "InvalidBodyError",
        "InvalidChannelError",
        "InvalidInputError",
        "InvalidKeyError",
        "LimitExceededError",
        "OutcomeUnknownError",
        "RedisReplyError",
        "RemoteError",
        "StoreError",
        "StoreUnavailableError",
        "TocsinError",
        "TokenError",
        "UnsupportedRegexError",
        "UnsupportedUvicornError",
    ],
    "tocsin.common.events": [
        "CHANNEL_PATTERN",
        "DEFAULT_STREAM_CAP",
        "EventPublisher",
        "InvalidChannelError",
        "SYSTEM_CHANNEL",
        "alert_channels",
        "check_channel",
    ],
    "tocsin.common.health": ["ComponentScore", "HealthReport", "load_report"],
    "tocsin.common.httplimits": [
        "BodyTooLargeError",
        "ClientGoneError",
        "HttpLimits",
        "HttpServerSettings",
        "LimitedHttpToolsProtocol",
        "read_body",
        "read_request_body",
    ],
    "tocsin.common.keys": [
        "DRAMATIQ_NAMESPACE",
        "HEALTH",
        "HEALTH_DEAD_LETTER_SAMPLES",
        "NOTIFY_DEAD_LETTERS",
        "NOTIFY_FIRING",
        "NOTIFY_RESOLVED",
        "PREFIX",
        "TAG_LENGTH",
        "alert",
        "alert_index",
        "alert_index_prefix",
        "alert_prefix",
        "analytics_daily",
        "api_key",
        "applied",
        "cache_entry",
        "cache_health",
        "cache_tag",
        "channel_meta",
        "channel_stream",
        "dedup",
        "fingerprint_tag",
        "health_signals",
        "idempotency",
        "known_values",
        "live",
        "notification_log",
        "notify_claim",
        "notify_deliveries",
        "notify_group",
        "notify_group_alerts",
        "notify_group_commit",
        "notify_group_pending",
        "notify_pause",
        "notify_pause_told",
        "notify_rate",
        "open_alerts",
        "pattern_findings",
        "prediction",
        "prediction_counted_services",
        "prediction_counts",
        "prediction_cursor",
        "prediction_episodes",
        "prediction_volume",
        "probe",
        "queue_wakeup",
        "rate_bucket",
        "resolve_due",
        "schedule_catalog",
        "schedule_claim",
        "schedule_history",
        "schedule_leases",
        "schedule_pending",
        "schedule_run",
        "schedule_state",
        "silences",
        "silences_version",
        "stats_minute",
        "stats_minute_prefix",
        "timeline",
    ],
    "tocsin.common.logging": ["configure_logging"],
    "tocsin.common.metrics": [
        "E2E_LATENCY_BUCKETS",
        "HealthSignals",
        "JOBS",
        "JOB_DURATION",
        "JobMetrics",
        "REDIS_ERRORS",
        "count_redis_error",
        "health_signals",
    ],
    "tocsin.common.models": [
        "AlertAction",
        "AlertIn",
        "FieldError",
        "InvalidBodyError",
        "MAX_LABELS",
        "NotificationRequest",
        "Path",
        "QueuedAlert",
        "Severity",
        "Status",
        "StoredAlert",
        "decode_alerts",
        "fingerprint",
        "label_set",
        "label_set_fingerprint",
        "new_alert_id",
        "rfc3339",
        "utc_now",
    ],
    "tocsin.common.ops": [
        "READY_TIMEOUT_SECONDS",
        "ReadyCheck",
        "RestingServer",
        "metrics_app",
        "on_signals",
        "ops_app",
        "ops_routes",
        "redis_ready",
        "serve",
        "serve_in_thread",
        "shutdown_event",
        "tune_gc",
    ],
    "tocsin.common.pipelining": [
        "OutcomeUnknownError",
        "PipelinedRedis",
        "PipelinedScript",
        "RedisReplyError",
        "StoreUnavailableError",
        "bulk",
        "encode_command",
    ],
    "tocsin.common.prediction": [
        "IncidentPrediction",
        "PREDICTED_EVENT",
        "ServiceForecast",
        "VOLUME_EVENT",
        "VolumeForecast",
    ],
    "tocsin.common.preview": [
        "MAX_PREVIEW_BYTES",
        "PREVIEW_PATH",
        "PreviewRequest",
        "read_preview",
    ],
    "tocsin.common.problems": ["FieldErrorDetail", "PROBLEM_BASE", "ProblemDetails", "problem"],
    "tocsin.common.queue": [
        "BatchHandler",
        "Consumer",
        "Delivery",
        "QueueConsumerSettings",
        "QueueKeys",
        "QueueWakeup",
        "QueueWorker",
        "Recovery",
        "WAKEUP_TOKENS_KEPT",
        "dead_letter_keys",
        "encode_message",
        "enqueue",
        "queue_keys",
    ],
    "tocsin.common.redis": [
        "SENTINEL_SCHEME",
        "SentinelTarget",
        "async_client",
        "parse_sentinel_url",
        "store_error",
        "sync_client",
    ],
    "tocsin.common.regex": [
        "LabelRegex",
        "MAX_PATTERN_LENGTH",
        "UnsupportedRegexError",
        "compile_full_match",
        "compile_label_regex",
    ],
    "tocsin.common.silences": ["Matcher", "Silence", "SilenceIn", "SilenceSet", "silence_state"],
    "tocsin.common.telemetry": [
        "ServerSpans",
        "TRACEPARENT",
        "TRACESTATE",
        "TracingMiddleware",
        "W3C_PROPAGATOR",
        "client_span",
        "current_traceparent",
        "instrument_app",
        "producer_span",
        "remote_context",
        "setup_observability",
        "setup_tracing",
        "traceparent_of_frame",
        "tracer",
        "tracing_enabled",
    ],
    "tocsin.common.tls": ["TlsSettings"],
    "tocsin.common.uvicorn_shim": [
        "STATUS_LINE",
        "SUPPORTED_UVICORN",
        "ServerProtocol",
        "ServerState",
        "UnsupportedUvicornError",
        "UpgradeRequest",
        "check_version",
    ],
    "tocsin.common.queue.consumer": ["BatchHandler", "Consumer", "Delivery"],
    "tocsin.common.queue.due": [
        "DueKeys",
        "DueMover",
        "DueTimes",
        "due_keys",
        "script_with_functions",
    ],
    "tocsin.common.queue.enqueue": ["enqueue"],
    "tocsin.common.queue.gauges": ["QueueCollector", "queue_state"],
    "tocsin.common.queue.wakeup": ["QueueWakeup", "wait_for_wakeup"],
    "tocsin.common.queue.worker": ["QueueWorker", "Recovery"],
    "tocsin.common.queue.broker": ["DueTimeBroker"],
    "tocsin.common.telemetry.asgi": [
        "ServerSpans",
        "end_server_span",
        "instrument_app",
        "server_span_answered",
        "server_span_failed",
        "start_server_span",
    ],
    "tocsin.common.telemetry.dramatiq": ["TracingMiddleware"],
    "tocsin.common.telemetry.export": [
        "FLUSH",
        "FLUSHED",
        "FRAME_LENGTH",
        "RESOURCE",
        "SPANS",
        "SpanPipe",
        "SpanRecord",
        "WRITE_TIMEOUT_SECONDS",
    ],
    "tocsin.common.telemetry.exporter": ["main", "rebuild"],
    "tocsin.common.telemetry.otlp": ["RecordExporter", "encode_records"],
    "tocsin.common.telemetry.propagation": [
        "TRACEPARENT",
        "TRACESTATE",
        "W3C_PROPAGATOR",
        "client_span",
        "current_traceparent",
        "own_traceparent",
        "producer_span",
        "remote_context",
        "start_producer_span",
        "traceparent_of_frame",
    ],
    "tocsin.common.telemetry.spans": [
        "CurrentSpan",
        "RecordingSpan",
        "RecordingTracer",
        "RecordingTracerProvider",
    ],
    "tocsin.common.telemetry.setup": [
        "setup_observability",
        "setup_tracing",
        "tracer",
        "tracing_enabled",
    ],
}


def _public_modules() -> list[str]:
    found = []
    for package in (tocsin.common, tocsin.common.queue, tocsin.common.telemetry):
        for module in pkgutil.iter_modules(package.__path__):
            if not module.name.startswith("_"):
                found.append(f"{package.__name__}.{module.name}")
    return found


def test_the_package_exports_the_exception_tree_and_its_version() -> None:
    assert sorted(tocsin.common.__all__) == sorted(
        [*SURFACE["tocsin.common.errors"], "__version__"]
    )
    for name in tocsin.common.__all__:
        assert hasattr(tocsin.common, name), name


def test_every_public_module_is_declared_here() -> None:
    assert sorted(_public_modules()) == sorted(SURFACE)


@pytest.mark.parametrize("module", sorted(SURFACE))
def test_each_module_exports_exactly_its_pinned_names(module: str) -> None:
    imported = importlib.import_module(module)
    assert sorted(imported.__all__) == SURFACE[module]
    for name in imported.__all__:
        assert hasattr(imported, name), f"{module}.{name} is declared but missing"


def _used_names(path: Path) -> set[tuple[str, str]]:
    """(module, name) for each name `path` takes from a `tocsin.common` module."""
    tree = ast.parse(path.read_text(), str(path))
    modules: dict[str, str] = {}  # local alias -> module, for `keys.alert(...)`
    used: set[tuple[str, str]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tocsin.common"):
            assert node.module is not None
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                if submodule in SURFACE:
                    modules[alias.asname or alias.name] = submodule
                else:
                    used.add((node.module, alias.name))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in SURFACE and alias.asname:
                    modules[alias.asname] = alias.name
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
        ):
            used.add((modules[node.value.id], node.attr))
    return used


def test_services_and_the_client_use_only_declared_names() -> None:
    sources = [*ROOT.glob("services/*/src/**/*.py"), *ROOT.glob("libs/client/src/**/*.py")]
    assert len(sources) > 50, "the scan found the sources"
    undeclared = sorted(
        f"{path.relative_to(ROOT)}: {module}.{name}"
        for path in sources
        for module, name in _used_names(path)
        if name not in importlib.import_module(module).__dict__.get("__all__", ())
    )
    assert undeclared == []
