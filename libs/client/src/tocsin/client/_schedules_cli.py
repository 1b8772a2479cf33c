"""`tocsin schedules list`: the scheduler's schedules with their last and next runs.

Reads Redis directly (`--redis-url`, else `REDIS_URL`, else the `tocsin dev`
state), the same keys `GET /v1/schedules` serves, so it works without a token.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from tocsin.client._args import format_time
from tocsin.common import keys
from tocsin.common.redis import sync_client

__all__ = ["add_schedules_parser", "schedule_rows"]

COLUMNS = ("name", "job", "cron", "tz", "catch_up", "last_fire", "last_outcome", "next_fire")


def schedule_rows(
    catalog: dict[bytes, bytes], states: list[dict[bytes, bytes]]
) -> list[dict[str, str]]:
    """One row per schedule, sorted by name; `states` in the order of the sorted names."""
    rows = []
    for name, state in zip(sorted(catalog), states, strict=True):
        definition = json.loads(catalog[name])
        rows.append(
            {
                "name": definition["name"],
                "job": definition["job"],
                "cron": definition["cron"],
                "tz": definition.get("timezone", "UTC"),
                "catch_up": definition.get("catch_up", "once"),
                "last_fire": format_time(state.get(b"last_run_fire")),
                "last_outcome": (state.get(b"last_outcome") or b"-").decode(),
                "next_fire": format_time(state.get(b"next_fire")),
            }
        )
    return rows


def cmd_schedules_list(args: argparse.Namespace) -> int:
    redis = sync_client(args.connection.redis_url())
    catalog: dict[bytes, bytes] = redis.hgetall(keys.schedule_catalog())  # type: ignore[assignment]
    pipe = redis.pipeline(transaction=False)
    for name in sorted(catalog):
        pipe.hgetall(keys.schedule_state(name.decode()))
    rows = schedule_rows(catalog, pipe.execute())
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no schedules published yet (is a scheduler running?)")
        return 0
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in COLUMNS}
    print("  ".join(c.upper().ljust(widths[c]) for c in COLUMNS).rstrip())
    for row in rows:
        print("  ".join(row[c].ljust(widths[c]) for c in COLUMNS).rstrip())
    return 0


def add_schedules_parser(commands: Any) -> None:
    """Add `schedules list` to the `tocsin` command's subparsers."""
    schedules = commands.add_parser("schedules", help="the scheduler's schedules")
    actions = schedules.add_subparsers(dest="schedules_command", required=True)
    listing = actions.add_parser("list", help="list schedules with last and next runs")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=cmd_schedules_list)
