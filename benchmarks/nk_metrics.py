"""Cost of the NeuroKit2 interval metrics of ``rekindle analyze --metrics`` on one recording.

For Stress-Predict S02 (the repository's fixture, ~1 h of E4 data), measures in one run:

* importing NeuroKit2 (paid once per process; ``--jobs`` workers pay it each);
* the analysis itself (read + streaming core, as ``rekindle analyze`` runs it);
* the metrics of each episode (onset to offset) and each segment between markers and each
  labelled phase (``time_log_phases.csv``): ``eda_process`` + ``eda_intervalrelated``,
  ``hrv_time`` and, with >= 2 min of clean beats, ``hrv_frequency``.

Prints wall and CPU seconds per item and the ratio of the metrics' cost to the analysis' own.

Run: ``.venv/bin/python benchmarks/nk_metrics.py``
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent
S02 = REPO / "tests" / "fixtures" / "stress_predict_e4" / "Raw_data" / "S02"
PHASES = REPO / "tests" / "fixtures" / "stress_predict_e4" / "time_log_phases.csv"


def timed(fn: Callable[..., T], *args: Any) -> tuple[T, float, float]:
    """``fn(*args)`` with its wall and CPU seconds."""
    w, c = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - w, time.process_time() - c


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=S02)
    parser.add_argument("--phases", type=Path, default=PHASES)
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    _, imp_wall, imp_cpu = timed(__import__, "neurokit2")

    from rekindle.analysis.core import AnalysisConfig  # noqa: PLC0415
    from rekindle.analysis.evaluate import read_phases  # noqa: PLC0415
    from rekindle.analysis.intervals import (  # noqa: PLC0415
        marker_segments,
        phase_segments,
        stretch_metrics,
    )
    from rekindle.analysis.offline import AnalysisResult, run_pipeline  # noqa: PLC0415
    from rekindle.ingest.sources import open_spec  # noqa: PLC0415

    def analyse() -> AnalysisResult:
        name, chunks = open_spec(str(args.source))
        return run_pipeline(chunks, name, keep=("eda", "rr"))

    result, an_wall, an_cpu = timed(analyse)
    hours = ((result.end or 0.0) - (result.start or 0.0)) / 3600
    cfg = AnalysisConfig()
    eda, rr = result.signals.get("eda"), result.signals.get("rr")
    stretches = [("episode", ep.onset, ep.offset) for ep in result.episodes]
    stretches += [
        ("segment", s.start, s.end)
        for s in marker_segments(result.markers, result.start, result.end)
    ]
    phases = [
        (p.phase, p.start, p.end) for p in read_phases(args.phases) if p.subject == result.name
    ]
    stretches += [("phase", s.start, s.end) for s in phase_segments(phases)]
    costs: dict[str, list[tuple[float, float, float]]] = {}
    for kind, a, b in stretches:
        _, wall, cpu = timed(stretch_metrics, eda, rr, a, b, cfg)
        costs.setdefault(kind, []).append((b - a, wall, cpu))

    print(f"recording: {result.name}, {hours:.2f} h, {len(result.episodes)} episodes")
    print(f"import neurokit2: {imp_wall:.2f} s wall, {imp_cpu:.2f} s CPU (once per process)")
    print(f"analysis (read + core): {an_wall:.2f} s wall, {an_cpu:.2f} s CPU")
    total_w = total_c = 0.0
    for kind, rows in costs.items():
        w = [r[1] for r in rows]
        c = [r[2] for r in rows]
        mean_s = statistics.mean(r[0] for r in rows)
        total_w += sum(w)
        total_c += sum(c)
        print(
            f"{kind:<8} x{len(rows):>2}: per item median {statistics.median(w) * 1000:.0f} ms wall "
            f"(max {max(w) * 1000:.0f} ms, mean stretch {mean_s:.0f} s),"
            f" total {sum(w):.2f} s wall / {sum(c):.2f} s CPU"
        )
    print(
        f"metrics total: {total_w:.2f} s wall, {total_c:.2f} s CPU = "
        f"{total_w / an_wall:.2f}x the analysis ({(total_w + imp_wall) / an_wall:.2f}x with import)"
    )


if __name__ == "__main__":
    main()
