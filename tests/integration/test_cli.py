"""`tocsin alerts`, `tocsin silences` and the CLI's errors, against real services."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
from pathlib import Path
from unittest import mock

import pytest
from redis import Redis
from tests.support import wait_until

from tocsin.client import cli
from tocsin.client.devserver import RedisServer, free_port
from tocsin.common import keys
from tocsin.scheduler.healthscore import Signals, score

pytestmark = pytest.mark.integration


def tocsin(*args: str, **environ: str) -> subprocess.CompletedProcess[str]:
    """Run `tocsin ...` in this process (the CLI's own code, minus interpreter start-up)."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    cleared = {name: "" for name in ("REDIS_URL", "TOCSIN_TOKEN", "TOCSIN_API_KEY",
                                     "TOCSIN_INGEST_URL", "TOCSIN_GATEWAY_URL")}  # fmt: skip
    with (
        mock.patch.dict(os.environ, {**cleared, **environ}),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            cli.main(list(args))
        except SystemExit as exit_:
            code = int(exit_.code or 0)
    return subprocess.CompletedProcess(["tocsin", *args], code, out.getvalue(), err.getvalue())


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_alerts_query_show_ack_unack_resolve_and_a_repeat_send_prints_the_stored_id(
    start_service, user_token, tmp_path: Path
) -> None:
    start_service("processor")
    ingest = start_service("ingest")
    gateway = start_service("gateway")
    env = {
        "TOCSIN_DEV_STATE": str(tmp_path / "none"),
        "TOCSIN_API_KEY": user_token(scopes=("ingest",)),
        "TOCSIN_TOKEN": user_token(),
    }
    # The connection options go before or after the subcommand alike.
    first = _ok(tocsin("--ingest-url", ingest.url, "--gateway-url", gateway.url, "send",
                       "--name", "DiskFull", "--severity", "critical", "--label", "host=db-1",
                       **env))  # fmt: skip
    alert_id = first.split()[1]
    repeat = _ok(tocsin("send", "--name", "DiskFull", "--severity", "critical", "--label",
                        "host=db-1", "--ingest-url", ingest.url, "--gateway-url", gateway.url,
                        **env))  # fmt: skip
    assert repeat.split()[1] == alert_id, repeat  # the processor keeps the first id
    _ok(tocsin("send", "--name", "CpuHot", "--label", "host=web-1", "--url", ingest.url, **env))
    at = ("--gateway-url", gateway.url)

    def listed(*matchers: str) -> list[str]:
        rows = json.loads(_ok(tocsin("alerts", "query", *matchers, "--json", *at, **env)))
        return sorted(row["name"] for row in rows)

    wait_until(lambda: listed() == ["CpuHot", "DiskFull"], 30, "both alerts stored")
    assert listed("severity=critical") == ["DiskFull"]
    assert listed('host=~"db-.*"') == ["DiskFull"]
    assert listed("alertname!=DiskFull") == ["CpuHot"]
    table = _ok(tocsin("alerts", "query", "host=db-1", *at, **env))
    assert alert_id in table
    assert "CpuHot" not in table

    assert f"acknowledged {alert_id}" in _ok(
        tocsin("alerts", "ack", alert_id, "--comment", "on it", *at, **env)
    )

    def timeline() -> list[str]:
        shown = _ok(tocsin("alerts", "show", alert_id, *at, **env))
        entries = shown.split("timeline:")[1].split("notifications:")[0].splitlines()
        return [line.strip().split("  ", 1)[1] for line in entries if line.strip()]

    wait_until(lambda: "acknowledged by tester: on it" in timeline(), 30, "the ack")
    _ok(tocsin("alerts", "unack", alert_id, *at, **env))
    wait_until(lambda: any(e.startswith("unacknowledged") for e in timeline()), 30, "the unack")
    _ok(tocsin("alerts", "resolve", alert_id, "-c", "fixed", *at, **env))
    wait_until(lambda: listed() == ["CpuHot"], 30, "the resolved alert leaving the open list")
    assert listed("--all") == ["CpuHot", "DiskFull"]

    missing = tocsin("alerts", "ack", "no-such-alert", *at, **env)
    assert missing.returncode == 1
    assert missing.stderr.startswith("tocsin: gateway answered 404 to POST ")
    assert "no alert no-such-alert" in missing.stderr


def test_silences_add_query_expire_and_import_of_amtool_json(
    start_service, user_token, tmp_path: Path
) -> None:
    gateway = start_service("gateway")
    env = {"TOCSIN_DEV_STATE": str(tmp_path / "none"), "TOCSIN_TOKEN": user_token(),
           "TOCSIN_GATEWAY_URL": gateway.url}  # fmt: skip
    added = _ok(tocsin("silences", "add", "alertname=DiskFull", 'host=~"db-.*"', "-d", "2h",
                       "-c", "maintenance", "--quiet", **env)).strip()  # fmt: skip
    listed = json.loads(_ok(tocsin("silences", "query", "--json", **env)))
    assert [s["id"] for s in listed] == [added]
    assert listed[0]["comment"] == "maintenance"
    assert {(m["name"], m["value"], m["isRegex"]) for m in listed[0]["matchers"]} == {
        ("alertname", "DiskFull", False),
        ("host", "db-.*", True),
    }
    assert _ok(tocsin("silences", "query", "-q", "alertname=Other", **env)) == ""
    assert _ok(tocsin("silences", "expire", added, **env)) == f"expired {added}\n"
    assert _ok(tocsin("silences", "query", "-q", **env)) == ""
    assert added in _ok(tocsin("silences", "query", "--expired", "-q", **env))

    # What `amtool silence query -o json` prints: one silence in force, one expired.
    exported = [
        {"id": "8f1e9a52-1c6d-4a7e-9d7e-0d1f6b2f0a11", "status": {"state": "active"},
         "updatedAt": "2026-01-01T00:00:00.000Z", "comment": "db upgrade", "createdBy": "alice",
         "startsAt": "2026-01-01T00:00:00.000Z", "endsAt": "2099-01-01T00:00:00.000Z",
         "matchers": [{"name": "team", "value": "db", "isRegex": False, "isEqual": True}]},
        {"id": "8f1e9a52-1c6d-4a7e-9d7e-0d1f6b2f0a12", "status": {"state": "expired"},
         "updatedAt": "2026-01-01T00:00:00.000Z", "comment": "old", "createdBy": "bob",
         "startsAt": "2026-01-01T00:00:00.000Z", "endsAt": "2026-01-02T00:00:00.000Z",
         "matchers": [{"name": "team", "value": "web", "isRegex": False, "isEqual": False}]},
    ]  # fmt: skip
    path = tmp_path / "silences.json"
    path.write_text(json.dumps(exported))
    assert "1 imported, 1 expired skipped, 0 refused" in _ok(
        tocsin("silences", "import", str(path), **env)
    )
    [imported] = json.loads(_ok(tocsin("silences", "query", "--json", **env)))
    assert (imported["createdBy"], imported["comment"]) == ("alice", "db upgrade")
    assert imported["endsAt"].startswith("2099-01-01T00:00:00")
    assert imported["matchers"] == [exported[0]["matchers"][0]]

    gone = tocsin("silences", "expire", "no-such-silence", **env)
    assert gone.returncode == 1
    assert "no silence no-such-silence" in gone.stderr


def test_failures_are_one_line_naming_what_and_where_with_documented_exit_codes(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    env = {"TOCSIN_DEV_STATE": str(tmp_path / "none")}
    cases = {
        ("send", "--name", "x", "--ingest-url", nowhere): (
            1, f"tocsin: could not reach ingest at {nowhere}: connection refused"),
        ("--token", "t", "alerts", "query", "--gateway-url", nowhere): (
            1, f"tocsin: could not reach gateway at {nowhere}: connection refused"),
        ("watch", "--token", "t", "--gateway-url", nowhere): (
            1, f"tocsin: could not reach gateway at ws{nowhere[4:]}/ws: connection refused"),
        ("keys", "list", "--redis-url", dead_redis): (
            1, f"tocsin: could not reach Redis at {dead_redis}: connection refused"),
        ("--redis-url", dead_redis, "schedules", "list"): (
            1, f"tocsin: could not reach Redis at {dead_redis}: connection refused"),
        ("dlq", "retry", "no-such-letter", "--redis-url", redis_server.url): (
            1, "tocsin: no dead letter no-such-letter"),
        ("alerts", "query", "--gateway-url", nowhere): (
            2, "tocsin: no token: pass --token, set TOCSIN_TOKEN, or run `tocsin dev`"),
        ("--token", "t", "silences", "add", "not a matcher", "--gateway-url", nowhere): (
            2, "tocsin: matchers are name=value, name!=value, name=~regex or name!~regex, "
               "got 'not a matcher'"),
    }  # fmt: skip
    for args, (code, line) in cases.items():
        done = tocsin(*args, **env)
        assert (done.returncode, done.stderr) == (code, line + "\n"), args


def test_health_prints_the_score_and_what_pulls_it_down(
    start_service, user_token, redis_server: RedisServer, tmp_path: Path
) -> None:
    gateway = start_service("gateway")
    report = score(Signals(cache_hit_rate=0.2, redis_reachable=1.0))
    Redis.from_url(redis_server.url).set(keys.HEALTH, report.to_json())
    shown = _ok(tocsin("health", "--gateway-url", gateway.url, "--token", user_token(),
                       TOCSIN_DEV_STATE=str(tmp_path / "none")))  # fmt: skip
    assert shown.startswith("health 90/100, computed ")
    assert shown.splitlines()[1:2] == [
        "  pulled down by cache_hit_rate is 0.2 ratio (cache hits / lookups): "
        "costs 10 of 10 points (full at >= 0.8)",
    ]
    assert "    -10  cache_hit_rate       0.2 ratio" in shown
