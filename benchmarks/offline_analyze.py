"""``rekindle analyze`` of Stress-Predict S02 (read + analyse + CSV outputs, no plots), before and
after the vectorised readers, in the same run; optionally a batch with ``--jobs``.

* before: git's version ``--before`` (default ``d7d3817``, main just before the numpy E4 reader
  and the cheaper chunk->message conversion: per-row Python parsing), exported with
  ``git archive`` to a temporary folder;
* after:  this working tree, with its defaults and with ``--param ppg_beats=0`` (no beats
  derived from the PPG: what they cost);
* ``--compare REV[,REV...]`` (default ``b40cc2d,9233a98``: main before the cheaper PPG beats,
  scipy's filter and ``find_peaks`` per window with ``scipy.signal`` imported; and main before
  the 30-s messages offline, the beats in a second process and the cheaper windows), each with
  its defaults, exported the same way: the befores of later work, in the same run.

The load average (1 min) is printed before and after the timed runs.

Each arm runs the real command line in a fresh interpreter (``python -m rekindle.cli analyze``;
startup and imports included, as a user sees it, with each tree's bytecode cached by one
untimed warm-up run as an installed package has it), ``--repeat`` times alternately; the medians of
wall seconds and CPU seconds (user + sys of the child) are printed per session-hour, with the
ratio before/after and whether the two arms wrote identical ``episodes.csv``/``features.csv``
(they differ legitimately when a later commit changed the outputs).

In-process, the same tree: the naive row-by-row E4 reader (the pre-numpy code, kept below as
the naive arm: per-row ``float()`` parsing, list-based chunking) against the numpy reader, each
followed by the same analysis and CSV outputs; this isolates what the readers changed from
what other commits added to ``analyze`` since ``--before``.

``--batch DIR`` also analyses every recording folder under DIR with ``--jobs 1`` and ``--jobs
N`` (after arm only) and prints wall and CPU per session-hour and the speed-up.

Run: ``.venv/bin/python -m benchmarks.offline_analyze [--repeat 5] [--batch
../shared/fixtures/external/stress_predict_e4_dev/Raw_data --jobs 2]``.
"""

from __future__ import annotations

import argparse
import gzip
import heapq
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks.common import export
from rekindle import contract
from rekindle.analysis.offline import run_pipeline, write_outputs
from rekindle.ingest.sources import e4
from rekindle.ingest.sources.base import Chunk, irregular_chunks, open_source

REPO = Path(__file__).resolve().parent.parent
S02 = REPO / "tests/fixtures/stress_predict_e4/Raw_data/S02"
HOUR = 3600.0


# --- the naive arm: the row-by-row E4 reader as it was before the numpy readers -------------


def _naive_lines(path: Path) -> list[str]:
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            return fh.read().splitlines()
    return path.read_text(encoding="utf-8").splitlines()


def _naive_floats(text: str, width: int) -> list[float]:
    return [float(p.strip()) for p in text.split(",")[:width]]


def _naive_regular_chunks(stream: str, t0: float, fs: float, values: list[Any]) -> Iterator[Chunk]:
    per = max(1, math.floor(fs * 1.0))
    low, high = contract.PHYSICAL_RANGE[stream]  # type: ignore[index]
    for start in range(0, len(values), per):
        part = values[start : start + per]
        if stream == "acc":
            ok = [all(low <= c <= high for c in v) for v in part]
        else:
            ok = [low <= v <= high for v in part]
        if all(ok):
            yield Chunk(stream, "e4", tuple(part), t0 + start / fs, fs)  # type: ignore[arg-type]
        elif any(ok):
            times = tuple(t0 + (start + i) / fs for i, good in enumerate(ok) if good)
            kept = tuple(v for v, good in zip(part, ok, strict=True) if good)
            yield Chunk(stream, "e4", kept, t=times)  # type: ignore[arg-type]


