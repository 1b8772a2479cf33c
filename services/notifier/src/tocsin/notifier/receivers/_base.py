"""What every receiver shares: its name, template overrides and timeout."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tocsin.notifier.templating import Templates

__all__ = ["TemplatedReceiver", "template_overrides"]


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


class TemplatedReceiver:
    """Base of the receivers: reads the common options, then calls `configure` for the rest.

    The constructor's signature is `ReceiverFactory`'s; options errors raise ValueError.
    """

    kind: str

    def __init__(
        self,
        name: str,
        options: Mapping[str, Any],
        templates: Templates,
        timeout: float,
    ) -> None:
        self.name = name
        self._templates = templates
        self._overrides = template_overrides(options, templates)
        self._timeout = float(options.get("timeout_seconds") or timeout)
        self.configure(options)

    @property
    def timeout(self) -> float:
        """Longest one send may take, in seconds (the `timeout_seconds` option)."""
        return self._timeout

    def configure(self, options: Mapping[str, Any]) -> None:
        """Read the options particular to this receiver type."""

    def render(self, part: str, context: dict[str, Any]) -> str:
        """Render template `part` of this receiver type, or the receiver's override of it."""
        return self._templates.render(self.kind, part, context, self._overrides)
