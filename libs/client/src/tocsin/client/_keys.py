"""`tocsin keys create|list|revoke`: manage producer API keys in Redis.

The Redis URL comes from `--redis-url` (before or after the subcommand),
`REDIS_URL`, or the running `tocsin dev`.
A new key is printed once; only its salted hash is stored.
"""

from __future__ import annotations

import argparse
import json

from tocsin.client._args import format_time, parse_labels
from tocsin.client._exceptions import ConfigurationError, NotFoundError
from tocsin.common.apikeys import ApiKeyStore, InvalidKeyError
from tocsin.common.redis import sync_client

__all__ = ["add_keys_parser"]


def _store(args: argparse.Namespace) -> ApiKeyStore:
    return ApiKeyStore(sync_client(args.connection.redis_url()))


def cmd_create(args: argparse.Namespace) -> int:
    try:
        key, record = _store(args).create(args.producer, parse_labels(args.label), args.description)
    except InvalidKeyError as exc:
        raise ConfigurationError(str(exc)) from None
    if args.json:
        print(json.dumps({"key": key, "key_id": record.key_id, "producer": record.producer}))
    else:
        print(f"created key {record.key_id} for producer {record.producer}")
        print(f"api key (shown once): {key}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    records = _store(args).list_keys()
    if args.json:
        rows = [{"key_id": r.key_id, "producer": r.producer, "labels": r.labels,
                 "description": r.description, "created_at": r.created_at,
                 "revoked_at": r.revoked_at} for r in records]  # fmt: skip
        print(json.dumps(rows))
        return 0
    print(f"{'KEY ID':<17} {'PRODUCER':<24} {'CREATED':<21} {'REVOKED':<21} LABELS")
    for r in records:
        labels = ",".join(f"{k}={v}" for k, v in sorted(r.labels.items()))
        print(f"{r.key_id:<17} {r.producer:<24} {format_time(r.created_at):<21} "
              f"{format_time(r.revoked_at):<21} {labels}")  # fmt: skip
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    try:
        revoked = _store(args).revoke(args.key_id)
    except InvalidKeyError as exc:
        raise ConfigurationError(str(exc)) from None
    if not revoked:
        raise NotFoundError(404, f"no key {args.key_id!r}")
    print(f"revoked key {args.key_id}")
    return 0


def add_keys_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `keys` and its subcommands to the `tocsin` parser."""
    keys = commands.add_parser("keys", help="manage producer API keys")
    actions = keys.add_subparsers(dest="keys_command", required=True)

    create = actions.add_parser("create", help="create a key for a producer (printed once)")
    create.add_argument("producer", help="producer name the key authenticates as")
    create.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                        help="default label of this producer's alerts (repeatable)")  # fmt: skip
    create.add_argument("--description", default="")
    create.add_argument("--json", action="store_true")
    create.set_defaults(handler=cmd_create)

    listing = actions.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_list)

    revoke = actions.add_parser("revoke", help="revoke a key by its id (or the key itself)")
    revoke.add_argument("key_id")
    revoke.set_defaults(handler=cmd_revoke)
