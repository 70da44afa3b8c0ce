"""Host-time stamping: seeded jitter, known answers."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rekindle.ingest.ble.timestamps import BeatClock, ClockSettings, MonotonicStamp, RegularClock


def test_regular_clock_recovers_sample_times_under_jitter() -> None:
    rng = random.Random(7)
    fs, n = 4.0, 2
    clock = RegularClock(fs)
    errors, raw_errors = [], []
    for p in range(400):
        true_t0 = 1000.0 + p * n / fs
        # the last sample is taken at true_t0 + (n-1)/fs; delivery adds 5-150 ms of latency
        t_rx = true_t0 + (n - 1) / fs + rng.uniform(0.005, 0.150)
        errors.append(clock.stamp(t_rx, n) - true_t0)
        raw_errors.append(t_rx - (n - 1) / fs - true_t0)
    settled, raw = errors[50:], raw_errors[50:]
    # the clock tracks the low edge of the latency: smaller and steadier error than raw
    assert all(0.0 <= e < 0.1 for e in settled)
    assert sum(settled) / len(settled) < 0.5 * sum(raw) / len(raw)
    assert max(settled) - min(settled) < 0.6 * (max(raw) - min(raw))


def test_regular_clock_follows_a_slow_device_and_resyncs_after_a_jump() -> None:
    fs = 4.0
    clock = RegularClock(fs, ClockSettings(alpha=0.1, resync_s=1.0))
    true_fs = 3.96  # device clock 1 % slow: packets arrive progressively later
    t0s = [clock.stamp(500.0 + (2 * p + 1) / true_fs, 2) for p in range(300)]
    last_truth = 500.0 + 2 * 299 / true_fs
    assert abs(t0s[-1] - last_truth) < 0.1
    assert clock.stamp(last_truth + 30.0, 2) == pytest.approx(last_truth + 30.0 - 0.25)


@given(st.lists(st.tuples(st.floats(0.0, 2.0), st.integers(1, 8)), min_size=1, max_size=60))
def test_regular_clock_is_monotonic_and_never_far_in_the_future(
    steps: list[tuple[float, int]],
) -> None:
    clock = RegularClock(8.0)
    t_rx, last_end = 100.0, None
    for dt, n in steps:
        t_rx += dt
        overruns = clock.overruns
        t0 = clock.stamp(t_rx, n)
        end = t0 + (n - 1) / 8.0
        if last_end is not None and clock.overruns == overruns:
            assert t0 > last_end
        assert end <= t_rx + clock.settings.resync_s + 1e-9
        last_end = end


def test_beat_clock_keeps_rr_spacing_and_anchors_to_host_time() -> None:
    rng = random.Random(3)
    clock = BeatClock()
    beats, t = [], 2000.0
    for _ in range(300):
        rr = rng.uniform(700, 1000)
        t += rr / 1000
        beats.append((t, rr))
    stamped: list[float] = []
    raw_err: list[float] = []
    truth: list[float] = []
    # the strap notifies once a second with the beats of the last second
    for second in range(2001, 2250):
        batch = [(bt, rr) for bt, rr in beats if second - 1 < bt <= second]
        if not batch:
            continue
        t_rx = second + rng.uniform(0.005, 0.05)
        stamped += clock.stamp(t_rx, [rr for _, rr in batch])
        truth += [bt for bt, _ in batch]
        raw_err.append(t_rx - batch[-1][0])
    err = [s - t for s, t in zip(stamped, truth, strict=True)][20:]
    assert all(-1e-9 <= e < 1.05 for e in err)
    # raw stamping puts the last beat at the receive time: up to 1 s late, on average ~0.5 s
    assert sum(err) / len(err) < 0.5 * sum(raw_err) / len(raw_err)
    assert stamped == sorted(stamped)


def test_beat_clock_reset_resyncs() -> None:
    clock = BeatClock()
    assert clock.stamp(10.0, [800.0, 1000.0]) == pytest.approx([9.0, 10.0])
    clock.reset()
    assert clock.stamp(100.0, [900.0]) == [100.0]
    assert clock.stamp(100.5, []) == []


def test_monotonic_stamp() -> None:
    m = MonotonicStamp()
    assert m.stamp(5.0) == 5.0
    assert m.stamp(4.0) > 5.0
    assert m.stamp(6.0) == 6.0


def test_regular_clock_with_a_wrong_nominal_rate_follows_receive_times() -> None:
    clock = RegularClock(4.0)  # the device really sends 8 Hz, two samples per packet
    t0s = [clock.stamp(100.0 + 0.25 * p, 2) for p in range(200)]
    assert clock.overruns > 0
    assert abs(t0s[-1] - (100.0 + 0.25 * 199 - 0.25)) <= 1.0 + 0.5  # never far in the future
