"""Operating points of the episode detector on labelled recordings (a sensitivity sweep).

Runs ``rekindle evaluate`` (the same replay and scoring) over a grid of the parameters that trade
sensitivity against false alarms, and prints one line per grid point with issue 9's figures
(services/analysis/scoring.py): Stroop/interview hits, their chance level and margin, median onset
latency, relax false alarms per hour, release recall and precision (nan: undefined). The last
line counts the grid points that meet issue 9's arousal targets.

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
from services.analysis.evaluate import evaluate
from services.analysis.scoring import pool

#: The three Stress-Predict subjects shipped with the tests (a checkout-relative path).
DATA = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "stress_predict_e4"
#: The grid: entry threshold, minimum duration, whether EDA may open an episode alone.
ENTER = (40.0, 50.0, 60.0, 70.0)
MIN_EPISODE = (20.0, 60.0)
EDA_ALONE = (1.0, 0.0)
TARGET_HIT = 0.70
TARGET_MARGIN = 0.40
TARGET_LATENCY_S = 60.0
TARGET_FA_PER_H = 0.5


@dataclass(frozen=True, slots=True)
class Point:
    enter_index: float
    min_episode_s: float
    eda_alone: float
    hits: int
    tasks: int
    hit: float
    chance: float
    margin: float
    latency_median_s: float
    relax_fa_per_h: float
    release_recall: float
    release_precision: float

    @property
    def meets_targets(self) -> bool:
        return (
            self.hit >= TARGET_HIT
            and self.margin >= TARGET_MARGIN
            and self.latency_median_s <= TARGET_LATENCY_S
            and self.relax_fa_per_h <= TARGET_FA_PER_H
        )


def run_point(job: tuple[Path, Path, float, float, float]) -> Point:
    labels, recordings, enter, min_ep, eda_alone = job
    cfg = AnalysisConfig(
        enter_index=enter,
        exit_index=min(AnalysisConfig().exit_index, enter),
        min_episode_s=min_ep,
        eda_alone=eda_alone,
    )
    o = pool(evaluate(labels, recordings, config=cfg))
    return Point(
        enter,
        min_ep,
        eda_alone,
        o.hits,
        o.tasks,
        o.hit,
        o.chance,
        o.margin,
        o.latency_median_s,
        o.relax_fa_per_h,
        o.release_recall,
        o.release_precision,
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
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as executor:
        points = list(executor.map(run_point, grid))
    default = AnalysisConfig()
    print(
        f"{'enter':>5} {'min_s':>5} {'eda_alone':>9} {'stroop+interview':>16} {'hit%':>5} "
        f"{'chance%':>7} {'margin':>6} {'med_onset_s':>11} {'relax_fa/h':>10} {'recall':>6} "
        f"{'precision':>9}"
    )
    for p in points:
        mark = (
            "  <- defaults"
            if (p.enter_index, p.min_episode_s, p.eda_alone)
            == (default.enter_index, default.min_episode_s, default.eda_alone)
            else ""
        )
        print(
            f"{p.enter_index:>5.0f} {p.min_episode_s:>5.0f} {p.eda_alone:>9.0f} "
            f"{f'{p.hits}/{p.tasks}':>16} {100 * p.hit:>5.0f} {100 * p.chance:>7.0f} "
            f"{100 * p.margin:>6.0f} {p.latency_median_s:>11.0f} {p.relax_fa_per_h:>10.2f} "
            f"{100 * p.release_recall:>6.0f} {100 * p.release_precision:>9.0f}{mark}"
        )
    meeting = [p for p in points if p.meets_targets]
    print(
        f"grid points meeting the arousal targets (Stroop+interview hit >= {TARGET_HIT:.0%} with "
        f"margin over chance >= {TARGET_MARGIN * 100:.0f} points, median onset <= "
        f"{TARGET_LATENCY_S:.0f} s, <= {TARGET_FA_PER_H} relax false alarms/h): "
        f"{len(meeting)} of {len(points)}"
    )


if __name__ == "__main__":
    main()
