"""Helpers for reading a receiver's options."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tocsin.notifier.templating import Templates

__all__ = ["template_overrides"]


def template_overrides(options: Mapping[str, Any], templates: Templates) -> dict[str, str]:
    """The receiver's `templates:` mapping, each one compiled once to fail at load."""
    raw = options.get("templates") or {}
    if not isinstance(raw, dict):
        raise ValueError("`templates` must map a part name to a template")
    for part, source in raw.items():
        if not isinstance(source, str):
            raise ValueError(f"template {part!r} must be a string")
        try:
            templates.check(source)
        except Exception as exc:
            raise ValueError(f"template {part!r}: {exc}") from None
    return {str(k): str(v) for k, v in raw.items()}
