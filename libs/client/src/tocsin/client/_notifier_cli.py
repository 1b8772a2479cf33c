"""`tocsin routes test` and `tocsin dlq list|retry|purge`.

The routing and dead-letter code belongs to the notifier; this module reaches
it through the `tocsin.notifier` entry point group, so the client never imports
the service (and says so plainly when the notifier is not installed).
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import UTC, datetime
from importlib.metadata import entry_points
from typing import Any

from tocsin.client._args import parse_labels
from tocsin.client._exceptions import ConfigurationError, NotFoundError

__all__ = ["add_notifier_commands"]

NOTIFIER_GROUP = "tocsin.notifier"


def _tool(name: str) -> Any:
    for entry in entry_points(group=NOTIFIER_GROUP):
        if entry.name == name:
            return entry.load()
    raise ConfigurationError(f"this command needs the notifier installed (`{name}` not found)")


def cmd_routes_test(args: argparse.Namespace) -> int:
    path = args.file or os.environ.get("TOCSIN_ROUTES_FILE", "")
    if not path:
        raise ConfigurationError("no routing file: pass --file or set TOCSIN_ROUTES_FILE")
    labels = parse_labels([*args.labels, *args.label])
    try:
        reached = _tool("routes_test")(path, labels)
    except (OSError, ValueError) as exc:
        raise ConfigurationError(str(exc)) from None
    if args.json:
        print(json.dumps(reached, indent=2))
        return 0
    for item in reached:
        group = " ".join(f"{k}={v}" for k, v in item["group"].items())
        print(f"{item['receiver']} ({item['type']}) via route {item['route']} group [{group}]")
    return 0


def cmd_dlq_list(args: argparse.Namespace) -> int:
    letters = _tool("dlq_list")(args.connection.redis_url())
    if args.json:
        print(json.dumps(letters, indent=2))
        return 0
    if not letters:
        print("the dead-letter queue is empty")
    for letter in letters:
        when = datetime.fromtimestamp(letter["dead_at"], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        group = " ".join(f"{k}={v}" for k, v in letter["group_labels"].items())
        print(
            f"{letter['id']}  {when}  {letter['receiver'] or '-'}  {letter['reason']}  "
            f"attempts={letter['attempts']} alerts={letter['alerts']} [{group}]  "
            f"{letter['error'][:120]}"
        )
    return 0


def _ids(args: argparse.Namespace) -> list[str] | None:
    if args.all == bool(args.ids):
        raise ConfigurationError("name dead letters by id, or pass --all")
    return None if args.all else list(args.ids)


def cmd_dlq_retry(args: argparse.Namespace) -> int:
    wanted = _ids(args)
    done = _tool("dlq_retry")(args.connection.redis_url(), wanted)
    print(f"requeued {len(done)}")
    missing = [letter for letter in wanted or [] if letter not in done]
    if missing:
        raise NotFoundError(404, f"no dead letter {', '.join(missing)}")
    return 0


def cmd_dlq_purge(args: argparse.Namespace) -> int:
    wanted = _ids(args)
    count = _tool("dlq_purge")(args.connection.redis_url(), wanted)
    print(f"purged {count}")
    if wanted and count < len(wanted):
        raise NotFoundError(404, f"{len(wanted) - count} of the named dead letters do not exist")
    return 0


def add_notifier_commands(commands: Any) -> None:
    """Add `routes` and `dlq` to the `tocsin` subcommands."""
    routes = commands.add_parser("routes", help="work with the notifier's routing file")
    routes_commands = routes.add_subparsers(dest="routes_command", required=True)
    test = routes_commands.add_parser("test", help="print which receivers an alert reaches")
    test.add_argument(
        "--labels",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="the alert's labels (alertname, severity, service count too)",
    )
    test.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    test.add_argument("--file", help="routing YAML (default: $TOCSIN_ROUTES_FILE)")
    test.add_argument("--json", action="store_true")
    test.set_defaults(handler=cmd_routes_test)

    dlq = commands.add_parser("dlq", help="the notifier's dead-letter queue")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True)
    listing = dlq_commands.add_parser("list", help="list dead-lettered notifications")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_dlq_list)
    for name, handler, text in (
        ("retry", cmd_dlq_retry, "requeue dead letters for delivery"),
        ("purge", cmd_dlq_purge, "delete dead letters"),
    ):
        sub = dlq_commands.add_parser(name, help=text)
        sub.add_argument("ids", nargs="*", metavar="ID")
        sub.add_argument("--all", action="store_true")
        sub.set_defaults(handler=handler)
