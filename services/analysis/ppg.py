"""Beats from PPG: RR intervals derived from a wrist BVP/PPG stream, causal with a bounded lag.

Wrist IBI is missing for much of many sessions (the E4 drops every beat it cannot trust: S02 of
Stress-Predict has RR for 774 of its 2,962 s) while the 64-Hz BVP it derives them from is there.
:class:`PpgBeatDetector` turns one device's PPG into beats and RR intervals:

* **Windows.** Every ``ppg_hop_s`` of data time (window ends on a fixed grid of unix time,
  ``k * ppg_hop_s``) the last ``ppg_window_s`` of PPG are cleaned as NeuroKit2's ``ppg_clean``
  cleans them (Elgendi et al. 2013: 0.5-8 Hz Butterworth band-pass, zero-phase inside the
  window; :func:`ppg_clean`, within 1e-12 of the signal's range) and the systolic peaks found by
  NeuroKit2's ``ppg_findpeaks`` method (Elgendi et al. 2013; :func:`elgendi_peaks`), both ported
  to numpy so that the analysis imports neither NeuroKit2 nor ``scipy.signal``, and tested equal
  to them. Each beat is
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

The detection runs here, once per window (about 0.2-0.3 ms of CPU per window on the 2-core
development machine, 0.4-0.5 s per session-hour with the defaults: S02's 1,781 windows took
0.37-0.50 CPU-s in 30-s messages, whose windows are cleaned together, and 0.50-0.52 s in 1-s ones;
``benchmarks/offline_analyze.py`` measures the whole analysis), not in the core's per-second path:
this module sits beside the core, between the wire messages and the analyzer
(:class:`DerivedBeats`), in the live service and offline alike; ``rekindle analyze`` runs it in a
second process (:mod:`rekindle.analysis.parallel_beats`). It does no I/O.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Final, Protocol

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
    a, offsets = _pulse_offsets(fs)
    b = len(offsets) - a
    r = np.full(len(peaks), -1.0)
    inside = (peaks >= a) & (peaks + b < len(clean))
    if not inside.any():
        return r
    segs = clean[peaks[inside][:, None] + offsets[None, :]]
    # (np.mean(axis=...): numpy's own sum along that axis divided by the count)
    segs = segs - np.add.reduce(segs, axis=1, keepdims=True) / segs.shape[1]
    template = np.add.reduce(segs, axis=0) / segs.shape[0]
    num = segs @ template
    den = np.sqrt((segs * segs).sum(axis=1) * float(template @ template))
    ok = den > 0
    r_in = np.full(len(num), -1.0)
    r_in[ok] = num[ok] / den[ok]
    r[inside] = r_in
    return r


@functools.lru_cache(maxsize=16)
def _pulse_offsets(fs: float) -> tuple[int, npt.NDArray[np.intp]]:
    """Samples before each peak in its pulse segment, and the segment's offsets from the peak."""
    a = max(1, round(PULSE_BEFORE_S * fs))
    b = max(1, round(PULSE_AFTER_S * fs))
    offsets = np.arange(-a, b)
    offsets.setflags(write=False)
    return a, offsets


def _median(x: F64Array) -> float:
    """``float(np.median(x))`` of a non-empty 1-D array without NaN, the same number (the middle
    sample, or the mean of the middle two) without ``np.median``'s ~20 us of generic handling
    per call. By a sort, not ``np.partition``: a window's sample intervals take two or three
    distinct values (times rounded to the nanosecond), on which partition's introselect takes
    ~30 us for 511 intervals and the sort ~5 us."""
    n = len(x)
    k = (n - 1) // 2
    ordered = np.sort(x)
    if n % 2:
        return float(ordered[k])
    return float((ordered[k] + ordered[k + 1]) / 2.0)


def pulse_feet(clean: F64Array, peaks: npt.NDArray[np.intp], fs: float) -> list[int]:
    """The pulse foot of each peak: the sample of the (first) minimum of ``clean`` in the
    ``FOOT_SEARCH_S`` before it, peak included."""
    offsets = _foot_offsets(fs)
    w = len(offsets) - 1
    full = peaks >= w
    if full.all():  # (the usual case: every search span lies in the signal)
        starts = peaks - w
        feet = starts + np.argmin(clean[starts[:, None] + offsets], axis=1)
        return list(feet.tolist())
    out = np.empty(len(peaks), dtype=np.intp)
    if full.any():
        starts = peaks[full] - w
        out[full] = starts + np.argmin(clean[starts[:, None] + offsets], axis=1)
    for i in np.flatnonzero(~full).tolist():
        out[i] = int(np.argmin(clean[: int(peaks[i]) + 1]))
    return list(out.tolist())


