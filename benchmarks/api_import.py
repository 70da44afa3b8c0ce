"""What ``import rekindle`` costs, with the API exported lazily, against the naive eager export.

Each arm runs a fresh interpreter ``--repeat`` times, alternately, and prints the median and the
best wall seconds:

* ``python -c pass``: the interpreter alone;
* ``import rekindle``: the package as it is (``read``/``analyze``/``write`` resolved on first use,
  so pandas, NumPy and the analysis are not loaded);
* ``import rekindle.api``: what an eager ``from rekindle.api import ...`` in ``__init__`` would
  cost every ``import rekindle`` (the CLI's sub-commands, the live service, tests);
* ``rekindle.analyze`` resolved: the lazy export's first use (the same modules as the eager one).

The ratio eager/lazy is of the import alone (the interpreter's start subtracted).

Run: ``.venv/bin/python -m benchmarks.api_import [--repeat 15]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ARMS = {
    "python -c pass": "pass",
    "import rekindle (lazy API)": "import rekindle",
    "import rekindle.api (eager)": "import rekindle.api",
    "rekindle.analyze resolved": "import rekindle; rekindle.analyze",
}


def _run(code: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in ARMS}
    for _ in range(args.repeat):
        for name, code in ARMS.items():
            times[name].append(_run(code))
    print(f"{'':32} {'median s':>9} {'best s':>8}")
    for name, values in times.items():
        print(f"{name:32} {statistics.median(values):9.3f} {min(values):8.3f}")
    base = statistics.median(times["python -c pass"])
    lazy = statistics.median(times["import rekindle (lazy API)"]) - base
    eager = statistics.median(times["import rekindle.api (eager)"]) - base
    print(f"import alone: lazy {lazy * 1000:.0f} ms, eager {eager * 1000:.0f} ms, ", end="")
    print(f"eager/lazy {eager / lazy:.0f}x" if lazy > 0 else "lazy below the noise")


if __name__ == "__main__":
    main()
