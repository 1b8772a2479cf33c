"""Where `tocsin dev` leaves its URLs and credentials for `tocsin send` and `watch`.

The file names the supervisor's pid. A supervisor killed with SIGKILL cannot
remove it, so a reader checks that the pid is still a live `tocsin` process
and otherwise says the stack is not running, instead of pointing the caller at
ports nobody listens on.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from tocsin.client._exceptions import StackNotRunningError

__all__ = [
    "dev_state_path",
    "live_dev_pid",
    "read_dev_state",
    "remove_dev_state",
    "write_dev_state",
]


def dev_state_path() -> Path:
    explicit = os.environ.get("TOCSIN_DEV_STATE")
    if explicit:
        return Path(explicit)
    return Path.home() / ".cache" / "tocsin" / "dev.json"


def write_dev_state(state: dict[str, Any]) -> Path:
    path = dev_state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.chmod(0o600)
    tmp.replace(path)
    return path


def _raw_state() -> dict[str, Any]:
    try:
        state = json.loads(dev_state_path().read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _is_tocsin_process(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, someone else's
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: alive is all we can tell
    # A zombie has exited; a reused pid runs something else.
    return stat.rsplit(")", 1)[1].split()[0] != "Z" and b"tocsin" in cmdline


def live_dev_pid() -> int | None:
    """The pid of the `tocsin dev` the state file names, if that process still runs."""
    pid = _raw_state().get("pid")
    return pid if isinstance(pid, int) and _is_tocsin_process(pid) else None


def read_dev_state() -> dict[str, Any]:
    """The running stack's state; `{}` when there is none; raises when the file is stale."""
    state = _raw_state()
    if not state:
        return {}
    if live_dev_pid() is None:
        raise StackNotRunningError(dev_state_path(), state.get("pid"))
    return state


def remove_dev_state(pid: int) -> None:
    """Remove the state file if it is `pid`'s (a newer stack may have replaced it)."""
    if _raw_state().get("pid") == pid:
        with contextlib.suppress(OSError):
            dev_state_path().unlink()
