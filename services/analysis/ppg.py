"""Beats from PPG: RR intervals derived from a wrist BVP/PPG stream, causal with a bounded lag.

Wrist IBI is missing for much of many sessions (the E4 drops every beat it cannot trust: S02 of
Stress-Predict has RR for 774 of its 2,962 s) while the 64-Hz BVP it derives them from is there.
:class:`PpgBeatDetector` turns one device's PPG into beats and RR intervals:

* **Windows.** Every ``ppg_hop_s`` of data time (window ends on a fixed grid of unix time,
  ``k * ppg_hop_s``) the last ``ppg_window_s`` of PPG are cleaned as NeuroKit2's ``ppg_clean``
  cleans them (Elgendi et al. 2013: 0.5-8 Hz Butterworth band-pass, zero-phase inside the
  window; :func:`ppg_clean`, bit-identical) and the systolic peaks found by NeuroKit2's
  ``ppg_findpeaks`` method (Elgendi et al. 2013; :func:`elgendi_peaks`, ported so that the
  analysis does not import NeuroKit2, and tested equal to it). Each beat is
  timed at its **pulse foot** (the minimum of the cleaned pulse in the 0.4 s before its peak):
  the onset of the pulse, which is also where the Empatica E4 stamps its IBI (measured on the
  Stress-Predict recordings: the median offset from our foot to the E4's beat is 0 samples).
* **Causal, bounded lag.** A window ending at ``T`` commits only the feet in
  ``[T - ppg_margin_s - ppg_hop_s, T - ppg_margin_s)``: every foot is committed by exactly one
  window, at least ``ppg_margin_s`` from the window's right edge (where the zero-phase filter
  would need the future) and with ``ppg_window_s - ppg_margin_s - ppg_hop_s`` of history on its
  left. A window is processed when the first sample at or after ``T`` arrives, so a beat's RR
  interval is out at most ``ppg_margin_s + ppg_hop_s`` seconds of data time after the beat
  (3.5 s with the defaults) plus one sample period. Nothing depends on how the samples were
  batched (the windows sit on the time grid, not on message boundaries).
* **Quality gate.** Each pulse (0.3 s before to 0.4 s after its peak) is correlated with the
  window's mean pulse: the template-matching signal-quality index of Orphanidou et al. (2015),
  which NeuroKit2's ``ppg_quality(method="templatematch")`` also implements (ours is the same
  idea vectorised: NeuroKit2's costs ~19 ms per window, ours ~0.05 ms). A beat whose correlation
  is below ``ppg_min_quality`` is rejected, and an interval is only formed between two
  consecutive accepted beats of the same contiguous stretch of PPG (no gap between them).
* **Output.** Intervals (ms) stamped at the foot that ends them, as the E4's IBI: the analyzer
  takes them as the ``rr_ppg`` stream, through the same RR artefact correction as device RR.

The detection runs here, once per window (about 0.2 ms of CPU per window, ~0.35 s per
session-hour with the defaults, plus ~0.65 CPU-s once per process to import ``scipy.signal``;
``benchmarks/offline_analyze.py`` measures it), not in the core's
per-second path: this module sits beside the core, between the wire messages and the analyzer
(:class:`DerivedBeats`), in the live service and offline alike. It does no I/O.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from rekindle.analysis.core import AnalysisConfig, AnalyzerInput, SampleBatch

F64Array = npt.NDArray[np.float64]
_EMPTY = np.empty(0, dtype=np.float64)

#: The derived stream's name in the analyzer (its quality appears as ``quality_rr_ppg``).
DERIVED_STREAM: Final = "rr_ppg"
#: Pulse segment around each systolic peak that is matched against the template (s).
PULSE_BEFORE_S = 0.3
PULSE_AFTER_S = 0.4
#: The foot is searched this long before each peak (s): longer than the foot-to-peak time
#: of a wrist pulse (about 0.1-0.3 s).
FOOT_SEARCH_S = 0.4
#: Fewest peaks a window needs for a template (fewer: no beats from it).
MIN_PEAKS = 3
#: A jump between samples larger than this many sample periods is a gap in the PPG.
GAP_PERIODS = 3.0


@dataclass(frozen=True, slots=True)
class Beats:
    """Committed beats: foot times (unix s), their template correlation, whether each follows
    the previous committed beat within one contiguous stretch of PPG (``linked``), and the RR
    intervals (ms) formed, stamped at the foot that ends each."""

    times: list[float]
    quality: list[float]
    linked: list[bool]
    rr_times: list[float]
    rr_ms: list[float]

    def extend(self, other: Beats) -> None:
        self.times.extend(other.times)
        self.quality.extend(other.quality)
        self.linked.extend(other.linked)
        self.rr_times.extend(other.rr_times)
        self.rr_ms.extend(other.rr_ms)


def intervals(
    times: list[float], quality: list[float], linked: list[bool], min_quality: float
) -> tuple[list[float], list[float]]:
    """The gate: an RR interval (ms, at the later foot) between each two consecutive linked
    beats whose template correlations both reach ``min_quality``."""
    out_t: list[float] = []
    out_rr: list[float] = []
    for i in range(1, len(times)):
        if linked[i] and quality[i] >= min_quality and quality[i - 1] >= min_quality:
            out_t.append(times[i])
            out_rr.append((times[i] - times[i - 1]) * 1000.0)
    return out_t, out_rr


def pulse_quality(clean: F64Array, peaks: npt.NDArray[np.intp], fs: float) -> F64Array:
    """Template-matching quality of each pulse (Orphanidou et al. 2015): the correlation of the
    pulse around each peak with the mean pulse of ``clean``; ``-1`` where the pulse does not fit
    in the signal or is flat."""
    a = max(1, round(PULSE_BEFORE_S * fs))
    b = max(1, round(PULSE_AFTER_S * fs))
    r = np.full(len(peaks), -1.0)
    inside = (peaks >= a) & (peaks + b < len(clean))
    if not inside.any():
        return r
    segs = clean[peaks[inside][:, None] + np.arange(-a, b)[None, :]]
    segs = segs - segs.mean(axis=1, keepdims=True)
    template = segs.mean(axis=0)
    num = segs @ template
    den = np.sqrt((segs * segs).sum(axis=1) * float(template @ template))
    ok = den > 0
    r_in = np.full(len(num), -1.0)
    r_in[ok] = num[ok] / den[ok]
    r[inside] = r_in
    return r


def pulse_feet(clean: F64Array, peaks: npt.NDArray[np.intp], fs: float) -> list[int]:
    """The pulse foot of each peak: the sample of the (first) minimum of ``clean`` in the
    ``FOOT_SEARCH_S`` before it, peak included."""
    w = max(1, round(FOOT_SEARCH_S * fs))
    out = np.empty(len(peaks), dtype=np.intp)
    full = peaks >= w  # (the whole span lies in the signal: one argmin over all such peaks)
    if full.any():
        starts = peaks[full] - w
        out[full] = starts + np.argmin(clean[starts[:, None] + np.arange(w + 1)], axis=1)
    for i in np.flatnonzero(~full).tolist():
        out[i] = int(np.argmin(clean[: int(peaks[i]) + 1]))
    return [int(f) for f in out]


class PpgBeatDetector:
    """One device's PPG (arbitrary units) -> beats and RR intervals. See the module docstring.

    ``feed`` takes samples in time order and returns the beats and intervals that became final;
    ``finish`` processes what remains at the end of data.
    """

    def __init__(self, config: AnalysisConfig, device: str) -> None:
        self.cfg = config
        self.device = device
        self._t = _EMPTY
        self._x = _EMPTY
        self._next_end: float | None = None
        #: the last committed beat: (foot time, template correlation); None after a reset
        self._last: tuple[float, float] | None = None
        self.windows = 0
        self.beats = 0
        self.rejected = 0
        self.out_of_order = 0

    def feed(self, times: F64Array, values: F64Array) -> Beats:
        """Add samples (unix s, in order); return the beats and intervals that became final."""
        out = Beats([], [], [], [], [])
        if len(self._t) and len(times):
            keep = times > self._t[-1]
            if not keep.all():
                self.out_of_order += int((~keep).sum())
                times, values = times[keep], values[keep]
        if not len(times):
            return out
        self._t = np.concatenate([self._t, times]) if len(self._t) else times
        self._x = np.concatenate([self._x, values]) if len(self._x) else values
        hop, window = self.cfg.ppg_hop_s, self.cfg.ppg_window_s
        if self._next_end is None:
            self._next_end = (math.floor(float(self._t[0]) / hop) + 1) * hop
        last = float(self._t[-1])
        while last >= self._next_end:
            end = self._next_end
            i0 = int(np.searchsorted(self._t, end - window))
            if i0 < len(self._t) and self._t[i0] >= end:
                # nothing in this window (a silence): jump to the first window with data
                self._last = None
                self._next_end = (math.floor(float(self._t[i0]) / hop) + 1) * hop
                continue
            out.extend(self._window(end))
            self._next_end = end + hop
        drop = int(np.searchsorted(self._t, self._next_end - window))
        if drop:
            self._t = self._t[drop:]
            self._x = self._x[drop:]
        return out

    def finish(self) -> Beats:
        """End of data: process the window that ends after the last sample."""
        if self._next_end is None or not len(self._t):
            return Beats([], [], [], [], [])
        beats = self._window(self._next_end, final=True)
        self._t = self._x = _EMPTY
        return beats

    def _window(self, end: float, *, final: bool = False) -> Beats:
        """Detect the beats of the window ending at ``end`` and commit those of its region."""
        cfg = self.cfg
        i1 = int(np.searchsorted(self._t, end))
        i0 = int(np.searchsorted(self._t, end - cfg.ppg_window_s))
        t, x = self._t[i0:i1], self._x[i0:i1]
        beats = Beats([], [], [], [], [])
        if len(t) < 16:
            self._last = None
            return beats
        dt = np.diff(t)
        fs = 1.0 / float(np.median(dt))
        gaps = np.flatnonzero(dt > GAP_PERIODS / fs)
        if len(gaps):  # only the contiguous stretch that reaches the window's end
            s = int(gaps[-1]) + 1
            t, x = t[s:], x[s:]
        finite = np.isfinite(x)
        if len(t) < 16 or t[-1] - t[0] < 0.5 * cfg.ppg_window_s or not finite.all():
            self._last = None
            return beats
        self.windows += 1
        lo = end - cfg.ppg_margin_s - cfg.ppg_hop_s
        hi = math.inf if final else end - cfg.ppg_margin_s
        clean, peaks = _window_peaks(x, fs) if np.ptp(x) > 0 else (x, np.empty(0, dtype=np.intp))
        if len(peaks) < MIN_PEAKS:
            self._last = None
            return beats
        quality = pulse_quality(clean, peaks, fs)
        start = float(t[0])
        for f, q in zip(pulse_feet(clean, peaks, fs), quality.tolist(), strict=True):
            tf = float(t[f])
            if not lo <= tf < hi:
                continue
            if self._last is not None and tf <= self._last[0]:
                continue  # (the same foot found again at a window edge)
            prev = self._last
            linked = prev is not None and prev[0] >= start
            self.beats += 1
            self.rejected += q < cfg.ppg_min_quality
            beats.times.append(tf)
            beats.quality.append(q)
            beats.linked.append(linked)
            # (the gate of :func:`intervals`, beat by beat)
            if (
                linked
                and prev is not None
                and q >= cfg.ppg_min_quality
                and prev[1] >= cfg.ppg_min_quality
            ):
                beats.rr_times.append(tf)
                beats.rr_ms.append((tf - prev[0]) * 1000.0)
            self._last = (tf, q)
        return beats


@functools.lru_cache(maxsize=16)
def _elgendi_filter(fs: float) -> tuple[F64Array, F64Array, int]:
    """The band-pass of :func:`ppg_clean` at rate ``fs``: its second-order sections, their
    steady-state initial conditions (``sosfilt_zi``) and scipy's default odd-extension length
    (``3 * ntaps``): designed once per rate, not once per window."""
    from scipy import signal  # noqa: PLC0415

    sos: F64Array = signal.butter(2, [0.5, 8.0], btype="bandpass", output="sos", fs=fs)
    ntaps = 2 * len(sos) + 1 - min(int((sos[:, 2] == 0).sum()), int((sos[:, 5] == 0).sum()))
    zi: F64Array = signal.sosfilt_zi(sos)
    return sos, zi, 3 * ntaps


def _sosfilt_public(sos: F64Array, x: F64Array, zi: F64Array) -> F64Array:
    from scipy import signal  # noqa: PLC0415

    y, _ = signal.sosfilt(sos, x, zi=zi)
    return np.asarray(y, dtype=np.float64)


@functools.cache
def _sosfilt_kernel() -> Callable[[F64Array, F64Array, F64Array], None] | None:
    """scipy's compiled loop behind ``signal.sosfilt`` (``_sosfilt(sos, x, zi)``, in place on a
    C-contiguous ``(1, n)`` signal and ``(1, sections, 2)`` state), or None where this scipy
    has none of that name. ``signal.sosfilt`` spends ~30 us per call validating and reshaping
    around a ~3 us loop on an 8-s window, and :func:`ppg_clean` runs two per window."""
    try:
        from scipy.signal._sosfilt import _sosfilt  # noqa: PLC0415 (private; see the fallback)
    except ImportError:
        return None
    return _sosfilt  # type: ignore[no-any-return]


def _sosfilt(sos: F64Array, x: F64Array, zi: F64Array) -> F64Array:
    """``signal.sosfilt(sos, x, zi=zi)[0]`` for 1-D float64 ``x`` and ``zi`` of shape
    ``(sections, 2)``, the same loop on the same numbers (tests/test_ppg.py compares both)."""
    kernel = _sosfilt_kernel()
    if kernel is None:
        return _sosfilt_public(sos, x, zi)
    y = np.array(x, dtype=np.float64, order="C").reshape(1, -1)
    state = np.array(zi, dtype=np.float64, order="C").reshape(1, *zi.shape)
    kernel(sos, y, state)
    return y.reshape(-1)


def ppg_clean(x: F64Array, fs: float) -> F64Array:
    """NeuroKit2's ``ppg_clean(method="elgendi")`` (Elgendi et al. 2013: 0.5-8 Hz, 2nd-order
    Butterworth, zero-phase): scipy's ``sosfiltfilt`` step by step (odd extension, forward and
    backward ``sosfilt`` from the steady state) with the filter and its initial state computed
    once per rate instead of once per call (design and ``sosfilt_zi`` were two thirds of the cost
    of an 8-s window) and scipy's filter loop called without its wrapper (:func:`_sosfilt`);
    equal to NeuroKit2's output to the last bit (tests/test_ppg.py)."""
    sos, zi, edge = _elgendi_filter(fs)
    if len(x) <= edge:
        raise ValueError(f"a PPG window needs more than {edge} samples, got {len(x)}")
    ext = np.concatenate((2.0 * x[0] - x[edge:0:-1], x, 2.0 * x[-1] - x[-2 : -(edge + 2) : -1]))
    y = _sosfilt(sos, ext, zi * ext[0])
    y = _sosfilt(sos, y[::-1], zi * y[-1])
    return np.asarray(y[::-1][edge:-edge], dtype=np.float64)


