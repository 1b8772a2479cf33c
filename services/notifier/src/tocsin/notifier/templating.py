"""Message templates in sandboxed Jinja2: one default per receiver type and part.

A receiver overrides a part with `templates: {part: "..."}` in its options. The
sandbox keeps a template from reaching Python internals; undefined names render
empty rather than failing a page at 3 a.m.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from jinja2 import Template, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tocsin.notifier.message import Notification

__all__ = ["DEFAULTS", "TemplateError", "Templates", "template_context"]

_TITLE = (
    "[{{ status | upper }}{% if status == 'firing' %}:{{ firing_count }}{% endif %}] "
    "{{ group_labels.values() | select | join(' ') or alerts[0].alert.name }}"
)
_LINES = (
    "{% for item in alerts %}"
    "- [{{ item.alert.severity }}] {{ item.alert.name }} {{ item.status }}"
    "{% if item.alert.summary %}: {{ item.alert.summary }}{% endif %}"
    "{% if item.alert.service %} (service {{ item.alert.service }}){% endif %}\n"
    "{% endfor %}"
    "{% if truncated %}... and {{ firing_count + resolved_count - alerts | length }} more "
    "({{ firing_count }} firing, {{ resolved_count }} resolved)\n{% endif %}"
)
_HTML = (
    "<h2>{{ title }}</h2><ul>"
    "{% for item in alerts %}<li><b>[{{ item.alert.severity }}] {{ item.alert.name }}</b> "
    "{{ item.status }}{% if item.alert.summary %}: {{ item.alert.summary }}{% endif %}</li>"
    "{% endfor %}</ul>"
    "{% if truncated %}<p>... and {{ firing_count + resolved_count - alerts | length }} more "
    "({{ firing_count }} firing, {{ resolved_count }} resolved)</p>{% endif %}"
)

DEFAULTS: Mapping[str, Mapping[str, str]] = {
    "webhook": {},
    "slack": {"title": _TITLE, "text": _LINES},
    "msteams": {"title": _TITLE, "text": _LINES},
    "email": {"subject": _TITLE, "text": _TITLE + "\n\n" + _LINES, "html": _HTML},
    "pagerduty": {
        "summary": "{{ alert.name }}{% if alert.summary %}: {{ alert.summary }}{% endif %}"
    },
}


def template_context(notification: Notification, **extra: Any) -> dict[str, Any]:
    """The names a template sees: the notification's fields, builtins only."""
    context: dict[str, Any] = msgspec.to_builtins(notification)
    context.update(extra)
    return context


class Templates:
    """Renders a receiver's parts: its own template if it has one, else the type's default."""

    def __init__(self) -> None:
        # Escaping is per output (HTML email), not global: JSON and Slack mrkdwn are not HTML.
        self._env = ImmutableSandboxedEnvironment(autoescape=False)
        self._html_env = ImmutableSandboxedEnvironment(autoescape=True)
        self._cache: dict[tuple[str, bool], Template] = {}

    def check(self, source: str) -> None:
        """Raise `TemplateError` if `source` does not compile."""
        self._env.from_string(source)

    def render(
        self,
        kind: str,
        part: str,
        context: Mapping[str, Any],
        overrides: Mapping[str, str] | None = None,
    ) -> str:
        source = (overrides or {}).get(part) or DEFAULTS.get(kind, {}).get(part, "")
        return self._compiled(source, part == "html").render(**context)

    def _compiled(self, source: str, html: bool) -> Template:
        # Compiling is the costly part of rendering; a routing file has few templates.
        key = (source, html)
        template = self._cache.get(key)
        if template is None:
            template = (self._html_env if html else self._env).from_string(source)
            if len(self._cache) < 1024:
                self._cache[key] = template
        return template
