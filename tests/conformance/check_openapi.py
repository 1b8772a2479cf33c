"""schemathesis, every check, against every OpenAPI document Tocsin serves.

`make conformance CHECK=openapi` (or `python -m tests.conformance.check_openapi`)
starts a private Redis-compatible server, ingest and the gateway as real
processes (as the tests do), then runs
`schemathesis run --checks all` against ingest's `/openapi.json` with an API
key, and against the gateway's `/openapi.json` (when the gateway serves one)
with a user token. It prints schemathesis's own report and exits non-zero if
any check failed: the goal is 0 failures, 5xx above all.

`--max-examples N` (default 50) sets the examples per operation; `make
conformance` runs the default.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import redis

from tocsin.client.devserver import RedisServer, free_port, stop_process
from tocsin.client.devtoken import mint_token
from tocsin.common.apikeys import ApiKeyStore

JWT_SECRET = "conformance-secret-of-at-least-32-bytes"
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


def _start(name: str, redis_url: str, logs: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "TOCSIN_PORT": str(port),
        "TOCSIN_JWT_SECRET": JWT_SECRET,
        "TOCSIN_LOG_FORMAT": "json",
        # The fuzzer sends far more than a producer's default burst.
        "TOCSIN_RATE_PER_SECOND": "0",
    }
    log = (logs / f"{name}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "tocsin.client", name],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(400):
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited: {(logs / f'{name}.log').read_text()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        subprocess.run(["sleep", "0.05"], check=False)
    raise RuntimeError(f"{name} did not become ready")


def _fuzz(name: str, url: str, credential: str, max_examples: int) -> int:
    document = httpx.get(f"{url}/openapi.json", timeout=10)
    if document.status_code != 200:
        print(f"== {name}: no /openapi.json ({document.status_code}); nothing to fuzz")
        return 0
    print(f"== {name}: schemathesis --checks all against {url}/openapi.json", flush=True)
    hooks = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.conformance.schemathesis_hooks"}
    return subprocess.call(
        [
            str(SCHEMATHESIS),
            "run",
            f"{url}/openapi.json",
            "--checks",
            "all",
            "--header",
            f"Authorization: Bearer {credential}",
            "--max-examples",
            str(max_examples),
            "--workers",
            "1",
            "--request-timeout",
            "30",
            "--suppress-health-check",
            "all",
            "--no-color",
        ],
        env=hooks,
    )


def main(max_examples: int = 50) -> bool:
    """Fuzz every OpenAPI document; True when no check failed."""
    failed = 0
    with RedisServer() as server, tempfile.TemporaryDirectory() as logs_dir:
        logs = Path(logs_dir)
        started: list[subprocess.Popen[bytes]] = []
        try:
            ingest, ingest_url = _start("ingest", server.url, logs)
            started.append(ingest)
            gateway, gateway_url = _start("gateway", server.url, logs)
            started.append(gateway)
            key, _ = ApiKeyStore(redis.Redis.from_url(server.url)).create("schemathesis")
            token = mint_token(JWT_SECRET, "schemathesis", scopes=("read", "write"))
            failed |= _fuzz("ingest", ingest_url, key, max_examples)
            failed |= _fuzz("gateway", gateway_url, token, max_examples)
            for name in ("ingest", "gateway"):
                log = (logs / f"{name}.log").read_text(errors="replace")
                if "Traceback" in log:
                    print(f"== {name} logged a traceback:\n{log[-4000:]}")
                    failed = 1
        finally:
            for process in reversed(started):
                stop_process(process, 15)
    print("== openapi conformance:", "FAILED" if failed else "0 failures")
    return not failed


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=50)
    sys.exit(0 if main(parser.parse_args().max_examples) else 1)
