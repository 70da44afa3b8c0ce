"""The pipeline's vectorised sample times equal the contract's integer nanoseconds exactly."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rekindle import contract
from rekindle.analysis.pipeline import sample_times
from rekindle.analysis.points import sample_times_ns

RATES = st.sampled_from([1.0, 4.0, 25.0, 32.0, 52.0, 64.0, 130.0, 128.0, 1000.0 / 7.0])


@settings(max_examples=300, deadline=None)
@given(
    t0=st.floats(1.0e9, 2.0e9, allow_nan=False),
    fs=RATES,
    n=st.integers(1, 300),
)
def test_regular_times_equal_the_contract(t0: float, fs: float, n: int) -> None:
    msg = contract.samples("c", "s", "ppg", "d", 0, [0.5] * n, t0=t0, fs=fs)
    assert sample_times_ns(msg).tolist() == msg.times_ns()
    assert sample_times(msg).tolist() == [ns / 1e9 for ns in msg.times_ns()]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(1.0e9, 2.0e9, allow_nan=False), min_size=1, max_size=80, unique=True))
def test_irregular_times_equal_the_contract(times: list[float]) -> None:
    times.sort()
    msg = contract.samples("c", "s", "rr", "d", 0, [800.0] * len(times), t=times)
    assert sample_times_ns(msg).tolist() == msg.times_ns()
