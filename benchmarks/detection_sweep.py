"""Operating points of the episode detector on labelled recordings (a sensitivity sweep).

Runs ``rekindle evaluate`` (the same replay and scoring) over a grid of the parameters that trade
sensitivity against false alarms, and prints one line per grid point: hits, hits on the Stroop and
interview tasks, median onset latency, false alarms per hour outside the labelled intervals,
recoveries. The last line counts the grid points that meet issue 3's evaluation targets (every
Stroop and interview interval hit, median onset latency <= 60 s, <= 0.5 false alarms per hour).

This is a map of the trade-off, not a tuning procedure: the defaults are chosen on principle
(docs/method.md) and must not be picked from this table, which covers only the subjects given.

Run: ``.venv/bin/python benchmarks/detection_sweep.py`` (default: the shared Stress-Predict
subjects; ``--labels``/``--recordings`` for others; ``--jobs`` processes, default 2).
"""

from __future__ import annotations

import argparse
import itertools
import logging
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from services.analysis.core import AnalysisConfig
from services.analysis.evaluate import evaluate, overall

SHARED = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "external"
DATA = SHARED / "stress_predict_e4"
#: The grid: entry threshold, minimum duration, whether EDA may open an episode alone.
ENTER = (40.0, 50.0, 60.0, 70.0)
MIN_EPISODE = (20.0, 60.0)
EDA_ALONE = (1.0, 0.0)
TASKS = ("stroop", "interview")
TARGET_LATENCY_S = 60.0
TARGET_FA_PER_H = 0.5


@dataclass(frozen=True, slots=True)
class Point:
    enter_index: float
    min_episode_s: float
    eda_alone: float
    hits: int
    intervals: int
    task_hits: int
    task_intervals: int
    median_latency_s: float | None
    false_alarms: int
    fa_per_h: float
    recoveries: int

    @property
    def meets_targets(self) -> bool:
        return (
            self.task_hits == self.task_intervals
            and self.median_latency_s is not None
            and self.median_latency_s <= TARGET_LATENCY_S
            and self.fa_per_h <= TARGET_FA_PER_H
        )


def run_point(job: tuple[Path, Path, float, float, float]) -> Point:
    labels, recordings, enter, min_ep, eda_alone = job
    cfg = AnalysisConfig(
        enter_index=enter,
        exit_index=min(AnalysisConfig().exit_index, enter),
        min_episode_s=min_ep,
        eda_alone=eda_alone,
    )
    scores = evaluate(labels, recordings, None, cfg)
    o = overall(scores)
    tasks = [t for s in scores for t in s.tasks if t.task in TASKS]
    return Point(
        enter,
        min_ep,
        eda_alone,
        o.hits,
        o.intervals,
        sum(t.hit for t in tasks),
        len(tasks),
        o.median_latency_s,
        o.false_alarms,
        o.false_alarms_per_hour,
        o.recoveries,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--labels", type=Path, default=DATA / "labels_stress_intervals.csv")
    parser.add_argument("--recordings", type=Path, default=DATA / "Raw_data")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    grid = [
        (args.labels, args.recordings, e, m, a)
        for e, m, a in itertools.product(ENTER, MIN_EPISODE, EDA_ALONE)
    ]
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        points = list(pool.map(run_point, grid))
    default = AnalysisConfig()
    print(
        f"{'enter':>5} {'min_s':>5} {'eda_alone':>9} {'hits':>5} {'stroop+interview':>16} "
        f"{'med_onset_s':>11} {'false_alarms':>12} {'fa_per_h':>8} {'recovery':>8}"
    )
    for p in points:
        mark = (
            "  <- defaults"
            if (p.enter_index, p.min_episode_s, p.eda_alone)
            == (default.enter_index, default.min_episode_s, default.eda_alone)
            else ""
        )
        lat = "-" if p.median_latency_s is None else f"{p.median_latency_s:.0f}"
        print(
            f"{p.enter_index:>5.0f} {p.min_episode_s:>5.0f} {p.eda_alone:>9.0f} "
            f"{f'{p.hits}/{p.intervals}':>5} {f'{p.task_hits}/{p.task_intervals}':>16} "
            f"{lat:>11} {p.false_alarms:>12} {p.fa_per_h:>8.2f} "
            f"{f'{p.recoveries}/{p.intervals}':>8}{mark}"
        )
    meeting = [p for p in points if p.meets_targets]
    print(
        f"grid points meeting the targets (all Stroop+interview hit, median onset <= "
        f"{TARGET_LATENCY_S:.0f} s, <= {TARGET_FA_PER_H} false alarms/h): "
        f"{len(meeting)} of {len(points)}"
    )


if __name__ == "__main__":
    main()