#: NeuroKit2's defaults for Elgendi's detector (``_ppg_findpeaks_elgendi``), in s.
ELGENDI_PEAK_S, ELGENDI_BEAT_S, ELGENDI_OFFSET, ELGENDI_MIN_DELAY_S = 0.111, 0.667, 0.02, 0.3


def elgendi_peaks(clean: F64Array, fs: float) -> npt.NDArray[np.intp]:
    """NeuroKit2's ``ppg_findpeaks(method="elgendi")`` (Elgendi et al. 2013) line for line: the
    squared positive part of the cleaned PPG, a peak-wide and a beat-wide moving average, "blocks
    of interest" where the first exceeds the second plus 2 % of the mean, in each block at least
    one peak-width long its most prominent maximum, at least 0.3 s after the previous peak.

    It is ported rather than called so that analysing a recording does not import NeuroKit2
    (about 2.3 CPU-s per process on this machine, more than analysing a session-hour); it gives
    NeuroKit2's peaks on every window of the test fixtures (tests/test_ppg.py). Where NeuroKit2
    would fail (no block at all, a window shorter than the beat-wide average) there are no peaks.

    NeuroKit2 calls ``scipy.signal.find_peaks(block, prominence=...)`` on every block (~10 per
    8-s window, ~15 us each). Here the local maxima of the whole window are found once: a block
    whose inside holds exactly one strict local maximum and no two equal neighbouring samples
    has that maximum as its only ``find_peaks`` peak, hence its most prominent (7 blocks in 8 on
    S02); any other block (several maxima, a plateau) still goes through ``find_peaks``.
    """
    from scipy import ndimage, signal  # noqa: PLC0415

    sqrd = np.where(clean < 0, 0.0, clean) ** 2
    peak_n = int(np.rint(ELGENDI_PEAK_S * fs))
    beat_n = int(np.rint(ELGENDI_BEAT_S * fs))
    if not 1 <= peak_n <= len(clean) or not 1 <= beat_n <= len(clean):
        return np.empty(0, dtype=np.intp)
    ma_peak = ndimage.uniform_filter1d(sqrd, peak_n, mode="nearest")
    ma_beat = ndimage.uniform_filter1d(sqrd, beat_n, mode="nearest")
    waves = ma_peak > ma_beat + ELGENDI_OFFSET * np.mean(sqrd)
    beg = np.flatnonzero(~waves[:-1] & waves[1:])
    end = np.flatnonzero(waves[:-1] & ~waves[1:])
    if len(beg) == 0:
        return np.empty(0, dtype=np.intp)
    end = end[end > beg[0]]
    n = min(len(beg), len(end))
    beg, end = beg[:n], end[:n]
    wide = end - beg >= peak_n
    beg, end = beg[wide], end[wide]
    # per block [b, e): the strict local maxima at b+1 .. e-2 (find_peaks never takes a
    # slice's first or last sample) and the pairs of equal neighbours (j, j+1) at b .. e-2
    rise = clean[1:] > clean[:-1]
    fall = clean[1:] < clean[:-1]
    maxima = np.flatnonzero(rise[:-1] & fall[1:]) + 1
    after = np.searchsorted(maxima, beg + 1)
    count = np.searchsorted(maxima, end - 1) - after
    first = maxima[np.minimum(after, len(maxima) - 1)] if len(maxima) else beg
    flats = np.flatnonzero(~(rise | fall))  # (equal neighbours, or a NaN)
    plain = np.searchsorted(flats, end - 1) == np.searchsorted(flats, beg)
    min_delay = int(np.rint(ELGENDI_MIN_DELAY_S * fs))
    peaks = [0]
    blocks = (beg.tolist(), end.tolist(), count.tolist(), first.tolist(), plain.tolist())
    for b, e, k, m, simple in zip(*blocks, strict=True):
        if simple and k <= 1:
            if k == 0:
                continue
            peak = m
        else:
            locmax, props = signal.find_peaks(clean[b:e], prominence=(None, None))
            if not len(locmax):
                continue
            peak = b + int(locmax[np.argmax(props["prominences"])])
        if peak - peaks[-1] > min_delay:
            peaks.append(peak)
    return np.asarray(peaks[1:], dtype=np.intp)