@functools.lru_cache(maxsize=16)
def _foot_offsets(fs: float) -> npt.NDArray[np.intp]:
    """``0 .. w`` for a foot search span of ``w`` samples before the peak."""
    offsets = np.arange(max(1, round(FOOT_SEARCH_S * fs)) + 1)
    offsets.setflags(write=False)
    return offsets


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
        if len(self._t) and len(times):
            keep = times > self._t[-1]
            if not keep.all():
                self.out_of_order += int((~keep).sum())
                times, values = times[keep], values[keep]
        if not len(times):
            return Beats([], [], [], [], [])
        self._t = np.concatenate([self._t, times]) if len(self._t) else times
        self._x = np.concatenate([self._x, values]) if len(self._x) else values
        hop, window = self.cfg.ppg_hop_s, self.cfg.ppg_window_s
        if self._next_end is None:
            self._next_end = (math.floor(float(self._t[0]) / hop) + 1) * hop
        last = float(self._t[-1])
        windows: list[_Window | None] = []
        while last >= self._next_end:
            end = self._next_end
            i0 = int(np.searchsorted(self._t, end - window))
            if i0 < len(self._t) and self._t[i0] >= end:
                # nothing in this window (a silence): jump to the first window with data
                windows.append(None)
                self._next_end = (math.floor(float(self._t[i0]) / hop) + 1) * hop
                continue
            windows.append(self._prepare(end))
            self._next_end = end + hop
        drop = int(np.searchsorted(self._t, self._next_end - window))
        if drop:
            self._t = self._t[drop:]
            self._x = self._x[drop:]
        return self._commit(windows)

    def finish(self) -> Beats:
        """End of data: process the window that ends after the last sample."""
        if self._next_end is None or not len(self._t):
            return Beats([], [], [], [], [])
        beats = self._commit([self._prepare(self._next_end, final=True)])
        self._t = self._x = _EMPTY
        return beats

    def _prepare(self, end: float, *, final: bool = False) -> _Window | None:
        """The samples of the window ending at ``end`` that its beats are detected on (the
        contiguous stretch that reaches its end), or None when it has too few for beats."""
        cfg = self.cfg
        i1 = int(np.searchsorted(self._t, end))
        i0 = int(np.searchsorted(self._t, end - cfg.ppg_window_s))
        t, x = self._t[i0:i1], self._x[i0:i1]
        if len(t) < 16:
            return None
        dt = np.diff(t)
        fs = 1.0 / _median(dt)
        gaps = np.flatnonzero(dt > GAP_PERIODS / fs)
        if len(gaps):  # only the contiguous stretch that reaches the window's end
            s = int(gaps[-1]) + 1
            t, x = t[s:], x[s:]
        if len(t) < 16 or t[-1] - t[0] < 0.5 * cfg.ppg_window_s or not np.isfinite(x).all():
            return None
        self.windows += 1
        return _Window(end, final, t, x, fs, bool(np.ptp(x) > 0))

    def _commit(self, windows: list[_Window | None]) -> Beats:
        """Clean the windows (:func:`ppg_clean`; those of equal length and rate in one call,
        :func:`ppg_clean_rows`), then detect and commit their beats in time order."""
        groups: dict[tuple[int, float], list[_Window]] = {}
        for w in windows:
            if w is not None and w.varies:
                groups.setdefault((len(w.x), w.fs), []).append(w)
        for (_, fs), group in groups.items():
            rows = ppg_clean_rows(np.stack([w.x for w in group]), fs)
            for w, clean in zip(group, rows, strict=True):
                w.clean = clean
        out = Beats([], [], [], [], [])
        for w in windows:
            if w is None:
                self._last = None
            else:
                out.extend(self._beats(w))
        return out

    def _beats(self, w: _Window) -> Beats:
        """Detect the beats of a cleaned window and commit those of its region."""
        cfg = self.cfg
        beats = Beats([], [], [], [], [])
        t, fs = w.t, w.fs
        lo = w.end - cfg.ppg_margin_s - cfg.ppg_hop_s
        hi = math.inf if w.final else w.end - cfg.ppg_margin_s
        clean = w.clean if w.clean is not None else w.x
        peaks = elgendi_peaks(clean, fs) if w.varies else np.empty(0, dtype=np.intp)
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


