"""The console's pure logic (`static/console/model.js`) run in Node.js, checked against Python.

Matchers must mean in the console what they mean in the API and in silences
(`tocsin.common.silences.Matcher`), so the same cases run through both.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import pytest

from tocsin.common.silences import Matcher

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="Node.js is not installed")
MODEL = Path(str(resources.files("tocsin.gateway").joinpath("static/console/model.js")))

LABELS = {"alertname": "DiskFull", "host": "db-1", "team": "storage"}
CASES = ["host=db-1", "host!=db-1", "host=~db-.*", "host=~db", "host!~web-.*", "missing=",
         "missing!=", 'team=~"stor.*|net"', "alertname=DiskFull"]  # fmt: skip

SCRIPT = """
import * as model from %(module)s;
const cases = %(cases)s;
const alert = { id: "a", name: "DiskFull", labels: { host: "db-1", team: "storage" } };
const out = {
  parsed: cases.map((text) => model.parseMatchers(text)),
  matched: cases.map((text) => model.matches(alert, model.parseMatchers(text))),
  quoted: model.parseMatchers('host=~"db 1|db-.*" team=storage'),
  refused: (() => {
    try { model.parseMatchers("host=~("); return null; } catch (e) { return e.message; }
  })(),
  order: [
    { id: "1", severity: "info", status: "firing", last_seen: "2026-01-01T00:00:03Z" },
    { id: "2", severity: "critical", status: "acknowledged", last_seen: "2026-01-01T00:00:01Z" },
    { id: "3", severity: "critical", status: "firing", last_seen: "2026-01-01T00:00:00Z" },
    { id: "4", severity: "critical", status: "firing", last_seen: "2026-01-01T00:00:02Z" },
  ].sort(model.compareAlerts).map((a) => a.id),
  groups: model.groupAlerts([
    { id: "1", name: "A", severity: "info", status: "firing", labels: { team: "web" } },
    { id: "2", name: "B", severity: "critical", status: "firing", labels: { team: "db" } },
    { id: "3", name: "C", severity: "warning", status: "firing", labels: {} },
  ], "team").map((g) => [g.key, g.alerts.map((a) => a.id)]),
  relative: [
    model.relativeTime("2026-01-01T00:00:00Z", Date.parse("2026-01-01T00:00:02Z")),
    model.relativeTime("2026-01-01T00:00:00Z", Date.parse("2026-01-01T00:05:30Z")),
    model.relativeTime("2026-01-01T00:00:00Z", Date.parse("2026-01-03T01:00:00Z")),
  ],
};
console.log(JSON.stringify(out));
"""


def run_model(tmp_path: Path) -> dict[str, object]:
    script = tmp_path / "model_check.mjs"
    script.write_text(SCRIPT % {"module": json.dumps(MODEL.as_uri()), "cases": json.dumps(CASES)})
    assert NODE is not None
    done = subprocess.run([NODE, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_console_matchers_parse_and_match_as_the_api_and_silences_do(tmp_path: Path) -> None:
    result = run_model(tmp_path)
    assert result["matched"] == [True, False, True, False, True, True, False, True, True]
    for parsed, matched in zip(result["parsed"], result["matched"], strict=True):  # type: ignore[call-overload]
        (matcher,) = parsed
        op = matcher["op"]
        python = Matcher(name=matcher["name"], value=matcher["value"], isRegex="~" in op,
                         isEqual=op[0] == "=")  # fmt: skip
        assert python.matches(LABELS) is matched, matcher
    assert result["quoted"] == [
        {"name": "host", "op": "=~", "value": "db 1|db-.*"},
        {"name": "team", "op": "=", "value": "storage"},
    ]
    assert "invalid regex" in str(result["refused"])


def test_console_orders_critical_first_then_firing_then_latest_and_groups_by_worst(
    tmp_path: Path,
) -> None:
    result = run_model(tmp_path)
    assert result["order"] == ["4", "3", "2", "1"]
    assert result["groups"] == [["db", ["2"]], ["", ["3"]], ["web", ["1"]]]
    assert result["relative"] == ["just now", "5m ago", "2d ago"]