def _window_peaks(x: F64Array, fs: float) -> tuple[F64Array, npt.NDArray[np.intp]]:
    """The cleaned PPG (:func:`ppg_clean`) and its systolic peaks (:func:`elgendi_peaks`, sample
    indices) of one window."""
    clean = ppg_clean(x, fs)
    return clean, elgendi_peaks(clean, fs)


class DerivedBeats:
    """Between the wire and the analyzer: each PPG batch is followed by the ``rr_ppg`` batch of
    the intervals it completed (RR from PPG, one :class:`PpgBeatDetector` per device); every
    input passes unchanged (the core ignores PPG; a registered detector may read it). Off
    (``ppg_beats = 0``): nothing is derived."""

    def __init__(self, config: AnalysisConfig | None = None) -> None:
        self.cfg = config or AnalysisConfig()
        self.enabled = self.cfg.ppg_beats > 0
        self.detectors: dict[str, PpgBeatDetector] = {}

    def inputs(self, item: AnalyzerInput) -> list[AnalyzerInput]:
        if not self.enabled or not isinstance(item, SampleBatch) or item.stream != "ppg":
            return [item]
        return [item, *self._derive(item)]

    def _derive(self, item: SampleBatch) -> list[AnalyzerInput]:
        det = self.detectors.get(item.device)
        if det is None:
            det = self.detectors[item.device] = PpgBeatDetector(self.cfg, item.device)
        times = np.asarray(item.times, dtype=np.float64)
        values = np.asarray(item.values, dtype=np.float64)
        if values.ndim != 1 or len(values) != len(times):
            return []  # (a malformed batch derives nothing)
        beats = det.feed(times, values)
        return _batches(item.device, beats.rr_times, beats.rr_ms)

    def finish(self) -> list[AnalyzerInput]:
        out: list[AnalyzerInput] = []
        for device, det in sorted(self.detectors.items()):
            beats = det.finish()
            out.extend(_batches(device, beats.rr_times, beats.rr_ms))
        return out


