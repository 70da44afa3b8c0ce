"""The EDA reference quantile kept sorted as its window moves equals sorting the window every
second, and a quantile restored from a checkpoint without its sorted list rebuilds it."""

from __future__ import annotations

import math
import pickle
import random
from bisect import bisect_right
from operator import itemgetter

import pytest

from rekindle.analysis.core import EdaDecomposition, SessionAnalyzer
from rekindle.analysis.core.arousal import _Quantile
from tests.analysis_core.helpers import comparable, episodes, run
from tests.analysis_core.synth import make_session, one_second_batches


def recomputed(
    pushes: list[tuple[int, float | None]], window: float, gap: float, q: float, sign: float
) -> list[float | None]:
    """The quantile of each second by sorting the window's values every time (the method's
    definition, docs/method.md)."""
    out: list[float | None] = []
    kept: list[tuple[int, float]] = []
    for k, v in pushes:
        if v is not None:
            kept.append((k, sign * v))
        kept = [(kk, x) for kk, x in kept if kk >= k - window - gap]
        m = bisect_right(kept, k - gap, key=itemgetter(0))
        vals = sorted(x for _, x in kept[:m])
        if len(vals) < max(1, math.ceil(window / 2)):
            out.append(None)
        else:
            out.append(sign * vals[math.floor(q * (len(vals) - 1))])
    return out


def series(seed: int, n: int) -> list[tuple[int, float | None]]:
    rng = random.Random(seed)
    pushes: list[tuple[int, float | None]] = []
    level = 0.0
    for k in range(1000, 1000 + n):
        level += rng.gauss(0.0, 0.05)
        # lost stretches, repeated values and exact zeros as the averaged ln EDA can have
        lost = rng.random() < 0.1 or (k // 97) % 5 == 0
        value = None if lost else rng.choice([level, level, round(level, 1), 0.0])
        pushes.append((k, value))
    return pushes


@pytest.mark.parametrize(
    ("window", "gap", "q", "sign"),
    [(60.0, 10.0, 0.2, 1.0), (30.0, 0.0, 0.5, -1.0), (5.0, 2.5, 0.0, 1.0)],
)
@pytest.mark.parametrize("seed", range(3))
def test_kept_sorted_equals_sorting_every_second(
    window: float, gap: float, q: float, sign: float, seed: int
) -> None:
    pushes = series(seed, 800)
    quantile = _Quantile(window, gap, q, sign)
    got = [quantile.push(k, v) for k, v in pushes]
    assert got == recomputed(pushes, window, gap, q, sign)
    assert any(g is not None for g in got)
    assert any(g is None for g in got)


def test_restored_without_its_sorted_list_rebuilds_it() -> None:
    """A checkpoint written before the sorted list was kept restores a quantile whose list is
    None (the restore makes a fresh one, then sets the saved attributes): it rebuilds the list
    at its next second and goes on as one that ran through."""
    pushes = series(7, 600)
    straight = _Quantile(60.0, 10.0, 0.2, 1.0)
    expected = [straight.push(k, v) for k, v in pushes]
    first = _Quantile(60.0, 10.0, 0.2, 1.0)
    got = [first.push(k, v) for k, v in pushes[:300]]
    resumed = pickle.loads(pickle.dumps(first))
    resumed._sorted = None  # (as restored from the older checkpoint)
    got += [resumed.push(k, v) for k, v in pushes[300:]]
    assert got == expected


def test_without_the_decomposition_the_other_events_are_the_same() -> None:
    """``SessionAnalyzer(decomposition=False)`` (the offline analysis) leaves out only the
    per-second EDA decomposition: every other event is the same, in the same order."""
    session = make_session(3)
    full = run(one_second_batches(session))
    lean = run(one_second_batches(session), analyzer=SessionAnalyzer(decomposition=False))
    assert sum(isinstance(e, EdaDecomposition) for e in full) > 2000
    assert not any(isinstance(e, EdaDecomposition) for e in lean)
    others = [e for e in full if not isinstance(e, EdaDecomposition)]
    assert comparable(lean) == comparable(others)
    assert episodes(lean)
