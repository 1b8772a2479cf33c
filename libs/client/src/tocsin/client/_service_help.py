"""`tocsin <service> --help`: the service's port and every variable it reads.

The text comes from the service's settings class (`tocsin.<service>.settings`,
found beside the entry point's module), imported only when help is asked
for, so `tocsin send` does not import five services to build its parser.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import textwrap
from typing import Any

__all__ = ["add_service_parser", "service_help"]


def service_help(name: str, entry_module: str) -> str:
    """The help text of service `name` whose entry point lives in `entry_module`."""
    from tocsin.common.config import CommonSettings, env_name

    module = importlib.import_module(entry_module.rsplit(".", 1)[0] + ".settings")
    classes = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, CommonSettings)
        and value.__module__ == module.__name__
    ]
    port = getattr(module, "DEFAULT_PORT", None)
    lines = [
        f"usage: tocsin {name} [-h]",
        "",
        f"Run the {name} service until SIGTERM or SIGINT."
        + (
            f" Its HTTP port (/healthz, /readyz, /metrics) is {port} unless TOCSIN_PORT says"
            " otherwise."
            if port
            else ""
        ),
        "",
        "environment variables (read once at start):",
    ]
    for cls in classes:
        for field in dataclasses.fields(cls):
            default: Any = field.default if field.default is not dataclasses.MISSING else ""
            shown = ",".join(default) if isinstance(default, tuple) else default
            doc = field.metadata.get("doc", "")
            lines.append(f"  {env_name(field)} (default: {shown!s:.60})")
            lines.extend(
                textwrap.wrap(doc, 88, initial_indent="      ", subsequent_indent="      ")
            )
    return "\n".join(lines)


class _ServiceHelp(argparse.Action):
    def __init__(self, option_strings: list[str], dest: str, entry_module: str, **_: Any) -> None:
        super().__init__(
            option_strings,
            dest=argparse.SUPPRESS,
            nargs=0,
            help="show the service's port and variables, and exit",
        )
        self._entry_module = entry_module

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        print(service_help(parser.prog.split()[-1], self._entry_module))
        parser.exit()


def add_service_parser(commands: Any, name: str, entry_module: str) -> None:
    """Add `tocsin <name>`, whose `--help` lists the service's variables and port."""
    sub = commands.add_parser(name, help=f"run the {name} service", add_help=False)
    sub.add_argument("-h", "--help", action=_ServiceHelp, entry_module=entry_module)