def _batches(device: str, times: list[float], rr_ms: list[float]) -> list[AnalyzerInput]:
    if not times:
        return []
    return [
        SampleBatch(
            DERIVED_STREAM,
            device,
            np.asarray(times, dtype=np.float64),
            np.asarray(rr_ms, dtype=np.float64),
        )
    ]


# --- agreement with a reference (benchmarks/ppg_agreement.py, tests) ---------------------------


@dataclass(frozen=True, slots=True)
class Agreement:
    """Beat agreement of derived intervals with reference intervals (e.g. the E4's IBI).

    Beats are both ends of each interval. Only the stretches the reference covers count (its
    intervals' spans, widened by the tolerance): ``matched`` pairs one derived and one reference
    beat at most ``tolerance_s`` apart (each used once); precision = matched / derived beats in
    those stretches, recall = matched / reference beats.
    """

    matched: int
    derived: int
    reference: int
    tolerance_s: float

    @property
    def precision(self) -> float:
        return self.matched / self.derived if self.derived else math.nan

    @property
    def recall(self) -> float:
        return self.matched / self.reference if self.reference else math.nan

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r > 0 else math.nan


def _ends(times: F64Array, rr_ms: F64Array) -> F64Array:
    return np.unique(np.concatenate([times - rr_ms / 1000.0, times]))


