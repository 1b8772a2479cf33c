"""The `tocsin` command: run services, the dev stack, send alerts, watch and manage alerts.

Exit status: 0 done; 1 failed (a service unreachable or refusing, the named
alert, silence, key or dead letter not found, the dev stack not running);
2 usage (bad arguments, or no address or credential to connect with).
Errors are one line on stderr: `tocsin: <what failed, where>: <why>`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from importlib.metadata import entry_points
from typing import Any

import httpx
from redis.exceptions import RedisError

from tocsin.client._alerts_cli import add_alerts_parser
from tocsin.client._args import parse_labels
from tocsin.client._connection import Connection, add_connection_options
from tocsin.client._exceptions import TocsinError, UnreachableError
from tocsin.client._gateway import GatewayClient
from tocsin.client._http import reason_of
from tocsin.client._ingest import IngestClient
from tocsin.client._keys import add_keys_parser
from tocsin.client._notifier_cli import add_notifier_commands
from tocsin.client._schedules_cli import add_schedules_parser
from tocsin.client._service_help import add_service_parser
from tocsin.client._silences_cli import add_silences_parser
from tocsin.client._stream import Event, EventStream, Reset
from tocsin.common.errors import ConfigError

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]

SERVICE_GROUP = "tocsin.services"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# How long `send` looks for an earlier alert with the same fingerprint (the processor
# keeps the first alert's id; ingest's receipt names the message it queued).
REPEAT_LOOKUP_SECONDS = 2.0


def _services() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=SERVICE_GROUP)}


def _stored_id(connection: Connection, alert: dict[str, Any], fingerprint: str) -> str | None:
    """The id of the stored alert with `fingerprint`, looked up through the gateway when a
    token is at hand (None without one, or when it has not been stored in time)."""
    try:
        token = connection.token()
        gateway_url = connection.gateway_url()
    except TocsinError:  # no token, or a stale dev state: the send itself succeeded
        return None
    matchers = [("label", f"alertname={alert['name']}")]
    matchers += [("label", f"{k}={v}") for k, v in sorted(alert["labels"].items())]
    deadline = time.monotonic() + REPEAT_LOOKUP_SECONDS
    with GatewayClient(gateway_url, token) as gateway:
        while True:
            try:
                for candidate in gateway.alerts(matchers, 20):
                    if candidate.get("fingerprint") == fingerprint:
                        return str(candidate["id"])
                    if "fingerprint" not in candidate:  # a summary without it: read the alert
                        detail = gateway.alert(str(candidate["id"]))
                        if detail.get("fingerprint") == fingerprint:
                            return str(detail["id"])
            except TocsinError:
                return None
            if time.monotonic() > deadline:
                return None
            time.sleep(0.1)


def cmd_send(args: argparse.Namespace) -> int:
    connection: Connection = args.connection
    alert: dict[str, Any] = {
        "name": args.name,
        "severity": args.severity,
        "status": args.status,
        "labels": parse_labels(args.label),
    }
    for field in ("service", "source", "summary", "dedup_key"):
        value = getattr(args, field)
        if value:
            alert[field] = value
    with IngestClient(connection.ingest_url(), connection.api_key()) as client:
        accepted = client.send(alert)
    for item in accepted:
        stored = _stored_id(connection, alert, item["fingerprint"])
        if stored is not None and stored != item["id"]:
            print(f"accepted {stored} fingerprint {item['fingerprint']} "
                  f"(a repeat of the stored alert; message {item['id']})")  # fmt: skip
        else:
            print(f"accepted {item['id']} fingerprint {item['fingerprint']}")
    return EXIT_OK


def _format_event(event: Event) -> str:
    alert = event.data.get("alert", {})
    labels = " ".join(f"{k}={v}" for k, v in sorted(alert.get("labels", {}).items()))
    return (
        f"{event.data.get('type', '?'):<15} {alert.get('severity', ''):<8} "
        f"{alert.get('status', ''):<12} {alert.get('name', '')} "
        f"service={alert.get('service', '')} {labels} id={alert.get('id', '')}"
    ).rstrip()


async def _watch(args: argparse.Namespace) -> int:
    connection: Connection = args.connection
    url = connection.gateway_ws_url()
    token = connection.token()

    def report_reset(reset: Reset) -> None:
        print(f"tocsin: {reset.channel}: missed events are gone; reload the state "
              f"(events after offset {reset.offset} follow)", file=sys.stderr)  # fmt: skip

    stream = EventStream(url, token, channels=args.channel or ["alerts"], on_reset=report_reset)
    count = 0
    async with contextlib.aclosing(stream.events()) as events:
        async for event in events:
            if args.json:
                line = json.dumps({"channel": event.channel, "offset": event.offset,
                                   "epoch": event.epoch, "data": event.data})  # fmt: skip
            else:
                line = _format_event(event)
            print(line, flush=True)
            count += 1
            if args.count and count >= args.count:
                break
    return EXIT_OK


def cmd_watch(args: argparse.Namespace) -> int:
    connection: Connection = args.connection
    connection.token()  # a missing token is a usage error before anything else
    # The stream reconnects for ever; a gateway that is not there at all is an error now.
    try:
        httpx.get(f"{connection.gateway_url()}/healthz", timeout=5)
    except httpx.HTTPError as exc:
        raise UnreachableError("gateway", connection.gateway_ws_url(), reason_of(exc)) from None
    try:
        return asyncio.run(_watch(args))
    except KeyboardInterrupt:
        return EXIT_OK


def cmd_health(args: argparse.Namespace) -> int:
    connection: Connection = args.connection
    with GatewayClient(connection.gateway_url(), connection.token()) as gateway:
        report = gateway.health()
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_OK
    stale = " (stale: the scheduler has not updated it)" if report.get("stale") else ""
    print(f"health {report['score']}/100, computed {report.get('age_seconds', 0):.0f} s ago{stale}")
    for reason in report.get("pulled_down_by", []):
        print(f"  pulled down by {reason}")
    for part in report.get("components", []):
        lost = part["weight"] - part["contribution"]
        value = "no data" if part.get("value") is None else f"{part['value']} {part['unit']}"
        mark = f"-{lost:g}" if lost > 0 else "ok"
        print(f"  {mark:>5}  {part['name']:<20} {value}")
    return EXIT_OK


def cmd_dev(args: argparse.Namespace) -> int:
    from tocsin.client._dev import run_dev

    return run_dev(args.base_port)


def _leaves(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parsers that take options last: those without subcommands of their own."""
    found = []
    for action in parser._actions:  # argparse keeps its subparsers only here
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                found.extend(_leaves(sub) or [sub])
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tocsin", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_connection_options(parser, top=True)
    commands = parser.add_subparsers(dest="command", required=True)
    services = _services()
    for name in sorted(services):
        add_service_parser(commands, name, services[name].module)

    dev = commands.add_parser("dev", help="run a Redis-compatible server and all services")
    dev.add_argument("--base-port", type=int, default=None,
                     help="first of five consecutive ports (0: any free ports)")  # fmt: skip
    dev.set_defaults(handler=cmd_dev)

    send = commands.add_parser("send", help="post an alert to ingest")
    send.add_argument("--name", required=True)
    send.add_argument("--severity", default="warning",
                      choices=["critical", "error", "warning", "info"])  # fmt: skip
    send.add_argument("--status", default="firing", choices=["firing", "resolved"])
    send.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    send.add_argument("--service", default="")
    send.add_argument("--source", default="")
    send.add_argument("--summary", default="")
    send.add_argument("--dedup-key", default="")
    send.add_argument("--url", dest="ingest_url", default=argparse.SUPPRESS,
                      help="same as --ingest-url")  # fmt: skip
    send.set_defaults(handler=cmd_send)

    watch = commands.add_parser("watch", help="print events as they arrive")
    watch.add_argument("--channel", action="append", help="channel (repeatable; default alerts)")
    watch.add_argument("--url", dest="gateway_url", default=argparse.SUPPRESS,
                       help="same as --gateway-url")  # fmt: skip
    watch.add_argument("--json", action="store_true", help="print raw event JSON")
    watch.add_argument("--count", type=int, default=0, help="exit after this many events")
    watch.set_defaults(handler=cmd_watch)

    health = commands.add_parser("health", help="the health score and what pulls it down")
    health.add_argument("--json", action="store_true", help="print the API's JSON")
    health.set_defaults(handler=cmd_health)

    add_alerts_parser(commands)
    add_silences_parser(commands)
    add_keys_parser(commands)
    add_schedules_parser(commands)
    add_notifier_commands(commands)
    for leaf in _leaves(parser):
        if leaf.prog.split()[-1] not in services and leaf is not dev:
            add_connection_options(leaf)
    return parser


def _run(args: argparse.Namespace) -> int:
    try:
        status: int = args.handler(args)
        return status
    except ConfigError as exc:
        print(f"tocsin: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except TocsinError as exc:
        print(f"tocsin: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except RedisError as exc:
        where = getattr(args.connection.options, "redis_url", None) or "the configured Redis"
        with contextlib.suppress(TocsinError):
            where = args.connection.redis_url()
        print(f"tocsin: could not reach Redis at {where}: {reason_of(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> None:
    try:
        _main(argv)
    except BrokenPipeError:
        # The reader went away (`tocsin alerts query | head`): not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_FAILED)


def _main(argv: list[str] | None) -> None:
    args = build_parser().parse_args(argv)
    services = _services()
    if args.command in services:
        try:
            services[args.command].load()()
        except ConfigError as exc:
            # A service's settings are a deployment's input: one line, as for bad arguments.
            print(f"tocsin {args.command}: {exc}", file=sys.stderr)
            sys.exit(EXIT_USAGE)
        return
    args.connection = Connection(args)
    sys.exit(_run(args))
