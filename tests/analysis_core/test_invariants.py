"""Properties that must hold for any input (Hypothesis): bounded index, no episode on lost
signal, no crash on NaN runs, gaps, constant, negative or absurd values."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rekindle.analysis.core import (
    AnalysisConfig,
    Episode,
    Event,
    FeatureRow,
    GapInput,
    MarkerInput,
    QualityChange,
    SampleBatch,
)
from tests.analysis_core.helpers import episodes, merge, rows, run, split
from tests.analysis_core.synth import T0, Scripted, make_session

FAST = AnalysisConfig(settle_s=10.0)
PROFILE = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# One segment of a signal: a kind and a length in seconds.
segment = st.tuples(
    st.sampled_from(["normal", "nan", "constant", "negative", "absurd", "zero", "gap", "surge"]),
    st.integers(1, 120),
)


def _signal(kind: str, n: int, base: float, rng: np.random.Generator, scale: float) -> np.ndarray:
    if kind == "nan":
        return np.full(n, np.nan)
    if kind == "constant":
        return np.full(n, base)
    if kind == "negative":
        return -np.abs(rng.normal(base, scale, n))
    if kind == "absurd":
        return rng.choice([1e9, -1e9, np.inf, -np.inf, 1e-300], n)
    if kind == "zero":
        return np.zeros(n)
    if kind == "surge":
        return base * 1.5 + rng.normal(0, scale, n)
    return base + rng.normal(0, scale, n)


def _build(segments: list[tuple[str, int]], seed: int) -> tuple[list[SampleBatch], float]:
    rng = np.random.default_rng(seed)
    batches: list[SampleBatch] = []
    t = 0.0
    for kind, secs in segments:
        if kind != "gap":
            te = T0 + t + np.arange(0, secs, 0.25)
            th = T0 + t + np.arange(0, secs, 1.0)
            batches += split("eda", "w", te, _signal(kind, len(te), 2.0, rng, 0.05), [4])
            batches += split("hr", "w", th, _signal(kind, len(th), 70.0, rng, 2.0), [1])
            tr = T0 + t + np.cumsum(np.full(int(secs * 1.2), 0.83))
            tr = tr[tr < T0 + t + secs]
            batches += split("rr", "s", tr, _signal(kind, len(tr), 830.0, rng, 30.0), [1])
        t += secs
    return merge(batches), t


def _check(events: list[Event]) -> None:
    feature_rows = rows(events)
    by_time = {r.time: r for r in feature_rows}
    for r in feature_rows:
        assert r.time == math.floor(r.time)
        if r.arousal_index is not None:
            assert 0.0 <= r.arousal_index <= 100.0
            assert math.isclose(sum(r.contributions.values()), r.arousal_index, abs_tol=1e-9)
            assert all(v >= 0.0 for v in r.contributions.values())
        for value in (r.hr, r.rmssd, r.eda_tonic, r.scr_rate):
            assert value is None or math.isfinite(value)
        assert set(r.quality.values()) <= {"good", "degraded", "lost"}
    for e in episodes(events):
        assert e.onset <= e.peak <= e.offset
        assert 0.0 <= e.peak_index <= 100.0
        # No second of an episode rests on lost signal only.
        t = e.onset
        while t < e.offset:
            row = by_time.get(t)
            if row is not None:
                assert row.arousal_index is not None
                assert any(row.quality.get(s) != "lost" for s in ("eda", "hr", "rr"))
            t += 1.0
    for q in events:
        if isinstance(q, QualityChange):
            assert q.state in ("good", "degraded", "lost")


@PROFILE
@given(st.lists(segment, min_size=1, max_size=8), st.integers(0, 2**16))
def test_random_segments_never_crash_and_stay_bounded(
    segments: list[tuple[str, int]], seed: int
) -> None:
    batches, _ = _build([("normal", 90), *segments], seed)
    _check(run(batches, FAST))


@PROFILE
@given(st.integers(0, 2**16), st.integers(30, 300))
def test_no_episode_on_lost_signal(seed: int, lost_s: int) -> None:
    # A strong surge whose signal is then lost (electrode off: EDA 0, HR absent): the open
    # episode must end where the signal was lost, and nothing starts while it is lost.
    s = make_session(seed % 7, duration=900.0, episodes=(Scripted(400.0, 300.0),))
    cut_lo, cut_hi = T0 + 500.0, T0 + 500.0 + lost_s
    eda = s.eda.copy()
    eda[(s.eda_t >= cut_lo) & (s.eda_t < cut_hi)] = 0.0
    keep_hr = (s.hr_t < cut_lo) | (s.hr_t >= cut_hi)
    keep_rr = (s.rr_t < cut_lo) | (s.rr_t >= cut_hi)
    batches = merge(
        split("eda", "w", s.eda_t, eda, [4])
        + split("hr", "w", s.hr_t[keep_hr], s.hr[keep_hr], [1])
        + split("rr", "s", s.rr_t[keep_rr], s.rr[keep_rr], [1])
    )
    cfg = AnalysisConfig(settle_s=30.0)
    events = run(batches, cfg)
    _check(events)
    lost_rows = [r for r in rows(events) if cut_lo + 6 <= r.time < cut_hi]
    assert all(r.arousal_index is None for r in lost_rows)
    for e in episodes(events):
        assert e.offset <= cut_lo + 6 or e.onset >= cut_hi


def test_constant_and_flat_signals_are_lost_not_aroused() -> None:
    t = T0 + np.arange(0, 900, 0.25)
    events = run(split("eda", "w", t, np.full(len(t), 1.5), [4]), FAST)
    assert all(r.quality["eda"] == "lost" for r in rows(events)[40:])
    assert episodes(events) == []


def test_markers_gaps_and_late_data_are_handled() -> None:
    s = make_session(3, duration=600.0, episodes=())
    keep = (s.hr_t < T0 + 300.0) | (s.hr_t >= T0 + 320.0)
    batches: list[SampleBatch | MarkerInput | GapInput] = list(
        merge(
            split("eda", "w", s.eda_t, s.eda, [4]) + split("hr", "w", s.hr_t[keep], s.hr[keep], [1])
        )
    )
    batches.insert(100, MarkerInput(T0 + 20.0, "dose given"))
    batches.insert(420, MarkerInput(T0 + 200.0, "tears"))
    # the ingest side reports the hole as soon as it knows (before the watermark passes it)
    batches.insert(600, GapInput("hr", "w", T0 + 300.0, T0 + 320.0))
    # a late batch (older than what was already processed) is counted and ignored
    batches.append(SampleBatch("eda", "w", np.array([T0 + 5.0]), np.array([3.0])))
    events = run(batches, FAST)
    _check(events)
    gap_rows = [r for r in rows(events) if T0 + 301 <= r.time <= T0 + 320]
    assert gap_rows
    assert all(r.quality["hr"] == "lost" for r in gap_rows)


def test_ecg_ppg_temp_and_unknown_devices_are_ignored() -> None:
    t = T0 + np.arange(0, 30, 0.01)
    events = run([SampleBatch("ecg", "x", t, np.sin(t)), SampleBatch("ppg", "x", t, np.cos(t))])
    assert events == []


def test_acc_motion_degrades_eda_quality() -> None:
    t = T0 + np.arange(0, 120, 0.25)
    ta = T0 + np.arange(0, 120, 1 / 32)
    rng = np.random.default_rng(1)
    acc = np.tile([0.0, 0.0, 1.0], (len(ta), 1))
    moving = (ta >= T0 + 60) & (ta < T0 + 70)
    acc[moving] += rng.normal(0, 0.5, (int(moving.sum()), 3))
    batches = merge(
        split("eda", "w", t, 2 + 0.01 * rng.normal(size=len(t)), [4])
        + split("acc", "w", ta, acc, [32])
    )
    events = run(batches, FAST)
    q = {r.time: r.quality for r in rows(events)}
    assert q[T0 + 65]["eda"] == "degraded"
    assert q[T0 + 65]["acc"] == "degraded"
    assert q[T0 + 40]["eda"] == "good"
    assert isinstance(events[-1], FeatureRow | Episode | QualityChange)
