"""Generate the README's configuration table from the settings classes.

`python -m tests.docs.config_table` rewrites the table in README.md between
the `config-table` markers; the test beside it fails when the two drift apart.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

from tocsin.common.config import CommonSettings, env_name

SERVICES = ("gateway", "ingest", "processor", "notifier", "scheduler")
README = Path(__file__).resolve().parents[2] / "README.md"
BEGIN = "<!-- config-table:begin -->"
END = "<!-- config-table:end -->"


def settings_classes() -> dict[str, type[CommonSettings]]:
    found: dict[str, type[CommonSettings]] = {}
    for service in SERVICES:
        module = importlib.import_module(f"tocsin.{service}.settings")
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, CommonSettings)
                and value is not CommonSettings
                and value.__module__ == module.__name__
            ):
                found[service] = value
    return found


def render_table() -> str:
    # One row per variable; a variable several services read with different
    # defaults or meanings shows each service's own rather than the first one seen.
    defaults: dict[str, dict[str, str]] = {}
    docs: dict[str, dict[str, str]] = {}
    users: dict[str, set[str]] = {}
    common = {f.name for f in dataclasses.fields(CommonSettings)}
    for service, cls in settings_classes().items():
        for field in dataclasses.fields(cls):
            name = env_name(field)
            default = field.default if field.default is not dataclasses.MISSING else ""
            shown = ",".join(default) if isinstance(default, tuple) else str(default)
            defaults.setdefault(name, {})[service] = shown
            docs.setdefault(name, {})[service] = field.metadata.get("doc", "")
            users.setdefault(name, set()).add("all" if field.name in common else service)
    lines = ["| Variable | Used by | Default | Meaning |", "| --- | --- | --- | --- |"]
    for name in sorted(defaults, key=lambda n: (n != "REDIS_URL", n)):
        used = "all" if "all" in users[name] else ", ".join(sorted(users[name]))
        per_service = defaults[name]
        if len(set(per_service.values())) == 1:
            default = f"`{next(iter(per_service.values()))}`"
        else:
            default = ", ".join(f"`{value}` ({svc})" for svc, value in sorted(per_service.items()))
        lines.append(f"| `{name}` | {used} | {default} | {_per_service(docs[name])} |")
    return "\n".join(lines)


def _per_service(values: dict[str, str]) -> str:
    """The one value all services share, or each service's own, named."""
    if len(set(values.values())) == 1:
        return next(iter(values.values()))
    return " ".join(f"{service}: {value}" for service, value in sorted(values.items()))


def readme_table() -> str:
    text = README.read_text()
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def write_table() -> None:
    text = README.read_text()
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    README.write_text(f"{head}{BEGIN}\n{render_table()}\n{END}{tail}")


if __name__ == "__main__":
    write_table()
