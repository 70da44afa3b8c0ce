"""Lossless packing of the live metrics' raw samples: every float64 comes back bit for bit, the
regular series that the service keeps for hours take a few bytes a sample, and a recorder's
series are those of the samples fed to it, whatever the chunking (also from a checkpoint of the
layout before the packing)."""

from __future__ import annotations

import pickle

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rekindle import contract
from rekindle.analysis.live_metrics import CHUNK, Block, SampleStore, StretchRecorder, _samples
from rekindle.analysis.packing import pack, unpack


def bits(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).view(np.int64)


@given(hnp.arrays(np.float64, st.integers(0, 300), elements=st.floats(allow_nan=True)))
def test_any_float64s_come_back_bit_for_bit(x: np.ndarray) -> None:
    assert np.array_equal(bits(unpack(pack(x))), bits(x))


@given(
    st.integers(0, 6),
    hnp.arrays(np.int64, st.integers(1, 300), elements=st.integers(-(10**9), 10**9)),
)
def test_decimals_come_back_bit_for_bit(d: int, k: np.ndarray) -> None:
    x = np.array([float(f"{v / 10**d:.{d}f}") for v in k.tolist()])  # as JSON text gives them
    p = pack(x)
    assert np.array_equal(bits(unpack(p)), bits(x))
    assert 0 <= p.decimals <= d


def test_regular_series_pack_small() -> None:
    rng = np.random.default_rng(1)
    n = 4096
    aligned = 1.7e9 + np.arange(n) / 4  # 4-Hz times from a whole second
    offset = 1_523_000_000.123456 + np.arange(n) / 4  # as an E4 export's start
    eda = np.round(2.0 + np.cumsum(rng.normal(0, 0.002, n)), 4)  # the simulator's 4 decimals
    beats = 1.7e9 + np.cumsum(rng.normal(0.85, 0.05, n))
    rr = np.round(rng.normal(850, 50, n), 1)
    for x, most in [(aligned, 1.1), (offset, 1.1), (eda, 2.1), (beats, 4.1), (rr, 2.1)]:
        p = pack(x)
        assert np.array_equal(bits(unpack(p)), bits(x))
        assert p.nbytes / n <= most, (p.decimals, p.order, p.body.dtype)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 700), min_size=1, max_size=12), st.integers(0, 2**32 - 1))
def test_store_gives_back_what_was_fed_in_arrival_order(sizes: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    store = SampleStore()
    fed_t, fed_v = [], []
    t = 1.7e9
    for n in sizes:
        times = t + np.sort(rng.uniform(-5.0, 30.0, n))  # out of order across messages
        values = np.round(rng.uniform(0.0, 20.0, n), int(rng.integers(0, 8)))
        store.add(times, values)
        fed_t.append(times)
        fed_v.append(values)
        t += 25.0
    all_t, all_v = np.concatenate(fed_t), np.concatenate(fed_v)
    assert len(store) == len(all_t)
    assert len(store.chunks) == (len(all_t) - 1) // CHUNK
    got_t, got_v = store.candidates(-np.inf, np.inf)
    assert np.array_equal(bits(got_t), bits(all_t))
    assert np.array_equal(bits(got_v), bits(all_v))
    again = pickle.loads(pickle.dumps(store))
    assert np.array_equal(bits(again.candidates(-np.inf, np.inf)[1]), bits(all_v))
    horizon = float(np.median(all_t))
    assert store.prune(horizon) == int((all_t < horizon).sum())
    keep = all_t >= horizon
    got_t, got_v = store.candidates(-np.inf, np.inf)
    assert np.array_equal(bits(got_t), bits(all_t[keep]))
    assert np.array_equal(bits(got_v), bits(all_v[keep]))


def test_recorder_from_a_checkpoint_before_the_packing_has_the_same_series() -> None:
    rng = np.random.default_rng(5)
    rec = StretchRecorder("s", "x")
    blocks = []
    for k in range(900):  # 15 min of 4-Hz EDA, one message per second
        t = 1_700_000_000.0 + k + np.arange(4) / 4
        v = np.round(2.0 + rng.normal(0, 0.01, 4), 6)
        rec.add("eda", "e4", t, v)
        blocks.append(Block(t, v, float(t[0]), float(t[-1])))
    old = StretchRecorder.__new__(StretchRecorder)
    state = {k: v for k, v in vars(rec).items() if k != "stores"}
    old.__dict__.update(state, parts={("eda", "e4"): blocks})
    restored = pickle.loads(pickle.dumps(old))
    assert not hasattr(restored, "parts")
    for a, b in [(1_700_000_100.0, 1_700_000_700.25), (0.0, 2e9)]:
        want, got = rec.series("eda", a, b), restored.series("eda", a, b)
        assert want is not None
        assert got is not None
        assert len(want.times) > 0
        assert np.array_equal(bits(got.times), bits(want.times))
        assert np.array_equal(bits(got.values), bits(want.values))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.integers(1, 80), st.booleans()), min_size=1, max_size=40),
    st.integers(0, 2**32 - 1),
)
def test_queued_messages_give_the_arrays_of_converting_each(
    plan: list[tuple[bool, int, bool]], seed: int
) -> None:
    """A recorder fed whole messages (queued, converted together) holds bit for bit what one
    fed each message's ``_samples`` arrays holds: regular and per-sample times mixed, odd rates,
    and pickled (the checkpoint) at any point, queue included."""
    rng = np.random.default_rng(seed)
    queued, direct = StretchRecorder("s", "x"), StretchRecorder("s", "x")
    t = 1_700_000_000.123
    for regular, n, checkpoint in plan:
        values = tuple(float(v) for v in np.round(rng.uniform(0.0, 30.0, n), 4))
        if regular:
            fs = float(rng.choice([4.0, 3.0, 7.3, 64.0]))
            msg = contract.SampleMessage("s", "x", "eda", "e4", 0, values, t0=t, fs=fs)
        else:
            times = tuple(float(x) for x in t + np.sort(rng.uniform(0.0, 3.0, n)))
            msg = contract.SampleMessage("s", "x", "eda", "e4", 0, values, t=times)
        t += float(rng.uniform(0.5, 4.0))
        queued.add_message(msg)
        direct.add("eda", "e4", *_samples(msg))
        if checkpoint:
            queued = pickle.loads(pickle.dumps(queued))
        assert len(queued.stores["eda", "e4"]) == len(direct.stores["eda", "e4"])
        assert queued.newest == direct.newest
        assert queued.counts == direct.counts
    for a, b in [(0.0, 2e9), (1_700_000_010.0, 1_700_000_030.5)]:
        want, got = direct.series("eda", a, b), queued.series("eda", a, b)
        assert want is not None
        assert got is not None
        assert np.array_equal(bits(got.times), bits(want.times))
        assert np.array_equal(bits(got.values), bits(want.values))
