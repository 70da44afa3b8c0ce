"""Speed of the chance level in services/analysis/scoring.py: 19 subjects x 200 draws.

Builds 19 synthetic one-hour protocols (Stroop, interview, hyperventilation) with onsets at
5 per hour, then times :func:`pool` (vectorised draws) against a naive pure-Python loop over
draws, onsets and windows computing the same chance level from the same offsets, and checks
that both give the same figure.

Run: ``.venv/bin/python benchmarks/scoring_chance.py [--subjects 19] [--draws 200]``.
"""

from __future__ import annotations

import argparse
import time
import zlib

import numpy as np

from rekindle.analysis.scoring import Detection, Interval, Phase, SubjectScore, pool, score_subject


def subjects(n: int, seed: int) -> list[SubjectScore]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        name = f"S{i:02d}"
        tasks = [
            Interval(name, "stroop", 1000.0, 1300.0),
            Interval(name, "interview", 2000.0, 2600.0),
            Interval(name, "hyperventilation", 3000.0, 3120.0),
        ]
        phases = [Phase(name, "relax_after_stroop", 1300.0, 1600.0)]
        onsets = np.sort(rng.uniform(420.0, 3600.0, size=rng.poisson(5 * 3180 / 3600)))
        dets = [Detection("arousal", float(t), float(t) + 60.0) for t in onsets]
        t = np.arange(0.0, 3600.0)
        out.append(score_subject(name, dets, tasks, phases, t, 70.0 + 0 * t, (420.0, 3600.0)))
    return out


def naive_chance(scores: list[SubjectScore], draws: int, seed: int) -> float:
    """The same chance level with Python loops (same offsets as :func:`chance_hits`)."""
    n = hits = 0
    for s in scores:
        lo, hi = s.scorable
        rng = np.random.default_rng((seed, zlib.crc32(s.subject.encode("utf-8"))))
        offsets = [float(u) for u in rng.uniform(0.0, hi - lo, size=draws)]
        windows = [(t.window_start, t.end) for t in s.tasks if t.group == "hit"]
        n += len(windows) * draws
        for u in offsets:
            shifted = [lo + (x - lo + u) % (hi - lo) for x in s.onsets]
            hits += sum(any(a <= x < b for x in shifted) for a, b in windows)
    return hits / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, default=19)
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    scores = subjects(args.subjects, seed=1)
    best = best_naive = float("inf")
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        pooled = pool(scores, draws=args.draws, seed=0)
        best = min(best, time.perf_counter() - t0)
        t0 = time.perf_counter()
        naive = naive_chance(scores, args.draws, 0)
        best_naive = min(best_naive, time.perf_counter() - t0)
    print(f"{args.subjects} subjects x {args.draws} draws, best of {args.repeat}")
    print(f"pool (vectorised):  {best * 1000:8.2f} ms   chance {pooled.chance:.4f}")
    print(f"naive Python loops: {best_naive * 1000:8.2f} ms   chance {naive:.4f}")
    print(f"ratio naive / vectorised: {best_naive / best:.1f}x")
    if abs(naive - pooled.chance) > 1e-9:
        raise SystemExit("the naive and vectorised chance levels differ")


if __name__ == "__main__":
    main()
