"""`tocsin dev` as a user meets it: a taken port, a service that cannot start, a closed
terminal, a `kill -9`, and what `send` and `watch` say afterwards."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from tests.support import descendants, process_alive, wait_until

from tocsin.client.devserver import RedisServer

pytestmark = pytest.mark.integration

TOCSIN = [sys.executable, "-m", "tocsin.client"]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, TOCSIN_DEV_STATE=str(tmp_path / "dev.json"), PYTHONUNBUFFERED="1")
    for name in ("REDIS_URL", "TOCSIN_ROUTES_FILE", "TOCSIN_INGEST_URL", "TOCSIN_TOKEN"):
        env.pop(name, None)
    env.update(extra)
    return env


def _start_dev(tmp_path: Path, *args: str, **extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*TOCSIN, "dev", *args],
        env=_env(tmp_path, **extra),
        stdout=(tmp_path / "dev.log").open("w"),
        stderr=subprocess.PIPE,
        text=True,
    )


def _command(pid: int) -> str:
    """`pid`'s command line, to name a process that outlived its parent."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return f"pid {pid} (gone)"


def _state(tmp_path: Path) -> dict:
    try:
        return json.loads((tmp_path / "dev.json").read_text())
    except (OSError, ValueError):
        return {}


def test_a_taken_port_stops_dev_at_once_naming_the_service_and_port(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        # The gateway is the first of the five ports from the base.
        dev = _start_dev(tmp_path, "--base-port", str(port))
        _, err = dev.communicate(timeout=60)
    assert dev.returncode == 1
    assert f"gateway's port {port}" in err, err
    assert "--base-port" in err
    assert not (tmp_path / "dev.json").exists()


def test_a_service_that_cannot_start_stops_dev_naming_it_and_leaves_no_process(
    tmp_path: Path,
) -> None:
    # A bad setting only the gateway reads: it exits at start with a configuration error.
    dev = _start_dev(tmp_path, "--base-port", "0", TOCSIN_MAX_FRAME_BYTES="lots")
    wait_until(lambda: descendants(dev.pid), 30, "children started")
    children = descendants(dev.pid)
    _, err = dev.communicate(timeout=120)
    assert dev.returncode == 1
    assert "gateway (port" in err, err
    assert "exited with status" in err
    wait_until(lambda: not [p for p in children if process_alive(p)], 20, "children gone")
    assert not (tmp_path / "dev.json").exists()


def _the_hint_and_the_log_receiver_work(tmp_path: Path) -> None:
    """The printed hint runs `watch` before `send`, through the venv's script; an alert's
    notification reaches the dev log receiver, with no "no routing file" warning."""
    log = (tmp_path / "dev.log").read_text()
    script = Path(sys.executable).parent / "tocsin"
    shown = [line for line in log.splitlines() if str(script.name) in line and "dev" in line]
    watch = next(i for i, line in enumerate(shown) if " watch" in line)
    send = next(i for i, line in enumerate(shown) if " send " in line)
    assert watch < send
    assert "bin/tocsin watch" in shown[watch], "the venv's script, not a bare `tocsin`"
    sent = subprocess.run(
        [*TOCSIN, "send", "--name", "Routed", "--label", "host=x"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert sent.returncode == 0, sent.stderr
    wait_until(lambda: "to receiver log" in (tmp_path / "dev.log").read_text(), 60,
               "the notification in the dev log")  # fmt: skip
    assert "no routing file configured" not in (tmp_path / "dev.log").read_text()


def _the_preview_renders(state: dict) -> None:
    """The gateway forwards a template preview to the dev stack's notifier."""
    answer = httpx.post(
        state["urls"]["gateway"] + "/v1/notifications/preview",
        headers={"authorization": f"Bearer {state['token']}"},
        json={"receiver_type": "slack", "templates": {"title": "{{ 6 * 7 }}"}},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["rendered"]["payload"]["blocks"][0]["text"]["text"] == "42"


@pytest.mark.timeout(300)  # its waits add up to more than the suite's 120 s per test
@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGKILL], ids=["SIGHUP", "SIGKILL"])
def test_no_child_outlives_dev_closed_or_killed_and_send_watch_then_say_not_running(
    tmp_path: Path, signum: signal.Signals
) -> None:
    dev = _start_dev(tmp_path, "--base-port", "0")
    try:
        state = wait_until(lambda: _state(tmp_path), 120, "the dev stack to be up")
        children = descendants(dev.pid)
        redis_port = int(state["redis_url"].rsplit(":", 1)[1].split("/")[0])
        assert len(children) >= 6, "a Redis-compatible server and five services"
        second = subprocess.run(
            [*TOCSIN, "dev", "--base-port", "0"],
            env=_env(tmp_path), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert second.returncode == 1
        assert f"already running (pid {dev.pid}" in second.stderr
        if signum == signal.SIGHUP:
            _the_hint_and_the_log_receiver_work(tmp_path)
            _the_preview_renders(state)
        dev.send_signal(signum)
        dev.wait(60)
        try:
            wait_until(lambda: not [p for p in children if process_alive(p)], 30, "")
        except AssertionError:
            survivors = [_command(p) for p in children if process_alive(p)]
            message = f"still running 30 s after dev's {signum.name}: {survivors}"
            raise AssertionError(message) from None
        with socket.socket() as probe:  # nothing listens on the Redis server's port
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine
            probe.bind(("127.0.0.1", redis_port))
    finally:
        if dev.poll() is None:
            dev.kill()
    if signum == signal.SIGHUP:
        assert dev.returncode == 0
        assert not (tmp_path / "dev.json").exists()
        return
    # SIGKILL leaves the state file behind: readers see it names a dead supervisor.
    assert (tmp_path / "dev.json").exists()
    for command in (["send", "--name", "Late"], ["watch", "--count", "1"]):
        done = subprocess.run(
            [*TOCSIN, *command], env=_env(tmp_path), capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 1, done.stderr
        assert done.stderr.startswith("tocsin: the dev stack is not running"), done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("service", ["gateway", "ingest"])
def test_a_service_alone_whose_port_is_taken_exits_instead_of_hanging(
    service: str, redis_server: RedisServer
) -> None:
    # The gateway used to log Errno 98 and then hang in its shutdown: its pub/sub
    # reader swallowed the cancellation and reconnected forever.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = dict(os.environ, REDIS_URL=redis_server.url, TOCSIN_PORT=str(port),
                   TOCSIN_JWT_SECRET="a-signing-secret-of-at-least-32-bytes!")  # fmt: skip
        started = subprocess.Popen(
            [sys.executable, "-m", "tocsin.client", service],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            code = started.wait(timeout=60)
        finally:
            if started.poll() is None:
                started.kill()
            output = started.communicate()[0].decode(errors="replace")
    assert code != 0, output
    assert "address already in use" in output
