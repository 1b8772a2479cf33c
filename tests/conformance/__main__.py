"""`make conformance`: run every `check_*.py` module here (or those named) and report.

Each check module has a `main() -> bool` that starts what it needs, runs an
outside conformance tool against it, prints what it found and returns whether
it passed. The target fails when any check fails.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path


def main(names: list[str]) -> int:
    here = Path(__file__).parent
    modules = sorted(p.stem for p in here.glob("check_*.py"))
    chosen = [m for m in modules if not names or any(n in m for n in names)]
    if not chosen:
        print("no conformance checks matched", names)
        return 1
    failed = []
    for module in chosen:
        print(f"\n=== {module} ===", flush=True)
        if not importlib.import_module(f"tests.conformance.{module}").main():
            failed.append(module)
    print("\nconformance:", "failed: " + ", ".join(failed) if failed else "all passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
