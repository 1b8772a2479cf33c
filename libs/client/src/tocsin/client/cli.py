"""The `tocsin` command: run services, the dev stack, send alerts, watch events."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from importlib.metadata import entry_points
from typing import Any

from tocsin.client._args import parse_labels
from tocsin.client._devstate import read_dev_state
from tocsin.client._exceptions import ConfigurationError, TocsinError
from tocsin.client._ingest import IngestClient
from tocsin.client._keys import add_keys_parser
from tocsin.client._notifier_cli import add_notifier_commands
from tocsin.client._schedules_cli import add_schedules_parser
from tocsin.client._stream import Event, EventStream, Reset

__all__ = ["main"]

SERVICE_GROUP = "tocsin.services"


def _services() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=SERVICE_GROUP)}


def _setting(flag: str | None, env: str, state_path: tuple[str, ...], default: str = "") -> str:
    if flag:
        return flag
    if os.environ.get(env):
        return os.environ[env]
    value: Any = read_dev_state()
    for part in state_path:
        value = value.get(part, {}) if isinstance(value, dict) else {}
    return value if isinstance(value, str) and value else default


def cmd_send(args: argparse.Namespace) -> int:
    url = _setting(args.url, "TOCSIN_INGEST_URL", ("urls", "ingest"), "http://127.0.0.1:8081")
    api_key = _setting(args.api_key, "TOCSIN_API_KEY", ("api_key",))
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
    with IngestClient(url, api_key) as client:
        accepted = client.send(alert)
    for item in accepted:
        print(f"accepted {item['id']} fingerprint {item['fingerprint']}")
    return 0


def _format_event(event: Event) -> str:
    alert = event.data.get("alert", {})
    labels = " ".join(f"{k}={v}" for k, v in sorted(alert.get("labels", {}).items()))
    return (
        f"{event.data.get('type', '?'):<15} {alert.get('severity', ''):<8} "
        f"{alert.get('status', ''):<12} {alert.get('name', '')} "
        f"service={alert.get('service', '')} {labels} id={alert.get('id', '')}"
    ).rstrip()


async def _watch(args: argparse.Namespace) -> int:
    url = _setting(args.url, "TOCSIN_GATEWAY_WS_URL", ("urls", "ws"), "ws://127.0.0.1:8080/ws")
    token = _setting(args.token, "TOCSIN_TOKEN", ("token",))
    if not token:
        raise ConfigurationError("no token: pass --token, set TOCSIN_TOKEN, or run `tocsin dev`")

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
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_watch(args))
    except KeyboardInterrupt:
        return 0


def cmd_dev(args: argparse.Namespace) -> int:
    from tocsin.client._dev import run_dev

    return run_dev(args.base_port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tocsin", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in sorted(_services()):
        commands.add_parser(name, help=f"run the {name} service")

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
    send.add_argument("--url", help="ingest base URL")
    send.add_argument("--api-key")
    send.set_defaults(handler=cmd_send)

    watch = commands.add_parser("watch", help="print events as they arrive")
    watch.add_argument("--channel", action="append", help="channel (repeatable; default alerts)")
    watch.add_argument("--url", help="gateway WebSocket URL")
    watch.add_argument("--token")
    watch.add_argument("--json", action="store_true", help="print raw event JSON")
    watch.add_argument("--count", type=int, default=0, help="exit after this many events")
    watch.set_defaults(handler=cmd_watch)

    add_keys_parser(commands)
    add_schedules_parser(commands)
    add_notifier_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    services = _services()
    if args.command in services:
        services[args.command].load()()
        return
    try:
        sys.exit(args.handler(args))
    except TocsinError as exc:
        print(f"tocsin: {exc}", file=sys.stderr)
        sys.exit(2)
