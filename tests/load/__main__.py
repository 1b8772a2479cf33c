"""`make bench`: run every `bench_*.py` module here (or those named) and print their figures.

Each benchmark module has a `main() -> None` that starts what it needs,
drives bounded load on loopback, prints a table, and stops by itself.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path


def main(names: list[str]) -> None:
    here = Path(__file__).parent
    modules = sorted(p.stem for p in here.glob("bench_*.py"))
    chosen = [m for m in modules if not names or any(n in m for n in names)]
    if not chosen:
        print("no benchmarks matched", names)
        return
    every_core = os.sched_getaffinity(0)
    for module in chosen:
        # A benchmark may pin this process (and so the processes it starts) to a core;
        # the next one starts from the whole machine again.
        os.sched_setaffinity(0, every_core)
        print(f"\n=== {module} ===", flush=True)
        importlib.import_module(f"tests.load.{module}").main()


if __name__ == "__main__":
    main(sys.argv[1:])
