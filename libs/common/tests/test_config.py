import dataclasses

import pytest

from tocsin.common.config import CommonSettings, ConfigError, load_settings, setting


@dataclasses.dataclass(frozen=True)
class ExampleSettings(CommonSettings):
    workers: int = setting(4, "workers")
    ratio: float = setting(0.5, "ratio")
    enabled: bool = setting(False, "enabled")
    origins: tuple[str, ...] = setting((), "origins")
    limit: int | None = setting(None, "limit")


def test_defaults_apply_when_the_environment_is_empty() -> None:
    settings = load_settings(ExampleSettings, {})
    assert settings.workers == 4
    assert settings.redis_url == "redis://127.0.0.1:6379/0"


def test_variables_are_converted_to_the_field_types() -> None:
    settings = load_settings(
        ExampleSettings,
        {
            "REDIS_URL": "redis://example:1/2",
            "TOCSIN_WORKERS": "9",
            "TOCSIN_RATIO": "0.25",
            "TOCSIN_ENABLED": "yes",
            "TOCSIN_ORIGINS": "https://a, https://b",
            "TOCSIN_LIMIT": "7",
        },
    )
    assert settings.redis_url == "redis://example:1/2"
    assert settings.workers == 9
    assert settings.ratio == 0.25
    assert settings.enabled is True
    assert settings.origins == ("https://a", "https://b")
    assert settings.limit == 7


def test_every_bad_variable_is_named_in_one_error() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(ExampleSettings, {"TOCSIN_WORKERS": "many", "TOCSIN_ENABLED": "maybe"})
    assert "TOCSIN_WORKERS" in str(caught.value)
    assert "TOCSIN_ENABLED" in str(caught.value)


def test_sentinel_settings_become_the_redis_url() -> None:
    settings = load_settings(
        ExampleSettings,
        {
            "TOCSIN_REDIS_SENTINELS": "s1:26379,s2:26379",
            "TOCSIN_REDIS_SENTINEL_MASTER": "main",
            "TOCSIN_REDIS_PASSWORD": "p@ss",
        },
    )
    assert settings.redis_url == "redis+sentinel://:p%40ss@s1:26379,s2:26379/main/0"


def test_a_renamed_setting_still_reads_its_former_variable_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tocsin.common.queue import QueueConsumerSettings

    with caplog.at_level("WARNING"):
        former = load_settings(QueueConsumerSettings, {"TOCSIN_WORKER_HEARTBEAT_MS": "1500"})
    assert former.queue_heartbeat_timeout_ms == 1500
    assert "TOCSIN_WORKER_HEARTBEAT_MS is deprecated" in caplog.text
    both = {"TOCSIN_HEARTBEAT_TIMEOUT_MS": "1500", "TOCSIN_QUEUE_HEARTBEAT_TIMEOUT_MS": "2500"}
    assert load_settings(QueueConsumerSettings, both).queue_heartbeat_timeout_ms == 2500
