"""Configuration snippets read out of the docs, so the tests run what the docs tell users.

A snippet is the fenced block right after `<!-- snippet: NAME -->` in a docs page;
`snippet()` returns it with the placeholders (`tocsin-ingest:8081`,
`tsk_REPLACE_WITH_YOUR_KEY`) replaced by the test's own address and key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

__all__ = ["DOCS", "snippet", "snippet_text"]

DOCS = Path(__file__).resolve().parents[2] / "docs"
INGEST_PLACEHOLDER = "tocsin-ingest:8081"
KEY_PLACEHOLDER = "tsk_REPLACE_WITH_YOUR_KEY"


def snippet_text(name: str, page: str = "producers.md") -> str:
    """The text of snippet `name` in docs/`page`, as printed there."""
    text = (DOCS / page).read_text()
    match = re.search(rf"<!-- snippet: {re.escape(name)} -->\n```\w*\n(.*?)\n```", text, re.S)
    if match is None:
        raise LookupError(f"no snippet {name!r} in docs/{page}")
    return match.group(1)


def snippet(name: str, ingest: str, key: str, page: str = "producers.md") -> Any:
    """Snippet `name` as YAML data, pointed at `ingest` (host:port) with `key`."""
    text = snippet_text(name, page).replace(INGEST_PLACEHOLDER, ingest)
    return yaml.safe_load(text.replace(KEY_PLACEHOLDER, key))
