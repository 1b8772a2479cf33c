"""The Autobahn|Testsuite fuzzing client against the gateway's WebSocket server.

`autobahntestsuite` is a Python 2.7 package: this check makes a 2.7 virtualenv in a
cache directory (`$TOCSIN_CACHE`, default `~/.cache/tocsin`) the first time, with the
pinned version, from the first Python 2.7 it finds (`$TOCSIN_PYTHON27`, `python2.7` on
PATH, or pyenv's). It starts `tests.conformance.echo_server` (the gateway's own RFC 6455
server with an echo application), runs the fuzzer's cases 1-7 and 9 against it, and
reads the fuzzer's report: it passes when no case's behaviour is FAILED. Cases 9.x send
messages of up to 16 MiB and take a few minutes. The report is left in
`<cache>/autobahn-report/index.html`.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tests.support import wait_until_serving
from tocsin.client.devserver import free_port, stop_process

AUTOBAHN = "autobahntestsuite==25.10.1"
# The last virtualenv that still makes Python 2.7 environments.
VIRTUALENV = "virtualenv<20.22"
CASES = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*"]
AGENT = "tocsin-gateway"


def _cache() -> Path:
    return Path(os.environ.get("TOCSIN_CACHE", Path.home() / ".cache" / "tocsin"))


def _python27() -> str:
    candidates = [os.environ.get("TOCSIN_PYTHON27", ""), shutil.which("python2.7") or ""]
    pyenv_root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates += sorted(glob.glob(f"{pyenv_root}/versions/2.7*/bin/python2.7"), reverse=True)
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return candidate
    raise SystemExit("no Python 2.7 found: set TOCSIN_PYTHON27 to a python2.7 binary")


def wstest() -> Path:
    """The fuzzer's `wstest`, installed on first use."""
    venv = _cache() / "autobahn-py27"
    binary = venv / "bin" / "wstest"
    if binary.exists():
        return binary
    python = _python27()
    probe = subprocess.run([python, "-m", "virtualenv", "--version"], capture_output=True)
    if probe.returncode != 0:
        subprocess.run([python, "-m", "pip", "install", "--quiet", VIRTUALENV], check=True)
    subprocess.run([python, "-m", "virtualenv", "--quiet", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", AUTOBAHN]
    subprocess.run(pip, check=True)
    return binary


def summarize(report: Path) -> Counter[str]:
    """Behaviours by count (OK, NON-STRICT, INFORMATIONAL, UNIMPLEMENTED, FAILED)."""
    index = json.loads((report / "index.json").read_text())
    cases = index[AGENT]
    failed = sorted(case for case, result in cases.items() if result["behavior"] == "FAILED")
    for case in failed:
        print(f"FAILED {case}: {cases[case].get('reportfile', '')}")
    return Counter(result["behavior"] for result in cases.values())


def main() -> bool:
    binary = wstest()
    report = _cache() / "autobahn-report"
    shutil.rmtree(report, ignore_errors=True)
    port = free_port()
    spec = _cache() / "autobahn-spec.json"
    spec.write_text(
        json.dumps(
            {
                "outdir": str(report),
                "servers": [{"agent": AGENT, "url": f"ws://127.0.0.1:{port}/ws"}],
                "cases": CASES,
                "exclude-cases": [],
                "exclude-agent-cases": {},
            }
        )
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.conformance.echo_server", str(port)],
        start_new_session=True,
    )
    try:
        wait_until_serving(f"http://127.0.0.1:{port}/", server)
        subprocess.run(
            [str(binary), "-m", "fuzzingclient", "-s", str(spec)],
            check=True,
            cwd=_cache(),
            stdout=subprocess.DEVNULL,
        )
    finally:
        stop_process(server, 10)
    behaviours = summarize(report)
    print(f"Autobahn cases {', '.join(CASES)} against the gateway's WebSocket server:")
    for behaviour, count in sorted(behaviours.items()):
        print(f"  {behaviour:<14} {count}")
    print(f"report: {report / 'index.html'}")
    return behaviours.get("FAILED", 0) == 0