@dataclass(slots=True)
class _Window:
    """One window's samples for beat detection (:meth:`PpgBeatDetector._prepare`)."""

    end: float
    final: bool
    t: F64Array
    x: F64Array
    fs: float
    #: whether the PPG varies in the window (a flat window has no beats and is not cleaned)
    varies: bool
    clean: F64Array | None = None


#: The band-pass of :func:`ppg_clean` (Hz): NeuroKit2's ``ppg_clean(method="elgendi")``.
BAND_HZ = (0.5, 8.0)


@functools.lru_cache(maxsize=16)
def _elgendi_filter(fs: float) -> tuple[F64Array, F64Array, int]:
    """The band-pass of :func:`ppg_clean` at rate ``fs``: the second-order sections of
    ``scipy.signal.butter(2, BAND_HZ, "bandpass", output="sos", fs=fs)``, their steady-state
    initial conditions (``sosfilt_zi``) and scipy's default odd-extension length (``3 *
    ntaps``), computed as scipy computes them (pre-warped bilinear transform of the 2nd-order
    Butterworth prototype, poles nearest the unit circle in the last section) in numpy: importing
    ``scipy.signal`` costs ~0.65 CPU-s per process (it imports ``scipy.stats``), more than the
    beats of a session-hour. Equal to scipy's within 1e-12 (tests/test_ppg.py)."""
    lo, hi = BAND_HZ
    warped = 4.0 * np.tan(np.pi * np.array([lo, hi]) / fs)  # (scipy's fs = 2 convention)
    bw, wo = float(warped[1] - warped[0]), math.sqrt(float(warped[0] * warped[1]))
    low_pass = -np.exp(1j * np.pi * np.array([-1.0, 1.0]) / 4.0) * bw / 2.0  # buttap(2)
    root = np.sqrt(low_pass**2 - wo**2)
    analog = np.concatenate((low_pass + root, low_pass - root))  # lp2bp
    poles = (4.0 + analog) / (4.0 - analog)  # bilinear; zeros: 2 at +1 (from 0), 2 at -1
    gain = float(np.real(bw**2 * 16.0 / np.prod(4.0 - analog)))
    far, near = sorted(poles[poles.imag > 0].tolist(), key=abs)
    sos = np.array(
        [
            [gain, 2.0 * gain, gain, 1.0, -2.0 * far.real, abs(far) ** 2],
            [1.0, -2.0, 1.0, 1.0, -2.0 * near.real, abs(near) ** 2],
        ]
    )
    zi = np.zeros((len(sos), 2))
    scale = 1.0
    for k, (b0, b1, b2, _, a1, a2) in enumerate(sos.tolist()):  # (scipy's lfilter_zi)
        zi[k] = scale * np.linalg.solve(
            np.array([[1.0 + a1, -1.0], [a2, 1.0]]), np.array([b1 - a1 * b0, b2 - a2 * b0])
        )
        scale *= (b0 + b1 + b2) / (1.0 + a1 + a2)
    ntaps = 2 * len(sos) + 1 - min(int((sos[:, 2] == 0).sum()), int((sos[:, 5] == 0).sum()))
    return sos, zi, 3 * ntaps


def _cascade(sos: F64Array, x0: float, zi: F64Array, n: int) -> F64Array:
    """``n`` samples of the cascade's output (direct form II transposed, as ``sosfilt``) for
    the input ``x0, 0, 0, ...`` from the state ``zi``."""
    state = zi.tolist()
    coef = sos.tolist()
    out = np.empty(n)
    for t in range(n):
        x = x0 if t == 0 else 0.0
        for k, (b0, b1, b2, _, a1, a2) in enumerate(coef):
            z = state[k]
            y = b0 * x + z[0]
            z[0] = b1 * x - a1 * y + z[1]
            z[1] = b2 * x - a2 * y
            x = y
        out[t] = x
    return out


@functools.lru_cache(maxsize=16)
def _responses(fs: float, size: int) -> tuple[F64Array, F64Array]:
    """The band-pass's first ``size`` samples of impulse response (from rest) and of response
    to the steady state ``zi`` with no input: ``sosfilt(sos, x, zi=zi * x[0])`` is
    ``convolve(x, h)[:n] + x[0] * r[:n]`` for any ``n <= size`` (the filter is linear)."""
    sos, zi, _ = _elgendi_filter(fs)
    return _cascade(sos, 1.0, np.zeros_like(zi), size), _cascade(sos, 0.0, zi, size)


