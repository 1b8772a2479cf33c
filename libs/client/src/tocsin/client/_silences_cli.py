"""`tocsin silences add|query|expire|import`: the gateway's silences, as `amtool silence` does.

`import` reads what `amtool silence query -o json` prints (a JSON list of
Alertmanager silences, or one object) from a file or `-` for stdin, skips the
expired ones and creates the others with their matchers, end time, author and
comment; a silence whose start has passed starts now.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tocsin.client._args import parse_duration, parse_matcher, relative_time
from tocsin.client._connection import Connection
from tocsin.client._exceptions import ConfigurationError, RequestError
from tocsin.client._gateway import GatewayClient

__all__ = ["add_silences_parser", "matcher_body", "silences_to_import"]

MATCHER_FIELDS = ("name", "value", "isRegex", "isEqual")


def matcher_body(text: str) -> dict[str, Any]:
    """An amtool-style matcher as the API's (Alertmanager's) matcher object."""
    name, op, value = parse_matcher(text)
    return {"name": name, "value": value, "isRegex": "~" in op, "isEqual": op[0] == "="}


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _parse_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigurationError(f"not an RFC 3339 time: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _client(args: argparse.Namespace) -> GatewayClient:
    connection: Connection = args.connection
    return GatewayClient(connection.gateway_url(), connection.token())


def _matchers_text(silence: dict[str, Any]) -> str:
    parts = []
    for m in silence.get("matchers", []):
        op = ("=" if m.get("isEqual", True) else "!") + ("~" if m.get("isRegex") else "")
        op = {"!": "!="}.get(op, op)
        parts.append(f'{m["name"]}{op}"{m["value"]}"')
    return " ".join(parts)


def cmd_add(args: argparse.Namespace) -> int:
    matchers = [matcher_body(text) for text in args.matchers]
    starts = _parse_time(args.start) if args.start else datetime.now(UTC)
    ends = (
        _parse_time(args.end)
        if args.end
        else starts + timedelta(seconds=parse_duration(args.duration))
    )
    body = {
        "matchers": matchers,
        "startsAt": _rfc3339(starts),
        "endsAt": _rfc3339(ends),
        "createdBy": args.author,
        "comment": args.comment,
    }
    with _client(args) as gateway:
        created = gateway.create_silence(body)
    silence_id = created.get("silenceID") or created.get("id", "")
    if args.quiet:
        print(silence_id)
    else:
        print(
            f"silence {silence_id} until {created.get('endsAt', _rfc3339(ends))}: "
            f"{_matchers_text(created) or _matchers_text(body)}"
        )
    return 0


def _silence_matches(silence: dict[str, Any], wanted: list[dict[str, Any]]) -> bool:
    """Whether `silence` has every one of `wanted`'s matchers (amtool's query semantics)."""
    have = [tuple(m.get(f) for f in MATCHER_FIELDS) for m in silence.get("matchers", [])]
    return all(tuple(m[f] for f in MATCHER_FIELDS) in have for m in wanted)


def cmd_query(args: argparse.Namespace) -> int:
    wanted = [matcher_body(text) for text in args.matchers]
    state = "" if args.expired or args.all else "active"
    with _client(args) as gateway:
        found = gateway.silences("expired" if args.expired else state)
    if not args.all and not args.expired:
        # amtool shows pending silences beside active ones.
        with _client(args) as gateway:
            found += gateway.silences("pending")
    found = [s for s in found if _silence_matches(s, wanted)]
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    if args.quiet:
        for silence in found:
            print(silence["id"])
        return 0
    if not found:
        print("no silences match")
        return 0
    rows = [
        (
            s["id"],
            s.get("status", {}).get("state", ""),
            relative_time(s.get("endsAt")),
            s.get("createdBy", ""),
            s.get("comment", ""),
            _matchers_text(s),
        )
        for s in found
    ]
    header = ("ID", "STATE", "ENDS", "CREATED BY", "COMMENT", "MATCHERS")
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header) - 1)]
    for row in (header, *rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1])
    return 0


def cmd_expire(args: argparse.Namespace) -> int:
    with _client(args) as gateway:
        for silence_id in args.silence_ids:
            gateway.expire_silence(silence_id)
            print(f"expired {silence_id}")
    return 0


def silences_to_import(exported: Any, now: datetime) -> list[tuple[str, dict[str, Any]]]:
    """(old id, body to create) for each silence of an Alertmanager export still in force."""
    if isinstance(exported, dict):
        exported = [exported]
    if not isinstance(exported, list):
        raise ConfigurationError("expected a JSON list of silences (amtool silence query -o json)")
    bodies = []
    for index, silence in enumerate(exported):
        try:
            ends = _parse_time(str(silence["endsAt"]))
            starts = _parse_time(str(silence.get("startsAt") or _rfc3339(now)))
            matchers = [{f: m[f] for f in MATCHER_FIELDS if f in m} for m in silence["matchers"]]
        except (KeyError, TypeError) as exc:
            raise ConfigurationError(f"silence {index}: missing field {exc}") from None
        if ends <= now:
            continue
        bodies.append(
            (
                str(silence.get("id", index)),
                {
                    "matchers": matchers,
                    "startsAt": _rfc3339(max(starts, now)),
                    "endsAt": _rfc3339(ends),
                    "createdBy": str(silence.get("createdBy", "")),
                    "comment": str(silence.get("comment", "")),
                },
            )
        )
    return bodies


def cmd_import(args: argparse.Namespace) -> int:
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
        exported = json.loads(text)
    except OSError as exc:
        raise ConfigurationError(f"cannot read {args.file}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigurationError(f"{args.file} is not JSON: {exc}") from None
    bodies = silences_to_import(exported, datetime.now(UTC))
    failed = 0
    with _client(args) as gateway:
        for old_id, body in bodies:
            try:
                created = gateway.create_silence(body)
            except RequestError as exc:
                print(f"tocsin: silence {old_id}: {exc}", file=sys.stderr)
                failed += 1
                continue
            print(f"imported {old_id} as {created.get('silenceID') or created.get('id')}")
    skipped = len(exported) - len(bodies) if isinstance(exported, list) else 1 - len(bodies)
    print(f"{len(bodies) - failed} imported, {skipped} expired skipped, {failed} refused")
    return 1 if failed else 0


def add_silences_parser(commands: Any) -> None:
    """Add `silences` and its subcommands to the `tocsin` parser."""
    silences = commands.add_parser("silences", help="add, query, expire and import silences")
    actions = silences.add_subparsers(dest="silences_command", required=True)

    add = actions.add_parser("add", help="silence alerts matching every matcher")
    add.add_argument(
        "matchers", nargs="+", metavar="MATCHER", help='e.g. alertname=DiskFull host=~"db-.*"'
    )
    add.add_argument("--duration", "-d", default="1h", help="how long (default 1h; 30m, 2h, 1d)")
    add.add_argument("--start", help="RFC 3339 start (default: now)")
    add.add_argument("--end", help="RFC 3339 end (instead of --duration)")
    add.add_argument("--comment", "-c", default="", help="why")
    add.add_argument("--author", "-a", default="", help="created by (default: the token's subject)")
    add.add_argument("--quiet", "-q", action="store_true", help="print only the id")
    add.set_defaults(handler=cmd_add)

    query = actions.add_parser("query", help="list active and pending silences")
    query.add_argument(
        "matchers", nargs="*", metavar="MATCHER", help="only silences having these matchers"
    )
    query.add_argument("--expired", action="store_true", help="expired silences instead")
    query.add_argument("--all", action="store_true", help="every state")
    query.add_argument("--json", action="store_true", help="print the API's JSON")
    query.add_argument("--quiet", "-q", action="store_true", help="print only ids")
    query.set_defaults(handler=cmd_query)

    expire = actions.add_parser("expire", help="end silences now")
    expire.add_argument("silence_ids", nargs="+", metavar="ID")
    expire.set_defaults(handler=cmd_expire)

    importing = actions.add_parser(
        "import",
        help="create silences from `amtool silence query -o json` output",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    importing.add_argument("file", help="JSON file, or - for stdin")
    importing.set_defaults(handler=cmd_import)
