"""``rekindle analyze`` of Stress-Predict S02 (read + analyse + CSV outputs, no plots), before and
after the vectorised readers, in the same run; optionally a batch with ``--jobs``.

* before: git's version ``--before`` (default ``d7d3817``, main just before the numpy E4 reader
  and the cheaper chunk->message conversion: per-row Python parsing), exported with
  ``git archive`` to a temporary folder;
* after:  this working tree.

Each arm runs the real command line in a fresh interpreter (``python -m services.cli analyze``;
startup and imports included, as a user sees it), ``--repeat`` times alternately; the medians of
wall seconds and CPU seconds (user + sys of the child) are printed per session-hour, with the
ratio before/after and whether the two arms wrote identical ``episodes.csv``/``features.csv``
(they differ legitimately when a later commit changed the outputs).

``--batch DIR`` also analyses every recording folder under DIR with ``--jobs 1`` and ``--jobs
N`` (after arm only) and prints wall and CPU per session-hour and the speed-up.

Run: ``.venv/bin/python -m benchmarks.offline_analyze [--repeat 5] [--batch
../shared/fixtures/external/stress_predict_e4_dev/Raw_data --jobs 2]``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
S02 = REPO / "tests/fixtures/stress_predict_e4/Raw_data/S02"
HOUR = 3600.0


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def analyze(
    tree: Path, sources: list[Path], out: Path, jobs: int | None = None
) -> tuple[float, float]:
    """Wall and CPU seconds of one ``rekindle analyze`` run of ``tree``'s code."""
    cmd = [sys.executable, "-m", "services.cli", "--log-level", "WARNING", "analyze"]
    cmd += [str(s) for s in sources] + ["--out", str(out), "--no-plots"]
    if jobs is not None:
        cmd += ["--jobs", str(jobs)]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cpu0, wall0 = child_cpu(), time.perf_counter()
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=False)
    wall, cpu = time.perf_counter() - wall0, child_cpu() - cpu0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
    return wall, cpu


def export(rev: str, into: Path) -> Path:
    """``rev``'s tree (``services/`` and ``dashboards/``) in ``into``."""
    blob = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", rev, "services", "dashboards"],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(into, filter="data")
    return into


def hours_of(out: Path) -> float:
    total = 0.0
    for summary in out.glob("*/summary.json"):
        total += float(json.loads(summary.read_text())["duration_s"]) / HOUR
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="d7d3817", help="git revision of the naive arm")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--batch", type=Path, default=None, help="folder of recordings")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rekindle-bench-") as tmp_name:
        tmp = Path(tmp_name)
        arms = {"before": export(args.before, tmp / "before"), "after": REPO}
        figures: dict[str, list[tuple[float, float]]] = {name: [] for name in arms}
        for i in range(args.repeat):
            for name, tree in arms.items():
                figures[name].append(analyze(tree, [S02], tmp / f"out-{name}-{i}"))
        hours = hours_of(tmp / "out-after-0")
        print(f"S02: {hours:.3f} session-hours, {args.repeat} runs per arm (medians)")
        med: dict[str, tuple[float, float]] = {}
        for name in arms:
            wall = statistics.median(w for w, _ in figures[name]) / hours
            cpu = statistics.median(c for _, c in figures[name]) / hours
            med[name] = (wall, cpu)
            label = f"{name} ({args.before})" if name == "before" else "after (this tree)"
            print(f"  {label:<22} wall {wall:6.2f} s/session-hour   CPU {cpu:6.2f} s/session-hour")
        print(
            f"  ratio before/after:    wall {med['before'][0] / med['after'][0]:.1f}x"
            f"             CPU {med['before'][1] / med['after'][1]:.1f}x"
        )
        same = all(
            (tmp / "out-before-0/S02" / f).read_bytes()
            == (tmp / "out-after-0/S02" / f).read_bytes()
            for f in ("episodes.csv", "features.csv")
        )
        print(f"  identical episodes.csv and features.csv: {'yes' if same else 'no'}")
        met = "met" if med["after"][0] <= 1.0 else "NOT met"
        print(f"  target <= 1 s wall per session-hour: {met}")
        if args.batch is not None:
            sources = sorted(p for p in args.batch.iterdir() if p.is_dir())
            runs = {}
            for jobs in (1, args.jobs):
                out = tmp / f"batch-{jobs}"
                runs[jobs] = analyze(REPO, sources, out, jobs=jobs)
            batch_hours = hours_of(tmp / "batch-1")
            print(f"batch: {len(sources)} recordings, {batch_hours:.2f} session-hours")
            for jobs, (wall, cpu) in runs.items():
                print(
                    f"  --jobs {jobs}: wall {wall:6.1f} s ({wall / batch_hours:.2f} s/session-hour)"
                    f"   CPU {cpu:6.1f} s ({cpu / batch_hours:.2f} s/session-hour)"
                )
            print(
                f"  speed-up --jobs {args.jobs} vs 1: {runs[1][0] / runs[args.jobs][0]:.2f}x wall"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
