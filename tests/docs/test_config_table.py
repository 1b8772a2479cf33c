from tests.docs.config_table import readme_table, render_table


def test_readme_configuration_table_lists_every_setting_of_every_service() -> None:
    expected = render_table()
    assert readme_table() == expected, (
        "README.md's configuration table is out of date; run `python -m tests.docs.config_table`"
    )
