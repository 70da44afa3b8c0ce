"""Streaming EDA vs NeuroKit2's offline ``eda_process`` on real recordings.

What is compared, and why:

* **SCR peaks.** NeuroKit2's default keeps the phasic peaks whose prominence is at least 10 % of
  the largest prominence *in the whole recording*; a streaming detector cannot know that
  maximum, so it uses an absolute amplitude. The comparison is therefore made at the absolute
  threshold NeuroKit2 effectively applied on that recording (``A = 0.1 * max prominence``):
  NeuroKit2's peaks whose ``SCR_Amplitude`` is >= A against our SCRs whose amplitude is >= A,
  matched within +-1 s, after a 60-s warm-up.
* **Tonic level**: Pearson r between our causal tonic and NeuroKit2's zero-phase tonic at the
  EDA sample times, after the warm-up, on recordings of at least 5 minutes.

Where NeuroKit2 and we disagree, the tests below show why (and that it is NeuroKit2's
choice, not a missed response):

* On 4-Hz wrist EDA NeuroKit2 skips its low-pass (it does so below 7 Hz) and measures
  ``SCR_Amplitude`` from the nearest local minimum of the raw phasic signal, so quantisation
  wiggles cut one rise into several pieces. More importantly its peak filter uses prominence,
  which requires the signal to fall back after a peak: responses that follow each other before
  recovery (typical under stress) are dropped although they are clear rises in its own phasic
  signal. We find NeuroKit2's peaks (recall >= 0.9) and show that our extra ones are such
  responses; strict F1 at NeuroKit2's threshold is 0.42-0.87 on these wrist recordings.
* On the 150-s event-related recording NeuroKit2's zero-phase tonic starts rising seconds
  *before* each stimulus-evoked response (it uses future samples), which no causal method can
  do; the tonic correlation there is ~0.7 and is asserted only as a documented difference.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import neurokit2 as nk
import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
import scipy.signal

from rekindle.analysis.core import EdaDecomposition, SampleBatch, Scr
from tests.analysis_core.helpers import run

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
NK_DIR = FIXTURES / "neurokit2_bio"
E4_DIR = FIXTURES / "stress_predict_e4" / "Raw_data"
T0 = 1_600_000_000.0
WARMUP_S = 60.0
TOL_S = 1.0

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Comparison:
    times: Array
    threshold: float
    nk_peaks: Array  # NeuroKit2 SCR peak times with SCR_Amplitude >= threshold (after warm-up)
    nk_all_peaks: Array  # every NeuroKit2 SCR peak time (any amplitude, after warm-up)
    nk_low_peaks: Array  # NeuroKit2 peaks with amplitude >= threshold / 2
    our_peaks: Array  # our SCR peak times with amplitude >= threshold (after warm-up)
    our_low_peaks: Array  # ours with amplitude >= threshold / 2
    tonic_r: float


def _match(a: Array, b: Array, tol: float = TOL_S) -> int:
    """Greedy one-to-one matches of the times in ``a`` to those in ``b`` within ``tol``."""
    used: set[int] = set()
    hits = 0
    for x in a:
        best = None
        for i, y in enumerate(b):
            if i in used or abs(y - x) > tol:
                continue
            if best is None or abs(y - x) < abs(b[best] - x):
                best = i
        if best is not None:
            used.add(best)
            hits += 1
    return hits


def _f1(ours: Array, ref: Array) -> float:
    tp = _match(ours, ref)
    return 2 * tp / (len(ours) + len(ref)) if len(ours) + len(ref) else float("nan")


def _load(name: str) -> tuple[Array, float]:
    if name.startswith("bio_"):
        values = pd.read_csv(NK_DIR / f"{name}.csv")["EDA"].to_numpy(dtype=np.float64)
        return values, 100.0
    lines = (E4_DIR / name / "EDA.csv").read_text().split()
    return np.array([float(x) for x in lines[2:]]), float(lines[1])


@cache
def compare(name: str) -> Comparison:
    values, fs = _load(name)
    t = T0 + np.arange(len(values)) / fs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NeuroKit2 warns that it skips filtering at 4 Hz
        signals, info = nk.eda_process(values, sampling_rate=int(fs))
    phasic = signals["EDA_Phasic"].to_numpy()
    peaks, _ = scipy.signal.find_peaks(phasic)
    threshold = 0.1 * float(scipy.signal.peak_prominences(phasic, peaks)[0].max())
    nk_idx = np.asarray(info["SCR_Peaks"], dtype=int)
    nk_amp = np.asarray(info["SCR_Amplitude"], dtype=float)
    nk_t = t[nk_idx]
    warm = T0 + WARMUP_S

    events = run([SampleBatch("eda", "dev", t, values)])
    scrs = [e for e in events if isinstance(e, Scr)]
    ours_t = np.array([s.peak for s in scrs])
    ours_a = np.array([s.amplitude for s in scrs])
    dec = [e for e in events if isinstance(e, EdaDecomposition)]
    dt = np.concatenate([d.times for d in dec])
    tonic = np.concatenate([d.tonic for d in dec])
    idx = np.searchsorted(t, dt)
    keep = dt > warm
    r = float(np.corrcoef(tonic[keep], signals["EDA_Tonic"].to_numpy()[idx[keep]])[0, 1])
    after = ours_t > warm
    return Comparison(
        t,
        threshold,
        nk_t[(nk_t > warm) & (nk_amp >= threshold)],
        nk_t[nk_t > warm],
        nk_t[(nk_t > warm) & (nk_amp >= threshold / 2)],
        ours_t[after & (ours_a >= threshold)],
        ours_t[after & (ours_a >= threshold / 2)],
        r,
    )


def test_lab_100hz_event_related_peaks_agree() -> None:
    c = compare("bio_eventrelated_100hz")
    assert len(c.nk_peaks) >= 3
    assert _f1(c.our_peaks, c.nk_peaks) >= 0.9


def test_lab_100hz_resting_no_responses_in_either() -> None:
    # ~8 min of falling skin conductance with no response after the warm-up: both agree.
    c = compare("bio_resting_8min_100hz")
    assert len(c.nk_peaks) == 0
    assert len(c.our_peaks) == 0


@pytest.mark.parametrize("name", ["bio_resting_8min_100hz", "S02", "S05", "S06"])
def test_tonic_correlates(name: str) -> None:
    assert compare(name).tonic_r >= 0.95


@pytest.mark.parametrize("name", ["S02", "S05", "S06"])
def test_wrist_4hz_recall_of_neurokit_peaks(name: str) -> None:
    c = compare(name)
    assert len(c.nk_peaks) >= 10
    # Every NeuroKit2 response is found (amplitude tolerance of a factor 2 at the border).
    assert _match(c.nk_peaks, c.our_low_peaks) / len(c.nk_peaks) >= 0.9


@pytest.mark.parametrize("name", ["S02", "S05", "S06"])
def test_wrist_4hz_extra_peaks_are_responses_neurokit_drops_by_prominence(name: str) -> None:
    c = compare(name)
    values, fs = _load(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        signals, _ = nk.eda_process(values, sampling_rate=int(fs))
    phasic = signals["EDA_Phasic"].to_numpy()
    cand, _ = scipy.signal.find_peaks(phasic)
    prominence = scipy.signal.peak_prominences(phasic, cand)[0]
    extra = [x for x in c.our_peaks if not np.any(np.abs(c.nk_all_peaks - x) <= TOL_S)]
    visible = 0
    for x in extra:
        i = int(np.searchsorted(c.times, x))
        lo, hi = max(0, i - int(5 * fs)), min(len(phasic), i + int(TOL_S * fs) + 1)
        # The response is there in NeuroKit2's own phasic signal (a rise of >= A/2 within 5 s) ...
        visible += phasic[lo:hi].max() - phasic[lo : i + 1].min() >= c.threshold / 2
        # ... but NeuroKit2 drops it: its prominence (which needs the signal to fall back after
        # the peak) stays below the threshold when the next response follows before recovery.
        near = np.abs(c.times[cand] - x) <= TOL_S
        assert prominence[near].max(initial=0.0) < c.threshold
    assert visible >= 0.85 * len(extra)
    # Strict F1 at NeuroKit2's own threshold is therefore below 0.9 on this wrist recording.
    print(f"{name}: strict F1 {_f1(c.our_peaks, c.nk_peaks):.2f}, {len(extra)} extra responses")


def test_neurokit_tonic_anticipates_responses_on_short_event_recording() -> None:
    c = compare("bio_eventrelated_100hz")
    values, fs = _load("bio_eventrelated_100hz")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        signals, _ = nk.eda_process(values, sampling_rate=int(fs))
    nk_tonic = signals["EDA_Tonic"].to_numpy()
    # For the four largest responses NeuroKit2's tonic already rises in the 3 s before their
    # onset while the raw signal does not: the zero-phase filter uses future samples.
    events = run([SampleBatch("eda", "dev", c.times, values)])
    scrs = sorted((e for e in events if isinstance(e, Scr)), key=lambda e: -e.amplitude)[:4]
    assert all(e.amplitude > 2.0 for e in scrs)
    for scr in scrs:
        i = int(np.searchsorted(c.times, scr.onset))
        j = i - int(3 * fs)
        assert nk_tonic[i] - nk_tonic[j] > 0.1
        assert values[i] - values[j] < 0.06
    # This is why the causal tonic correlates less on this 150-s recording (documented).
    assert 0.5 < c.tonic_r < 0.95