def beat_agreement(
    times: F64Array,
    rr_ms: F64Array,
    ref_times: F64Array,
    ref_rr_ms: F64Array,
    tolerance_s: float = 0.05,
) -> Agreement:
    """See :class:`Agreement`. Intervals are ``(time of the later beat, ms)`` pairs."""
    ref = _ends(ref_times, ref_rr_ms)
    ours = _ends(times, rr_ms)
    starts = ref_times - ref_rr_ms / 1000.0 - tolerance_s
    ends = ref_times + tolerance_s
    # a derived beat counts when it lies in some reference interval's span
    order = np.argsort(starts)
    starts, ends = starts[order], np.maximum.accumulate(ends[order])
    j = np.searchsorted(starts, ours, side="right") - 1
    inside = (j >= 0) & (ours <= ends[np.maximum(j, 0)])
    ours = ours[inside]
    matched = i = k = 0
    while i < len(ours) and k < len(ref):
        d = ours[i] - ref[k]
        if abs(d) <= tolerance_s:
            matched += 1
            i += 1
            k += 1
        elif d < 0:
            i += 1
        else:
            k += 1
    return Agreement(matched, len(ours), len(ref), tolerance_s)


def rr_per_second(
    times: F64Array, rr_ms: F64Array, seconds: npt.NDArray[np.int64], config: AnalysisConfig
) -> tuple[F64Array, npt.NDArray[np.bool_]]:
    """The core's per-second RMSSD (ms; NaN where none) of these intervals and whether RR is
    available (not ``lost``) each second, through the same artefact correction and windows as
    the analyzer's (``RrProcessor``)."""
    from rekindle.analysis.core.cardiac import RrProcessor  # noqa: PLC0415

    proc = RrProcessor(config, "reference")
    rmssd = np.full(len(seconds), math.nan)
    available = np.zeros(len(seconds), dtype=np.bool_)
    tl, vl = times.tolist(), rr_ms.tolist()
    i = 0
    for n, k in enumerate(seconds.tolist()):
        j = int(np.searchsorted(times, k, side="left"))
        if j > i:
            proc.feed(tl[i:j], vl[i:j])
            i = j
        tick = proc.tick(k, in_gap=False)
        available[n] = tick.quality != "lost"
        if tick.rmssd is not None:
            rmssd[n] = tick.rmssd
    return rmssd, available
