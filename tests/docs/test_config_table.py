import dataclasses

from tests.docs.config_table import readme_table, render_table, settings_classes
from tocsin.common.config import env_name


def test_readme_configuration_table_lists_every_setting_of_every_service() -> None:
    expected = render_table()
    assert readme_table() == expected, (
        "README.md's configuration table is out of date; run `python -m tests.docs.config_table`"
    )


def _rows() -> dict[str, tuple[str, str]]:
    """Variable -> (Default cell, Meaning cell) of the rendered table."""
    rows = {}
    for line in render_table().splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip("|").split(" | ")]
        rows[cells[0].strip("`")] = (cells[2], cells[3])
    return rows


def test_each_service_s_own_default_and_meaning_are_shown_not_the_first_seen() -> None:
    rows = _rows()
    services = settings_classes()
    for service, cls in services.items():
        for field in dataclasses.fields(cls):
            default_cell, meaning_cell = rows[env_name(field)]
            default = field.default
            shown = ",".join(default) if isinstance(default, tuple) else str(default)
            assert default_cell == f"`{shown}`" or f"`{shown}` ({service})" in default_cell, (
                f"{env_name(field)} of {service}: {default_cell}"
            )
            assert field.metadata.get("doc", "") in meaning_cell, f"{env_name(field)} of {service}"


def test_the_scheduler_s_worker_threads_default_is_its_own() -> None:
    default = next(
        field.default
        for field in dataclasses.fields(settings_classes()["scheduler"])
        if env_name(field) == "TOCSIN_WORKER_THREADS"
    )
    assert f"`{default}`" in _rows()["TOCSIN_WORKER_THREADS"][0]
