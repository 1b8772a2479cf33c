"""The bounded sandbox: costly templates stop with a reason, ordinary ones render as before."""

from __future__ import annotations

import pytest

from tocsin.notifier.templating import (
    DEFAULTS,
    MAX_OUTPUT_CHARS,
    TemplateLimitError,
    Templates,
)

CONTEXT = {"name": "disk", "items": [1, 2, 3], "count": 1_000_000}


def render(source: str) -> str:
    return Templates().render("webhook", "body", CONTEXT, {"body": source})


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("{{ 7 ** 10000000 }}", "bits"),
        ("{{ 10 ** 5000 }}", "bits"),
        ("{% set a = 2 ** 4000 %}{{ a * a }}", "bits"),
        ("{{ 'x' * 100000000 }}", "characters"),
        ("{{ 100000000 * 'x' }}", "characters"),
        ("{{ items * 100000000 }}", "characters"),
        ("{% set a = 'x' * 60000 %}{{ a + a }}", "characters"),
        ("{{ ('x' * 1000) | replace('x', 'y' * 1000) }}", "replace"),
        ("{{ 'x' | center(100000000) }}", "center"),
        ("{{ 'x' | indent(100000000) }}", "indent"),
        ("{{ 'x'.ljust(100000000) }}", "ljust"),
        ("{{ '{:>999999999}'.format(1) }}", "field widths"),
        ("{{ '{:>{w}}'.format(1, w=999999999) }}", "field widths"),
        ("{{ '%*s' % (100000000, 'a') }}", "field widths"),
        ("{{ '%.9999999f' % 1.0 }}", "field widths"),
        ("{{ '%*s' | format(100000000, 'a') }}", "field widths"),
        ("{% set a = 'x' * 60000 %}{{ a ~ a }}", "~ builds"),
        (
            "{% macro grow(s, n) %}{{ grow(s ~ s, n - 1) if n else s | length }}{% endmacro %}"
            "{{ grow('x' * 60000, 40) }}",
            "~ builds",
        ),
        ("{{ range(99999) | map('string') | join('y' * 1000) }}", "join"),
        ("{{ ('y' * 1000).join(range(1000) | map('string') | list) }}", "join"),
        ("{{ ('x' * 1000).replace('x', 'y' * 1000) }}", "replace"),
        ("{{ ('x\n' * 50000) | indent(99999) }}", "indent"),
        ("{{ ('\t' * 99999).expandtabs(99999) }}", "expandtabs"),
        ("{{ 'abc'.translate({97: 'zz'}) }}", "translate"),
        ("{% for i in range(99999) %}{{ 'y' * 99 }}{% endfor %}", "output"),
        ("{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}", "CPU"),
    ],
)
def test_costly_templates_stop_with_a_reason(source: str, reason: str) -> None:
    with pytest.raises(TemplateLimitError, match=reason):
        render(source)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ 2 ** 10 }}", "1024"),
        ("{{ 'ab' * 3 }}", "ababab"),
        ("{{ name | upper }}", "DISK"),
        ("{{ items | join(',') }}", "1,2,3"),
        ("{{ '%d' | format(count) }}", "1000000"),
        ("{{ 'Error 500000: %05d' | format(7) }}", "Error 500000: 00007"),
        ("{{ '{:>4}'.format(1) }}", "   1"),
        ("{{ count | filesizeformat }}", "1.0 MB"),
        ("{{ items | map('string') | join('-') }}", "1-2-3"),
        ("{% for i in range(3) %}{{ i }}{% endfor %}", "012"),
        ("{{ name ~ '-' ~ count }}", "disk-1000000"),
        ("{{ items | join(d='+') }}", "1+2+3"),
        ("{{ ','.join(['a', 'b']) }}", "a,b"),
        ("{{ ('x\ny') | indent(2) }}", "x\n  y"),
    ],
)
def test_ordinary_templates_render_as_before(source: str, expected: str) -> None:
    assert render(source) == expected


def test_output_of_exactly_the_bound_renders() -> None:
    assert len(render(f"{{{{ 'x' * {MAX_OUTPUT_CHARS} }}}}")) == MAX_OUTPUT_CHARS


def test_every_default_template_still_compiles_in_the_bounded_sandbox() -> None:
    templates = Templates()
    for parts in DEFAULTS.values():
        for source in parts.values():
            templates.check(source)
