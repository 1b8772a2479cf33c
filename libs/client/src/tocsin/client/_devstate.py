"""Where `tocsin dev` leaves its URLs and credentials for `tocsin send` and `watch`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["dev_state_path", "read_dev_state", "write_dev_state"]


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


def read_dev_state() -> dict[str, Any]:
    try:
        state: dict[str, Any] = json.loads(dev_state_path().read_text())
    except (OSError, ValueError):
        return {}
    return state
