"""`tocsin keys` manages the keys ingest accepts: created keys work, revoked keys stop."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
from pathlib import Path
from unittest import mock

import httpx
import pytest
import redis

from tocsin.client import cli
from tocsin.client.devserver import RedisServer

pytestmark = pytest.mark.integration


def _keys(
    redis_server: RedisServer, tmp_path: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """Run `tocsin keys ...` in this process (the CLI's own code, minus interpreter start-up)."""
    out, err = io.StringIO(), io.StringIO()
    environ = {"REDIS_URL": redis_server.url, "TOCSIN_DEV_STATE": str(tmp_path / "none")}
    code = 0
    with (
        mock.patch.dict(os.environ, environ),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            cli.main(["keys", *args])
        except SystemExit as exit_:
            code = int(exit_.code or 0)
    return subprocess.CompletedProcess(["tocsin", "keys", *args], code, out.getvalue(),
                                       err.getvalue())  # fmt: skip


def test_keys_created_by_the_cli_authenticate_until_revoked(
    start_service, redis_server: RedisServer, tmp_path: Path
) -> None:
    ingest = start_service("ingest", TOCSIN_AUTH_CACHE_SECONDS="0")
    created = _keys(redis_server, tmp_path, "create", "grafana", "--label", "env=prod", "--json")
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)["key"]
    key_id = json.loads(created.stdout)["key_id"]
    stored = redis.Redis.from_url(redis_server.url).hgetall(f"tocsin:apikey:{key_id}")
    assert key.encode() not in b"".join(stored.values()), "only a salted hash is stored"
    assert key.split("_")[-1].encode() not in b"".join(stored.values())

    alert = {"name": "x", "severity": "info"}
    headers = {"authorization": f"Bearer {key}"}
    assert httpx.post(f"{ingest.url}/v1/alerts", json=alert, headers=headers).status_code == 202

    listed = json.loads(_keys(redis_server, tmp_path, "list", "--json").stdout)
    assert [(k["key_id"], k["producer"], k["labels"], k["revoked_at"]) for k in listed] == [
        (key_id, "grafana", {"env": "prod"}, None)
    ]
    assert _keys(redis_server, tmp_path, "revoke", key_id).returncode == 0
    assert httpx.post(f"{ingest.url}/v1/alerts", json=alert, headers=headers).status_code == 401
    assert json.loads(_keys(redis_server, tmp_path, "list", "--json").stdout)[0]["revoked_at"]
    missing = _keys(redis_server, tmp_path, "revoke", "0123456789abcdef")
    assert missing.returncode == 1  # not found
    assert "no key" in missing.stderr