def naive_e4_chunks(folder: Path) -> Iterator[Chunk]:
    """The old reader of an E4 folder: every row parsed in Python."""
    streams: list[Iterator[Chunk]] = []
    for stem, (stream, scale) in e4.REGULAR_FILES.items():
        path = next(
            (folder / n for n in (f"{stem}.csv", f"{stem}.csv.gz") if (folder / n).is_file()), None
        )
        if path is None:
            continue
        lines = _naive_lines(path)
        width = 3 if stream == "acc" else 1
        t0, fs = _naive_floats(lines[0], 1)[0], _naive_floats(lines[1], 1)[0]
        rows = [_naive_floats(ln, width) for ln in lines[2:] if ln.strip()]
        values: list[Any] = (
            [(r[0] * scale, r[1] * scale, r[2] * scale) for r in rows]
            if stream == "acc"
            else [r[0] * scale for r in rows]
        )
        streams.append(_naive_regular_chunks(stream, t0, fs, values))
    ibi = _naive_lines(folder / "IBI.csv")
    t0 = _naive_floats(ibi[0], 1)[0]
    pairs = [_naive_floats(ln, 2) for ln in ibi[1:] if ln.strip()]
    streams.append(
        irregular_chunks("rr", "e4", [t0 + a for a, _ in pairs], [b * 1000.0 for _, b in pairs])
    )
    tags = sorted(
        float(ln) for p in folder.glob("tags*.csv") for ln in _naive_lines(p) if ln.strip()
    )
    if tags:
        streams.append(irregular_chunks("marker", "e4", tags, ["e4_tag"] * len(tags), seconds=1e-9))
    return heapq.merge(*streams, key=lambda c: c.start)


def in_process(repeat: int, out: Path) -> dict[str, tuple[float, float]]:
    """Median wall and CPU seconds of read + analyse + CSV outputs of S02, per arm."""
    arms: dict[str, Callable[[], Iterator[Chunk]]] = {
        "naive row reader": lambda: naive_e4_chunks(S02),
        "numpy reader": lambda: open_source(S02),
    }
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in arms}
    for _ in range(repeat):
        for name, chunks in arms.items():
            wall0, cpu0 = time.perf_counter(), time.process_time()
            result = run_pipeline(chunks(), "S02")
            write_outputs(result, out / name.replace(" ", "-"))
            runs[name].append((time.perf_counter() - wall0, time.process_time() - cpu0))
    return {
        name: (statistics.median(w for w, _ in r), statistics.median(c for _, c in r))
        for name, r in runs.items()
    }


def _spin(seconds: float) -> int:
    count, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        count += 1
    return count


def parallel_capacity(jobs: int, seconds: float = 2.0) -> float:
    """Work ``jobs`` spinning processes do together, relative to one alone: what ``--jobs``
    can gain on this machine now (2.0 on two free cores; less when they are shared)."""
    import multiprocessing  # noqa: PLC0415

    alone = _spin(seconds)
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        together = sum(pool.map(_spin, [seconds] * jobs))
    return together / alone


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def analyze(
    tree: Path,
    sources: list[Path],
    out: Path,
    jobs: int | None = None,
    extra: tuple[str, ...] = (),
) -> tuple[float, float]:
    """Wall and CPU seconds of one ``rekindle analyze`` run of ``tree``'s code."""
    # (revisions before the import name rekindle had the package services)
    package = "rekindle" if (tree / "rekindle").exists() else "services"
    cmd = [sys.executable, "-m", f"{package}.cli", "--log-level", "WARNING", "analyze"]
    cmd += [str(s) for s in sources] + ["--out", str(out), "--no-plots", *extra]
    if jobs is not None:
        cmd += ["--jobs", str(jobs)]
    # (bytecode cached, as an installed package has it: pip compiles it at install time; a
    # PYTHONDONTWRITEBYTECODE in the caller's environment would make every run compile every
    # module of the tree from source, ~0.2 s that no user pays)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    cpu0, wall0 = child_cpu(), time.perf_counter()
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=False)
    wall, cpu = time.perf_counter() - wall0, child_cpu() - cpu0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
    return wall, cpu


