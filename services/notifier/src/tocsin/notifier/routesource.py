"""The routing file as the notifier runs it: loaded, checked, and reloaded when it changes.

A reload that fails validation is logged and the previous routing stays in
force: a typo in a ConfigMap must not stop paging.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tocsin.notifier.ratelimit import Rate
from tocsin.notifier.receivers import Receiver, build_receiver
from tocsin.notifier.routing import (
    Route,
    RoutesError,
    RoutingConfig,
    load_routing,
    parse_duration,
)
from tocsin.notifier.templating import Templates

__all__ = ["ActiveRouting", "RoutingSource", "activate"]

log = logging.getLogger(__name__)

_EMPTY = """
route:
  receiver: none
receivers:
  - name: none
    type: webhook
    url: "http://0.0.0.0:0/"
"""


@dataclass(frozen=True)
class ActiveRouting:
    """A validated routing configuration with its receivers built."""

    config: RoutingConfig
    receivers: dict[str, Receiver]
    rates: dict[str, Rate] = field(default_factory=dict)
    # Receivers whose `retry_budget` replaces TOCSIN_RETRY_BUDGET_SECONDS, in seconds.
    retry_budgets: dict[str, float] = field(default_factory=dict)
    configured: bool = True

    def route(self, path: str) -> Route | None:
        node: Route | None = self.config.root
        for index in path.split(".")[1:]:
            if node is None or int(index) >= len(node.routes):
                return None
            node = node.routes[int(index)]
        return node


def activate(text: str, source: str, templates: Templates, timeout: float) -> ActiveRouting:
    """Load `text` and build its receivers; raises `RoutesError` naming the line."""
    config = load_routing(text, source)
    receivers: dict[str, Receiver] = {}
    rates: dict[str, Rate] = {}
    budgets: dict[str, float] = {}
    where = f"{source}:" if source else "line "
    for name, spec in config.receivers.items():
        try:
            receivers[name] = build_receiver(spec.type, name, spec.options, templates, timeout)
            if spec.options.get("rate_limit"):
                rates[name] = Rate.parse(str(spec.options["rate_limit"]))
            if spec.options.get("retry_budget"):
                budgets[name] = parse_duration(str(spec.options["retry_budget"]))
        except ValueError as exc:
            raise RoutesError(f"{where}{spec.line}: receiver {name!r}: {exc}") from None
    return ActiveRouting(config, receivers, rates, budgets)


class RoutingSource:
    """Serves the current routing, re-reading the file at most every `poll` seconds."""

    def __init__(self, path: str, poll: float, templates: Templates, timeout: float) -> None:
        self._path = Path(path) if path else None
        self._poll = poll
        self._templates = templates
        self._timeout = timeout
        self._lock = threading.Lock()
        self._checked = time.monotonic()
        self._stamp = self._file_stamp()
        if self._path is None:
            empty = activate(_EMPTY, "", templates, timeout)
            self._active = ActiveRouting(empty.config, {}, {}, configured=False)
        else:
            self._active = self._load()

    def _file_stamp(self) -> tuple[float, int] | None:
        if self._path is None:
            return None
        try:
            stat = os.stat(self._path)
        except OSError:
            return None
        return (stat.st_mtime, stat.st_size)

    def _load(self) -> ActiveRouting:
        assert self._path is not None
        return activate(self._path.read_text(), str(self._path), self._templates, self._timeout)

    def current(self) -> ActiveRouting:
        if self._path is None:
            return self._active
        now = time.monotonic()
        if now - self._checked < self._poll:
            return self._active
        with self._lock:
            if now - self._checked < self._poll:
                return self._active
            self._checked = now
            stamp = self._file_stamp()
            if stamp is not None and stamp != self._stamp:
                self._stamp = stamp
                try:
                    self._active = self._load()
                    log.info("routing reloaded", extra={"routes_file": str(self._path)})
                except (RoutesError, OSError) as exc:
                    log.error("routing reload refused, keeping the previous one: %s", exc)
        return self._active
