"""`tocsin alerts query|show|ack|unack|resolve`: the gateway's alerts, as `amtool alert` does.

Matchers use the syntax of the API and silences (`name=value`, `!=`, `=~`,
`!~`; values may be quoted). `severity`, `status`, `service` and `team` with
`=` become the API's indexed filters (comma-separated alternatives allowed);
every other matcher is a label matcher (`alertname` is the alert's name).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from tocsin.client._args import format_time, parse_matcher, relative_time
from tocsin.client._connection import Connection
from tocsin.client._gateway import GatewayClient

__all__ = ["add_alerts_parser", "query_params"]

FILTERS = ("severity", "status", "service", "team")
ACTIONS = {"ack": "acknowledged", "unack": "unacknowledged", "resolve": "resolved"}
_SEVERITY_ORDER = {"critical": 0, "error": 1, "warning": 2, "info": 3}


def query_params(matchers: list[str], active: bool) -> list[tuple[str, str]]:
    """The `GET /v1/alerts` query for amtool-style matchers."""
    params: list[tuple[str, str]] = []
    for text in matchers:
        name, op, value = parse_matcher(text)
        if name in FILTERS and op == "=":
            params.append((name, value))
        else:
            params.append(("label", f"{name}{op}{value}"))
    if active and not any(name == "status" for name, _ in params):
        params.append(("status", "firing,acknowledged"))
    return params


def _client(args: argparse.Namespace) -> GatewayClient:
    connection: Connection = args.connection
    return GatewayClient(connection.gateway_url(), connection.token())


def _labels(alert: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted((alert.get("labels") or {}).items()))


def cmd_query(args: argparse.Namespace) -> int:
    params = query_params(args.matchers, active=not args.all)
    with _client(args) as gateway:
        alerts = list(gateway.alerts(params, args.limit))
    if args.json:
        print(json.dumps(alerts, indent=2))
        return 0
    if not alerts:
        print("no alerts match")
        return 0
    alerts.sort(key=lambda a: _SEVERITY_ORDER.get(a.get("severity", ""), 9))
    rows = [
        (
            a.get("id", ""),
            a.get("status", ""),
            a.get("severity", ""),
            a.get("name", ""),
            a.get("service", "") or "-",
            relative_time(a.get("last_seen") or a.get("updated_ts")),
            _labels(a),
        )
        for a in alerts
    ]
    header = ("ID", "STATUS", "SEVERITY", "NAME", "SERVICE", "LAST SEEN", "LABELS")
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header) - 1)]
    for row in (header, *rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1])
    return 0


def _show(alert: dict[str, Any]) -> None:
    flags = [f for f in ("silenced", "flapping") if alert.get(f)]
    print(
        f"{alert['name']}  {alert.get('severity', '')}  {alert.get('status', '')}"
        + (f"  ({', '.join(flags)})" if flags else "")
    )
    for field in (
        "id",
        "fingerprint",
        "service",
        "source",
        "producer",
        "summary",
        "count",
        "first_seen",
        "last_seen",
        "acknowledged_by",
        "resolved_by",
        "generator_url",
    ):
        value = alert.get(field)
        if value not in (None, ""):
            print(f"  {field + ':':<17}{value}")
    for title, mapping in (
        ("labels", alert.get("labels")),
        ("annotations", alert.get("annotations")),
    ):
        if mapping:
            print(f"  {title}:")
            for key, value in sorted(mapping.items()):
                print(f"    {key}={value}")
    prediction = alert.get("prediction")
    if prediction:
        print(f"  {'prediction:':<17}{_prediction_text(prediction)}")
    print("  timeline:")
    for entry in alert.get("timeline", []):
        by = f" by {entry['by']}" if entry.get("by") else ""
        comment = f": {entry['comment']}" if entry.get("comment") else ""
        print(f"    {entry.get('at', '')}  {entry.get('kind', '')}{by}{comment}")
    notifications = alert.get("notifications", [])
    if notifications:
        print("  notifications:")
        for entry in notifications:
            at = entry.get("at")
            when = format_time(at) if isinstance(at, (int, float)) else str(at or "-")
            fields = ("receiver", "status", "outcome", "attempt", "error")
            print(
                f"    {when}  "
                + "  ".join(f"{f}={entry[f]}" for f in fields if entry.get(f) not in (None, ""))
            )


def _prediction_text(prediction: dict[str, Any]) -> str:
    """One line a person can judge: the estimate and what it rests on (docs/prediction.md)."""
    rests_on = f"{prediction.get('episodes', 0)} past episodes ({prediction.get('level', '?')})"
    if not prediction.get("enough_history") or prediction.get("median_seconds") is None:
        return f"too little history: {rests_on}"
    window = float(prediction.get("window_seconds") or 0) / 60
    p90 = prediction.get("p90_seconds")
    # Kaplan-Meier has no p90 when too few of the episodes ended inside the history.
    p90_text = f"{float(p90) / 60:.1f} min" if p90 is not None else "beyond the history"
    return (
        f"resolves by itself within {window:g} min with probability "
        f"{float(prediction.get('transient_probability') or 0):.0%}; median "
        f"{float(prediction['median_seconds']) / 60:.1f} min, p90 {p90_text}; from {rests_on}"
    )


def cmd_show(args: argparse.Namespace) -> int:
    with _client(args) as gateway:
        alert = gateway.alert(args.alert_id)
    if args.json:
        print(json.dumps(alert, indent=2))
    else:
        _show(alert)
    return 0


def cmd_action(args: argparse.Namespace) -> int:
    with _client(args) as gateway:
        for alert_id in args.alert_ids:
            answer = gateway.act(alert_id, args.action, args.comment)
            print(f"{ACTIONS[args.action]} {alert_id} (action {answer.get('action_id', '?')})")
    return 0


def add_alerts_parser(commands: Any) -> None:
    """Add `alerts` and its subcommands to the `tocsin` parser."""
    alerts = commands.add_parser("alerts", help="query, show, ack, unack and resolve alerts")
    actions = alerts.add_subparsers(dest="alerts_command", required=True)

    query = actions.add_parser(
        "query",
        help="list alerts matching matchers (open ones unless --all)",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    query.add_argument(
        "matchers",
        nargs="*",
        metavar="MATCHER",
        help='e.g. alertname=DiskFull severity=critical host=~"db-.*"',
    )
    query.add_argument("--all", action="store_true", help="resolved alerts too")
    query.add_argument("--limit", type=int, default=200, help="most alerts shown (0: all)")
    query.add_argument("--json", action="store_true", help="print the API's JSON")
    query.set_defaults(handler=cmd_query)

    show = actions.add_parser("show", help="one alert with its timeline and notifications")
    show.add_argument("alert_id", metavar="ID")
    show.add_argument("--json", action="store_true", help="print the API's JSON")
    show.set_defaults(handler=cmd_show)

    for action, text in (
        ("ack", "acknowledge"),
        ("unack", "take back the acknowledgement of"),
        ("resolve", "resolve"),
    ):
        sub = actions.add_parser(action, help=f"{text} alerts by id")
        sub.add_argument("alert_ids", nargs="+", metavar="ID")
        sub.add_argument("--comment", "-c", default="", help="shown on the alert's timeline")
        sub.set_defaults(handler=cmd_action, action=action)
