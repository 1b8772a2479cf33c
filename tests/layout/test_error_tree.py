"""Every exception class Tocsin defines, in any service or library, is under `TocsinError`.

Callers catch a branch of the one tree (`tocsin.common.errors`); an error class
a service defines on `Exception` escapes every such `except`.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

from tocsin.common.errors import TocsinError

ROOT = Path(__file__).resolve().parents[2]


def _module_names() -> list[str]:
    names = []
    for source in sorted(ROOT.glob("*/*/src/tocsin/**/*.py")):
        parts = list(source.relative_to(ROOT).parts)
        package = parts[parts.index("src") + 1 :]
        package[-1] = package[-1].removesuffix(".py")
        if package[-1] == "__main__":  # running it is all it does
            continue
        if package[-1] == "__init__":
            package.pop()
        names.append(".".join(package))
    return names


def test_every_exception_class_defined_in_tocsin_is_under_tocsin_error() -> None:
    outside = []
    for name in _module_names():
        module = importlib.import_module(name)
        for attribute, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == module.__name__
                and not issubclass(value, TocsinError)
            ):
                outside.append(f"{name}.{attribute}")
    assert outside == []