def hours_of(out: Path) -> float:
    total = 0.0
    for summary in out.glob("*/summary.json"):
        total += float(json.loads(summary.read_text())["duration_s"]) / HOUR
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="d7d3817", help="git revision of the naive arm")
    parser.add_argument(
        "--compare",
        default="b40cc2d,9233a98",
        help="other revisions (comma-separated), each run with its defaults",
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--batch", type=Path, default=None, help="folder of recordings")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rekindle-bench-") as tmp_name:
        tmp = Path(tmp_name)
        # the third arm: this tree without the beats derived from PPG (docs/method.md 3a), what
        # they cost
        no_ppg = ("--param", "ppg_beats=0")
        compares = [rev for rev in args.compare.split(",") if rev]
        arms: dict[str, tuple[Path, tuple[str, ...]]] = {
            "before": (export(args.before, tmp / "before"), ()),
            **{f"compare {rev}": (export(rev, tmp / f"compare-{rev}"), ()) for rev in compares},
            "after": (REPO, ()),
            "after-no-ppg": (REPO, no_ppg),
        }
        labels = {
            "before": f"before ({args.before})",
            **{f"compare {rev}": f"before ({rev})" for rev in compares},
            "after": "after (this tree)",
            "after-no-ppg": "after, ppg_beats=0",
        }
        revs = {"before": args.before, **{f"compare {rev}": rev for rev in compares}}
        figures: dict[str, list[tuple[float, float]]] = {name: [] for name in arms}
        for name, (tree, extra) in arms.items():  # (warm-up: each tree's bytecode cached)
            analyze(tree, [S02], tmp / f"warm-{name.replace(' ', '-')}", extra=extra)
        print(f"load average (1 min) before: {os.getloadavg()[0]:.2f}")
        for i in range(args.repeat):
            for name, (tree, extra) in arms.items():
                out = tmp / f"out-{name.replace(' ', '-')}-{i}"
                figures[name].append(analyze(tree, [S02], out, extra=extra))
        print(f"load average (1 min) after: {os.getloadavg()[0]:.2f}")
        hours = hours_of(tmp / "out-after-0")
        print(f"S02: {hours:.3f} session-hours, {args.repeat} runs per arm (medians)")
        med: dict[str, tuple[float, float]] = {}
        for name in arms:
            wall = statistics.median(w for w, _ in figures[name]) / hours
            cpu = statistics.median(c for _, c in figures[name]) / hours
            med[name] = (wall, cpu)
            print(
                f"  {labels[name]:<22} wall {wall:6.2f} s/session-hour   CPU {cpu:6.2f} "
                "s/session-hour"
            )
        for name, rev in revs.items():
            print(
                f"  ratio {rev}/after:"
                f"  wall {med[name][0] / med['after'][0]:.1f}x"
                f"             CPU {med[name][1] / med['after'][1]:.1f}x"
            )
        for name, rev in revs.items():
            same = all(
                (tmp / f"out-{name.replace(' ', '-')}-0/S02" / f).read_bytes()
                == (tmp / "out-after-0/S02" / f).read_bytes()
                for f in ("episodes.csv", "features.csv")
            )
            print(f"  identical episodes.csv and features.csv ({rev}): {'yes' if same else 'no'}")
        for name in ("after", "after-no-ppg"):
            met = "met" if med[name][0] <= 1.0 else "NOT met"
            print(f"  target <= 1 s wall per session-hour ({name}): {met}")
        figures_in = in_process(args.repeat, tmp / "in-process")
        print("in-process, this tree (read + analyse + CSV outputs, no interpreter start):")
        for name, (wall, cpu) in figures_in.items():
            print(
                f"  {name:<22} wall {wall / hours:6.2f} s/session-hour   "
                f"CPU {cpu / hours:6.2f} s/session-hour"
            )
        naive, fast = figures_in["naive row reader"], figures_in["numpy reader"]
        print(
            f"  ratio naive/numpy:     wall {naive[0] / fast[0]:.1f}x"
            f"             CPU {naive[1] / fast[1]:.1f}x"
        )
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
            capacity = parallel_capacity(args.jobs)
            print(
                f"  (this machine now: {args.jobs} spinning processes do {capacity:.2f}x the work "
                "of one, the most --jobs can gain here)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