def _fft_size(n: int) -> int:
    """The FFT length for the convolutions of an ``n``-sample signal: the smallest ``2**a *
    3**b`` (a fast length for numpy's pocketfft) of at least ``2 * n``."""
    target = 2 * n
    best = 1 << (target - 1).bit_length()
    three = 3
    while three < best:
        size = three
        while size < target:
            size *= 2
        best = min(best, size)
        three *= 3
    return best


@functools.lru_cache(maxsize=16)
def _transfer(fs: float, size: int) -> tuple[npt.NDArray[np.complex128], F64Array]:
    """The spectrum (``rfft`` at ``size``) of the first ``size // 2`` samples of the band-pass's
    impulse response, and as many samples of its response to the steady state
    (:func:`_responses`). For ``x`` of ``n <= size // 2`` samples, ``irfft(rfft(x, size) *
    H, size)[:n]`` is ``convolve(x, h)[:n]`` up to rounding: the samples of ``h`` beyond
    ``size // 2`` reach no output before ``n``, and the linear convolution of what is kept is
    shorter than ``size`` (no wrap-around)."""
    half = size // 2
    h, r = _responses(fs, -(-half // 1024) * 1024)  # (one response per rate for most sizes)
    h, r = h[:half], r[:half]
    spectrum = np.fft.rfft(h, size)
    spectrum.setflags(write=False)
    return spectrum, r


def ppg_clean(x: F64Array, fs: float) -> F64Array:
    """NeuroKit2's ``ppg_clean(method="elgendi")`` (Elgendi et al. 2013: 0.5-8 Hz, 2nd-order
    Butterworth, zero-phase): scipy's ``sosfiltfilt`` step by step (odd extension, forward and
    backward pass from the steady state) in numpy, each pass a convolution with the filter's
    impulse response (by FFT, at a length fixed by the signal's length) plus its response to
    the initial state (:func:`_transfer`, computed once per rate and length), so that the beats
    need neither scipy's import (~0.65 CPU-s per process) nor a Python loop per sample. Equal to
    NeuroKit2's output within 1e-12 of the signal's range (the FFT rounds otherwise than scipy's
    recursion; tests/test_ppg.py), with the same peaks on every window of the test fixtures."""
    clean: F64Array = ppg_clean_rows(x[None, :], fs)[0]
    return clean


def ppg_clean_rows(xs: F64Array, fs: float) -> F64Array:
    """:func:`ppg_clean` of each row of ``xs`` (signals of equal length), in one FFT per pass
    for all rows (on 15 windows of 8 s at 64 Hz, ~50 us per window instead of ~110 alone).
    Each row's result is the same to the last bit as cleaning that row alone, whatever the
    other rows (numpy's FFT transforms each row by the same steps; every other step is
    element-wise; tests/test_ppg.py)."""
    _, _, edge = _elgendi_filter(fs)
    m, w = xs.shape
    if w <= edge:
        raise ValueError(f"a PPG window needs more than {edge} samples, got {w}")
    n = w + 2 * edge
    size = _fft_size(n)
    spectrum, r = _transfer(fs, size)
    r = r[:n]
    ext = np.empty((m, n))
    ext[:, :edge] = 2.0 * xs[:, :1] - xs[:, edge:0:-1]
    ext[:, edge : edge + w] = xs
    ext[:, edge + w :] = 2.0 * xs[:, -1:] - xs[:, -2 : -(edge + 2) : -1]
    y = np.fft.irfft(np.fft.rfft(ext, size) * spectrum, size)[:, :n]
    y += ext[:, :1] * r
    z = np.fft.irfft(np.fft.rfft(y[:, ::-1], size) * spectrum, size)[:, :n]
    z += y[:, -1:] * r
    return np.ascontiguousarray(z[:, ::-1][:, edge : n - edge])


def _moving_average(x: F64Array, size: int) -> F64Array:
    """``scipy.ndimage.uniform_filter1d(x, size, mode="nearest")`` to the last bit: the edges
    repeated, the first window summed in order, then a running sum (added and dropped sample by
    sample, as ndimage's loop) divided by ``size``. (Written into two buffers: on an 8-s window
    numpy's per-call cost, not the arithmetic, is what this takes.)"""
    n, before = len(x), size // 2
    ext = np.empty(n + size - 1)
    ext[:before] = x[0]
    ext[before : before + n] = x
    ext[before + n :] = x[-1]
    sums = np.empty(n)
    sums[0] = np.add.accumulate(ext[:size])[-1]
    np.subtract(ext[size:], ext[: n - 1], out=sums[1:])
    np.add.accumulate(sums, out=sums)
    sums /= size
    return sums


def _most_prominent(block: list[float]) -> int | None:
    """The peak ``scipy.signal.find_peaks(block, prominence=(None, None))`` ranks first by
    prominence (its ``argmax``), found as scipy finds local maxima (plateaus at their middle)
    and prominences (the lower of the two minima reached before a higher sample or the end),
    or None when the block has no local maximum."""
    peaks = []
    i, last = 1, len(block) - 1
    while i < last:
        top = block[i]
        if block[i - 1] < top:
            ahead = i + 1
            while ahead < last and block[ahead] == top:
                ahead += 1
            if block[ahead] < top:
                peaks.append((i + ahead - 1) // 2)
                i = ahead
        i += 1
    best: int | None = None
    best_prominence = -math.inf
    for p in peaks:
        top = block[p]
        left = right = top
        j = p
        while j >= 0 and block[j] <= top:
            if block[j] < left:  # noqa: PLR1730 (min() per sample costs 2x here)
                left = block[j]
            j -= 1
        j = p
        while j <= last and block[j] <= top:
            if block[j] < right:  # noqa: PLR1730
                right = block[j]
            j += 1
        prominence = top - (left if left >= right else right)
        if prominence != prominence:  # noqa: PLR0124 (NaN: numpy's argmax takes the first)
            return p
        if best is None or prominence > best_prominence:
            best, best_prominence = p, prominence
    return best


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
    peak_n, beat_n, min_delay = _elgendi_sizes(fs)
    if not 1 <= peak_n <= len(clean) or not 1 <= beat_n <= len(clean):
        return np.empty(0, dtype=np.intp)
    sqrd = np.maximum(clean, 0.0)  # (squared below: -0.0 and 0.0 alike give 0.0)
    sqrd *= sqrd
    ma_peak = _moving_average(sqrd, peak_n)
    ma_beat = _moving_average(sqrd, beat_n)
    # (np.mean of a 1-D array: the same pairwise sum divided by the count)
    ma_beat += ELGENDI_OFFSET * (float(np.add.reduce(sqrd)) / len(sqrd))
    waves = ma_peak > ma_beat
    # the edges of the blocks alternate: a begin (False -> True) then an end (True -> False)
    edges = np.flatnonzero(waves[1:] != waves[:-1])
    if waves[0]:
        edges = edges[1:]  # (an end before any begin)
    if len(edges) == 0:
        return np.empty(0, dtype=np.intp)
    beg, end = edges[0::2], edges[1::2]
    beg = beg[: len(end)]
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
    if np.count_nonzero(rise) + np.count_nonzero(fall) == len(rise):
        plain: list[bool] = [True] * len(beg)  # (no equal neighbours, no NaN: the usual case)
    else:
        flats = np.flatnonzero(~(rise | fall))  # (equal neighbours, or a NaN)
        plain = (np.searchsorted(flats, end - 1) == np.searchsorted(flats, beg)).tolist()
    peaks = [0]
    blocks = (beg.tolist(), end.tolist(), count.tolist(), first.tolist(), plain)
    for b, e, k, m, simple in zip(*blocks, strict=True):
        if simple and k <= 1:
            if k == 0:
                continue
            peak = m
        else:
            best = _most_prominent(clean[b:e].tolist())
            if best is None:
                continue
            peak = b + best
        if peak - peaks[-1] > min_delay:
            peaks.append(peak)
    return np.asarray(peaks[1:], dtype=np.intp)


@functools.lru_cache(maxsize=16)
def _elgendi_sizes(fs: float) -> tuple[int, int, int]:
    """Samples of the peak-wide and beat-wide averages and of the minimum delay at ``fs``."""
    return (
        int(np.rint(ELGENDI_PEAK_S * fs)),
        int(np.rint(ELGENDI_BEAT_S * fs)),
        int(np.rint(ELGENDI_MIN_DELAY_S * fs)),
    )


class BeatSource(Protocol):
    """What the pipeline asks for beats derived from PPG: :class:`DerivedBeats`, or offline
    :class:`rekindle.analysis.parallel_beats.BeatsProcess`."""

    def inputs(self, item: AnalyzerInput) -> list[AnalyzerInput]:
        """``item`` followed by the ``rr_ppg`` batches that its PPG completed."""
        ...

    def finish(self) -> list[AnalyzerInput]:
        """End of data: the last intervals."""
        ...


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
