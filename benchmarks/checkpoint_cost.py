"""What one open session costs a checkpoint: pickled size and time, after 5, 15 and 30 minutes
of simulated data (the project's simulator plus an 8-Hz ACC stream, as ``service_cost.py``).

The service pickles every open session of its partition for a checkpoint snapshot (``--state``:
the snapshot the committer writes before it acknowledges what it covers); this prints what that
costs per session, and so per snapshot for N sessions.

Then, for N sessions (copies of the 5-minute session) in this process, the worker's stop per
snapshot both ways, in the same run: pickling on the worker thread (the naive arm,
``--no-fork-snapshots``) against forking a child that pickles and writes it
(:mod:`rekindle.analysis.snapshot`, the default): the fork's own time, the child's wall time
(on the other core) and the ratio of the worker's stops.

Run: ``.venv/bin/python -m benchmarks.checkpoint_cost [--sessions 250]``.
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.service_cost import session_hour
from rekindle import contract
from rekindle.analysis import snapshot
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
    five_min: bytes | None = None
    for i, (topic, payload) in enumerate(wire):
        pipeline.handle(contract.decode(topic, payload))
        if marks and (i + 1) / len(wire) * 3600.0 >= marks[0]:
            mark = marks.pop(0)
            data = pickle.dumps(pipeline, protocol=pickle.HIGHEST_PROTOCOL)
            size = len(data)
            five_min = data if five_min is None else five_min
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
    if five_min is not None and snapshot.available():
        forked_vs_here(five_min, args.sessions, args.repeat)
    return 0


def forked_vs_here(session: bytes, n: int, repeat: int) -> None:
    """The worker's stop per snapshot of ``n`` copies of ``session`` (pickled), pickled here
    and forked, alternately ``repeat`` times; medians."""
    state = {"pipelines": {("bench", f"S{i}"): pickle.loads(session) for i in range(n)}}
    here, fork, child = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(repeat):
            started = time.perf_counter()
            pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
            here.append(time.perf_counter() - started)
            started = time.perf_counter()
            forked = snapshot.ForkedSnapshot.start(
                state, snapshot.snapshot_path(Path(tmp) / "state", k)
            )
            fork.append(time.perf_counter() - started)
            forked.result().discard()
            child.append(forked.wall_s)
    med_here, med_fork = statistics.median(here), statistics.median(fork)
    print(
        f"{n} sessions of 5 min, worker's stop per snapshot (median of {repeat}): pickled here "
        f"{med_here * 1e3:.0f} ms; forked {med_fork * 1e3:.1f} ms (the child pickles and writes "
        f"it in {statistics.median(child) * 1e3:.0f} ms on another core): "
        f"{med_here / med_fork:.0f}x shorter"
    )


if __name__ == "__main__":
    raise SystemExit(main())
