"""What one open session costs a checkpoint: pickled size and time, after 5, 15 and 30 minutes
of simulated data (the project's simulator plus an 8-Hz ACC stream, as ``service_cost.py``).

The service pickles every open session of its partition at each commit that has messages
(``--state``: the snapshot the committer writes before it acknowledges them), on the worker
thread; this prints what that costs per session, and so per commit for N sessions.

Run: ``.venv/bin/python -m benchmarks.checkpoint_cost [--sessions 250]``.
"""

from __future__ import annotations

import argparse
import os
import pickle
import time

from benchmarks.service_cost import session_hour
from rekindle import contract
from rekindle.analysis.pipeline import SessionPipeline

MARKS_S = (300.0, 900.0, 1800.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=250, help="N for the per-commit figure")
    parser.add_argument("--repeat", type=int, default=20, help="pickles timed per mark (best)")
    args = parser.parse_args(argv)
    wire = session_hour(8.0)
    pipeline = SessionPipeline("bench", "S1")
    marks = list(MARKS_S)
    print(f"machine: load average {os.getloadavg()[0]:.1f}")
    for i, (topic, payload) in enumerate(wire):
        pipeline.handle(contract.decode(topic, payload))
        if marks and (i + 1) / len(wire) * 3600.0 >= marks[0]:
            mark = marks.pop(0)
            size = len(pickle.dumps(pipeline, protocol=pickle.HIGHEST_PROTOCOL))
            best = float("inf")
            for _ in range(args.repeat):
                started = time.perf_counter()
                pickle.dumps(pipeline, protocol=pickle.HIGHEST_PROTOCOL)
                best = min(best, time.perf_counter() - started)
            print(
                f"after {mark / 60:.0f} min of data: {size / 1e3:.0f} kB, {best * 1e3:.2f} ms per "
                f"session; a commit of {args.sessions} sessions: "
                f"{size * args.sessions / 1e6:.0f} MB, "
                f"{best * args.sessions * 1e3:.0f} ms of the worker"
            )
        if not marks:
            break
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
