"""Outputs must not depend on how the data were cut into batches."""

from __future__ import annotations

from functools import cache

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rekindle.analysis.core import AnalysisConfig, Event, SampleBatch
from tests.analysis_core.helpers import comparable, episodes, merge, rows, run, split
from tests.analysis_core.synth import Session, make_session, one_second_batches

# A short session (baseline shortened so that episodes happen) keeps each example fast. The
# batches below span up to 10 s (live publishers send <= 1 s): merged by their start, a stream's
# batch can begin 10 s behind the newest sample, so the lateness allowance must be 10 s.
CONFIG = AnalysisConfig(settle_s=30.0, lateness_s=10.0)
SHORT = dict(duration=900.0)


@cache
def session() -> Session:
    from tests.analysis_core.synth import Scripted  # noqa: PLC0415

    return make_session(7, episodes=(Scripted(400.0, 150.0),), **SHORT)


@cache
def reference() -> tuple[object, ...]:
    return tuple(comparable(run(one_second_batches(session()), CONFIG)))


def test_reference_is_not_trivial() -> None:
    events: list[Event] = run(one_second_batches(session()), CONFIG)
    assert len(rows(events)) >= 890
    assert len(episodes(events)) == 1
    assert len(episodes(events, "release")) == 1


def test_whole_recording_in_one_batch_per_stream() -> None:
    # Each stream as a single batch: the lateness allowance must cover the whole recording,
    # otherwise the first stream's batch would make the others late.
    s = session()
    cfg = AnalysisConfig(settle_s=30.0, lateness_s=s.duration + 1)
    whole = [SampleBatch(name, "sim", t, v) for name, t, v in s.streams()]  # type: ignore[arg-type]
    one_s = run(one_second_batches(s), cfg)
    assert comparable(run(whole, cfg)) == comparable(one_s)
    # and the lateness allowance itself changes nothing but timing
    assert comparable(one_s) == list(reference())


def test_single_samples() -> None:
    s = session()
    batches = merge(b for name, t, v in s.streams() for b in split(name, "sim", t, v, [1]))
    assert comparable(run(batches, CONFIG)) == list(reference())


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    eda_sizes=st.lists(st.integers(1, 40), min_size=1, max_size=8),
    hr_sizes=st.lists(st.integers(1, 10), min_size=1, max_size=8),
    rr_sizes=st.lists(st.integers(1, 12), min_size=1, max_size=8),
)
def test_random_batch_sizes(eda_sizes: list[int], hr_sizes: list[int], rr_sizes: list[int]) -> None:
    s = session()
    sizes = {"eda": eda_sizes, "hr": hr_sizes, "rr": rr_sizes}
    batches = merge(b for name, t, v in s.streams() for b in split(name, "sim", t, v, sizes[name]))
    assert comparable(run(batches, CONFIG)) == list(reference())


def test_eda_only_one_batch_vs_single_samples() -> None:
    s = session()
    one = run([SampleBatch("eda", "sim", s.eda_t, s.eda)], CONFIG)
    singles = run(split("eda", "sim", s.eda_t, s.eda, [1]), CONFIG)
    assert comparable(one) == comparable(singles)
    assert np.isfinite([r.eda_tonic for r in rows(one) if r.eda_tonic is not None]).all()


@cache
def with_acc() -> tuple[list[tuple[str, np.ndarray, np.ndarray]], tuple[object, ...]]:
    s = session()
    rng = np.random.default_rng(3)
    ta = s.eda_t[0] + np.arange(0.0, s.duration, 1 / 32)
    acc = np.tile([0.0, 0.0, 1.0], (len(ta), 1)) + rng.normal(0, 0.02, (len(ta), 3))
    moving = (ta - ta[0] > 300) & (ta - ta[0] < 330)
    acc[moving] += rng.normal(0, 0.4, (int(moving.sum()), 3))
    streams = [*s.streams(), ("acc", ta, acc)]
    one_s = merge(b for name, t, v in streams for b in split(name, "sim", t, v, _per_second(name)))
    return streams, tuple(comparable(run(one_s, CONFIG)))


def _per_second(name: str) -> list[int]:
    return {"eda": [4], "hr": [1], "rr": [1], "acc": [32]}[name]


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(8, 200), min_size=1, max_size=6))
def test_random_batch_sizes_with_acc(acc_sizes: list[int]) -> None:
    streams, ref = with_acc()
    sizes = {"eda": [7, 3], "hr": [2], "rr": [5, 1], "acc": acc_sizes}
    batches = merge(b for name, t, v in streams for b in split(name, "sim", t, v, sizes[name]))
    assert comparable(run(batches, CONFIG)) == list(ref)
    qualities = [e[8] for e in ref if isinstance(e, tuple) and len(e) == 9]
    assert any(("acc", "degraded") in q for q in qualities)
