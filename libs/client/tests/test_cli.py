import pytest

from tocsin.client._args import parse_labels
from tocsin.client._exceptions import ConfigurationError
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
