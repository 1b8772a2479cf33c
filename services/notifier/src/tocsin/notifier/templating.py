"""Message templates in sandboxed Jinja2: one default per receiver type and part.

A receiver overrides a part with `templates: {part: "..."}` in its options. The
sandbox keeps a template from reaching Python internals; undefined names render
empty rather than failing a page at 3 a.m.

Rendering is also bounded, because templates reach us from clients (the
gateway's preview) and values from producers: see `BoundedSandbox`. A render
that would exceed a bound raises `TemplateLimitError` naming it.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import FrameType
from typing import Any, cast

import msgspec
from jinja2 import Template, TemplateError, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.runtime import Context, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tocsin.common.errors import InvalidInputError
from tocsin.notifier.message import Notification

__all__ = [
    "DEFAULTS",
    "MAX_OUTPUT_CHARS",
    "RENDER_SECONDS",
    "BoundedSandbox",
    "TemplateError",
    "TemplateLimitError",
    "Templates",
    "template_context",
]

# One rendered part, and any string or list built along the way, is at most this long.
MAX_OUTPUT_CHARS = 100_000
# Integers a template computes stay below this many bits (a 64-bit counter is plenty).
MAX_INTEGER_BITS = 4096
# CPU a single render may spend running template code.
RENDER_SECONDS = 1.0
# A width or count argument to a filter or method (`center`, `indent`, `ljust`, ...).
_MAX_SIZE_ARGUMENT = MAX_OUTPUT_CHARS
# A `%` spec's width or precision given as `*` or over 5 digits; a `{...:spec}` with
# such a width or a nested (dynamic) one.
_FORMAT_WIDTH = re.compile(
    r"%[-#0 +]*(?:\*|[0-9]{6,}|[0-9]*\.(?:\*|[0-9]{6,}))|\{[^{}]*:[^{}]*(?:[0-9]{6,}|\{)"
)


class TemplateLimitError(TemplateError, InvalidInputError):
    """A render stopped at one of the bounds (size, number, time); the message names it."""


def _length(value: Any) -> int:
    return len(value) if isinstance(value, str | bytes | list | tuple) else 0


def _bounded_size(result: Any, what: str) -> Any:
    if _length(result) > MAX_OUTPUT_CHARS:
        raise TemplateLimitError(f"{what} builds a value over {MAX_OUTPUT_CHARS} characters")
    return result


def _check_size_arguments(args: Iterable[Any], what: str) -> None:
    for value in args:
        if _is_int(value) and value > _MAX_SIZE_ARGUMENT:
            raise TemplateLimitError(f"{what}: argument {value} is over {_MAX_SIZE_ARGUMENT}")


def _check_format_string(spec: Any, what: str) -> None:
    if isinstance(spec, str) and _FORMAT_WIDTH.search(spec):
        raise TemplateLimitError(f"{what}: field widths over 5 digits, `*` or nested are refused")


class _BoundedCodeGenerator(CodeGenerator):
    """Jinja's code generator, but `a ~ b` calls the environment, which checks the size."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:  # noqa: N802 -- Jinja's name
        self.write("environment.concat_values(context, (")
        for argument in node.nodes:
            self.visit(argument, frame)
            self.write(", ")
        self.write("))")


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The sandbox with bounds on what one render may cost.

    Operators that can build huge values in one step (`**`, `*`, `+`, `%`) are
    checked before they run: an integer power or product over
    `MAX_INTEGER_BITS`, or a string or list over `MAX_OUTPUT_CHARS`, is
    refused (`{{ 7 ** 10000000 }}` would otherwise hold the GIL for seconds,
    `{{ 'x' * 100000000 }}` allocate 100 MB). Size arguments to filters and
    method calls are capped the same way, format widths too; `range` keeps
    the sandbox's own bound. Loops are bounded by CPU time: `Templates.render`
    traces the template's own frames and stops at `RENDER_SECONDS`. The
    output is streamed and cut at `MAX_OUTPUT_CHARS`. Checking in-process
    keeps the notifier's hot path cheap; a subprocess would bound everything
    generically but cost a fork or a pool hop per message.
    """

    intercepted_binops = frozenset(["**", "*", "+", "%"])
    code_generator_class = _BoundedCodeGenerator

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        for name, function in list(self.filters.items()):
            self.filters[name] = _bounded_filter(name, function)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and _is_int(left) and _is_int(right) and abs(left) > 1:
            if right > 0 and left.bit_length() * right > MAX_INTEGER_BITS:
                raise TemplateLimitError(f"** makes an integer over {MAX_INTEGER_BITS} bits")
        elif operator == "*":
            if _is_int(left) and _is_int(right):
                if left.bit_length() + right.bit_length() > MAX_INTEGER_BITS:
                    raise TemplateLimitError(f"* makes an integer over {MAX_INTEGER_BITS} bits")
            else:
                count = right if _is_int(right) else left if _is_int(left) else 0
                sequence = left if _is_int(right) else right
                if _length(sequence) * max(count, 0) > MAX_OUTPUT_CHARS:
                    raise TemplateLimitError(f"* builds a value over {MAX_OUTPUT_CHARS} characters")
        elif operator == "+":
            if _length(left) + _length(right) > MAX_OUTPUT_CHARS:
                raise TemplateLimitError(f"+ builds a value over {MAX_OUTPUT_CHARS} characters")
        elif operator == "%":
            _check_format_string(left, "%")
        return super().call_binop(context, operator, left, right)

    def concat_values(self, context: Context, values: tuple[Any, ...]) -> str:
        """`a ~ b ~ c`, refused before joining when the result would be over the bound."""
        if sum(_length(value) for value in values) > MAX_OUTPUT_CHARS:
            raise TemplateLimitError(f"~ builds a value over {MAX_OUTPUT_CHARS} characters")
        joined = (markup_join if context.eval_ctx.autoescape else str_join)(values)
        # Markup stays Markup, so autoescaping still knows what is safe.
        return cast(str, _bounded_size(joined, "~"))

    def call(
        __self,  # noqa: N805 -- Jinja's own signature, so that `self` may be a keyword argument
        __context: Context,
        __obj: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        what = getattr(__obj, "__name__", "call")
        if what not in ("format", "format_map"):
            # Method calls such as `ljust(n)`, `center(n)`, `zfill(n)` take sizes.
            _check_size_arguments((*args, *kwargs.values()), what)
        bound_to = getattr(__obj, "__self__", None)
        if isinstance(bound_to, str):
            _check_string_method(bound_to, what, args)
        return _bounded_size(super().call(__context, __obj, *args, **kwargs), what)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        # `'{:>999999999}'.format(1)`: the width sits in the string the method is bound to.
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            _check_format_string(value.__self__, value.__name__)
        return wrapped


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _bounded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    def bounded(*args: Any, **kwargs: Any) -> Any:
        # Filters marked `pass_context` (and kin) get Jinja's context first, then the value.
        given = args[1:] if hasattr(function, "jinja_pass_arg") else args
        value: Any = given[0] if given else None
        rest = given[1:]
        if name == "format":
            _check_format_string(value, "filter format")
        else:
            _check_size_arguments((*rest, *kwargs.values()), f"filter {name}")
        if name == "replace" and len(rest) >= 2:
            _check_replacement(str(value), str(rest[0]), str(rest[1]))
        elif name == "join":
            separator = str(rest[0] if rest else kwargs.get("d", ""))
            if value is not None and not isinstance(value, list | tuple | str | dict):
                # A generator (`map`, `select`) is counted before joining: made a list
                # here, refused as soon as the separators alone pass the bound, so a
                # long generator costs no more CPU than the refusal needs.
                value = _list_for_join(separator, value)
                args = (*args[: len(args) - len(given)], value, *rest)
            _check_join(separator, value)
        elif name == "indent" and isinstance(value, str):
            _check_lines(value, rest[0] if rest else kwargs.get("width", 4), name)
        return _bounded_size(function(*args, **kwargs), f"filter {name}")

    # Jinja passes the context, eval context or environment by this marker.
    if hasattr(function, "jinja_pass_arg"):
        bounded.jinja_pass_arg = function.jinja_pass_arg  # type: ignore[attr-defined]
    bounded.__name__ = name
    return bounded


def _check_string_method(value: str, name: str, args: tuple[Any, ...]) -> None:
    """The string methods whose result can be many times their inputs, checked beforehand."""
    if name == "replace" and len(args) >= 2:
        _check_replacement(value, str(args[0]), str(args[1]))
    elif name == "join" and args:
        _check_join(value, args[0])
    elif name == "expandtabs":
        width = args[0] if args and _is_int(args[0]) else 8
        if len(value) + value.count("\t") * max(width, 0) > MAX_OUTPUT_CHARS:
            raise TemplateLimitError(
                f"expandtabs builds a value over {MAX_OUTPUT_CHARS} characters"
            )
    elif name == "translate":
        raise TemplateLimitError("str.translate is not available in templates")


def _list_for_join(separator: str, items: Iterable[Any]) -> list[Any]:
    most = MAX_OUTPUT_CHARS // len(separator) + 1 if separator else None
    taken: list[Any] = []
    for item in items:
        taken.append(item)
        if most is not None and len(taken) > most:
            break
    return taken


def _check_join(separator: str, items: Any) -> None:
    count = len(items) if isinstance(items, list | tuple | str | dict) else 0
    if len(separator) * count > MAX_OUTPUT_CHARS:
        raise TemplateLimitError(f"join builds a value over {MAX_OUTPUT_CHARS} characters")


def _check_lines(value: str, width: Any, name: str) -> None:
    # `indent` adds `width` to every line.
    lines = value.count("\n") + 1
    if _is_int(width) and len(value) + lines * max(width, 0) > MAX_OUTPUT_CHARS:
        raise TemplateLimitError(f"filter {name} builds a value over {MAX_OUTPUT_CHARS} characters")


def _check_replacement(value: str, old: str, new: str) -> None:
    # `replace` multiplies: every occurrence of `old` grows by len(new) - len(old).
    grown = value.count(old) * max(len(new) - len(old), 0) if old else len(new) * len(value)
    if len(value) + grown > MAX_OUTPUT_CHARS:
        raise TemplateLimitError(f"replace builds a value over {MAX_OUTPUT_CHARS} characters")


class _Deadline:
    """Stops template code (frames compiled from templates) after `RENDER_SECONDS` of running."""

    def __init__(self, seconds: float) -> None:
        self._ends = time.thread_time() + seconds
        self._seconds = seconds

    def trace(self, frame: FrameType, event: str, arg: Any) -> Any:
        # Only template frames are traced line by line; library code runs untraced.
        if frame.f_code.co_filename == "<template>":
            self._check()
            return self._line
        return None

    def _line(self, frame: FrameType, event: str, arg: Any) -> Any:
        self._check()
        return self._line

    def _check(self) -> None:
        if time.thread_time() > self._ends:
            raise TemplateLimitError(f"rendering took over {self._seconds:g} s of CPU")


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
        self._env = BoundedSandbox(autoescape=False)
        self._html_env = BoundedSandbox(autoescape=True)
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
        """Render one part; `TemplateLimitError` if it would exceed a bound."""
        source = (overrides or {}).get(part) or DEFAULTS.get(kind, {}).get(part, "")
        template = self._compiled(source, part == "html")
        deadline = _Deadline(RENDER_SECONDS)
        previous = sys.gettrace()
        sys.settrace(deadline.trace)
        try:
            return _joined(template.generate(**context))
        finally:
            sys.settrace(previous)

    def _compiled(self, source: str, html: bool) -> Template:
        # Compiling is the costly part of rendering; a routing file has few templates.
        key = (source, html)
        template = self._cache.get(key)
        if template is None:
            template = (self._html_env if html else self._env).from_string(source)
            if len(self._cache) < 1024:
                self._cache[key] = template
        return template


def _joined(chunks: Iterator[str]) -> str:
    parts: list[str] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_OUTPUT_CHARS:
            raise TemplateLimitError(f"the output is over {MAX_OUTPUT_CHARS} characters")
        parts.append(chunk)
    return "".join(parts)
