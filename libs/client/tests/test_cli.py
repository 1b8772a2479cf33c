import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from tocsin.client._alerts_cli import query_params
from tocsin.client._args import parse_duration, parse_labels, parse_matcher
from tocsin.client._exceptions import ConfigurationError
from tocsin.client._silences_cli import silences_to_import
from tocsin.client.cli import build_parser


def test_labels_are_parsed_from_key_value_pairs() -> None:
    assert parse_labels(["host=db-1", "team=ops", "empty="]) == {
        "host": "db-1",
        "team": "ops",
        "empty": "",
    }


@pytest.mark.parametrize("bad", ["novalue", "=x"])
def test_a_label_without_key_or_equals_is_a_configuration_error(bad: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_labels([bad])


def test_every_service_is_a_subcommand() -> None:
    parser = build_parser()
    for service in ("gateway", "ingest", "processor", "notifier", "scheduler"):
        assert parser.parse_args([service]).command == service


def test_send_refuses_an_unknown_severity() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["send", "--name", "x", "--severity", "loud"])


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("alertname=DiskFull", ("alertname", "=", "DiskFull")),
        ('host=~"db-.*"', ("host", "=~", "db-.*")),
        ("team != web", ("team", "!=", "web")),
        ('env!~"dev|test"', ("env", "!~", "dev|test")),
        ("empty=", ("empty", "=", "")),
    ],
)
def test_matchers_are_read_in_amtool_syntax_with_optional_quotes(text: str, parsed: tuple) -> None:
    assert parse_matcher(text) == parsed


@pytest.mark.parametrize("bad", ["novalue", "=x", "9x=1", ""])
def test_a_malformed_matcher_is_a_configuration_error(bad: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_matcher(bad)


def test_durations_add_up_their_units_and_refuse_anything_else() -> None:
    assert parse_duration("1h30m") == 5400
    assert parse_duration("2d") == 172800
    for bad in ("", "soon", "10", "1h soon", "0s"):
        with pytest.raises(ConfigurationError):
            parse_duration(bad)


def test_indexed_fields_become_filters_and_other_matchers_label_matchers() -> None:
    assert query_params(["severity=critical", "host=~db.*", "service!=web"], active=True) == [
        ("severity", "critical"),
        ("label", "host=~db.*"),
        ("label", "service!=web"),
        ("status", "firing,acknowledged"),
    ]
    assert query_params(["status=resolved"], active=True) == [("status", "resolved")]


def test_an_amtool_export_imports_the_silences_still_in_force_starting_now_at_the_latest() -> None:
    now = datetime(2026, 6, 1, tzinfo=UTC)
    matcher = {"name": "team", "value": "db", "isRegex": False, "isEqual": True}
    exported = [
        {"id": "a", "matchers": [matcher], "startsAt": "2026-05-01T00:00:00Z",
         "endsAt": "2026-07-01T00:00:00Z", "createdBy": "alice", "comment": "c",
         "updatedAt": "2026-05-01T00:00:00Z", "status": {"state": "active"}},
        {"id": "b", "matchers": [matcher], "startsAt": "2026-05-01T00:00:00Z",
         "endsAt": "2026-05-02T00:00:00Z", "status": {"state": "expired"}},
        {"id": "c", "matchers": [matcher], "startsAt": "2026-06-02T00:00:00Z",
         "endsAt": "2026-06-03T00:00:00Z", "status": {"state": "pending"}},
    ]  # fmt: skip
    imported = silences_to_import(exported, now)
    assert [old for old, _ in imported] == ["a", "c"]
    assert imported[0][1] == {"matchers": [matcher], "startsAt": "2026-06-01T00:00:00Z",
                              "endsAt": "2026-07-01T00:00:00Z", "createdBy": "alice",
                              "comment": "c"}  # fmt: skip
    assert imported[1][1]["startsAt"] == "2026-06-02T00:00:00Z"
    with pytest.raises(ConfigurationError):
        silences_to_import([{"id": "x"}], now)


@pytest.mark.parametrize(
    "argv",
    [
        ["--redis-url", "redis://r:1/0", "--token", "t", "keys", "list"],
        ["keys", "list", "--redis-url", "redis://r:1/0", "--token", "t"],
        ["--token", "t", "keys", "list", "--redis-url", "redis://r:1/0"],
    ],
)
def test_connection_options_read_the_same_before_or_after_the_subcommand(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert (args.redis_url, args.token, args.gateway_url) == ("redis://r:1/0", "t", None)


def test_a_service_help_lists_its_port_and_every_variable(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["ingest", "--help"])
    assert exited.value.code == 0
    shown = capsys.readouterr().out
    assert "HTTP port (/healthz, /readyz, /metrics) is 8081" in shown
    for variable in ("REDIS_URL", "TOCSIN_PORT", "TOCSIN_MAX_BODY_BYTES", "TOCSIN_REQUIRE_AUTH"):
        assert f"  {variable} (default: " in shown


def test_alerts_show_states_the_prediction_and_what_it_rests_on() -> None:
    from tocsin.client._alerts_cli import _prediction_text

    line = _prediction_text({
        "level": "fingerprint", "episodes": 30, "resolved_episodes": 30, "enough_history": True,
        "window_seconds": 300.0, "transient_probability": 0.97, "median_seconds": 120.0,
        "p90_seconds": None,
    })  # fmt: skip
    assert line == (
        "resolves by itself within 5 min with probability 97%; median 2.0 min, "
        "p90 beyond the history; from 30 past episodes (fingerprint)"
    )
    scarce = {"level": "none", "episodes": 2, "enough_history": False, "median_seconds": None}
    assert _prediction_text(scarce) == "too little history: 2 past episodes (none)"


@pytest.mark.parametrize("service", ["gateway", "ingest", "processor", "notifier", "scheduler"])
def test_a_service_with_an_unreadable_setting_exits_2_with_one_line_naming_it(
    service: str,
) -> None:
    env = {**os.environ, "TOCSIN_PORT": "eighty", "REDIS_URL": "redis://127.0.0.1:1/0"}
    done = subprocess.run(
        [sys.executable, "-m", "tocsin.client", service],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"tocsin {service}: invalid configuration: TOCSIN_PORT: "
        "invalid literal for int() with base 10: 'eighty'"
    ]
