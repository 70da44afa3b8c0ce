"""Causal EDA processing for one device: validation, cleaning, tonic/phasic split, SCRs.

Every filter is a cascade of first-order exponential sections whose coefficient is computed from
each sample's own time step, so irregular or jittered sampling and gaps are handled exactly the
same way whatever the batch boundaries are. No I/O, no clock.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from services.analysis.core.config import AnalysisConfig
from services.analysis.core.types import EdaDecomposition, QualityState, Scr

#: After a time step longer than this (s) the filters restart from the new sample.
GAP_RESET_S = 10.0
#: Seconds a step artefact or invalid sample keeps the stream "degraded".
DEGRADED_HOLD_S = 5.0


@dataclass(frozen=True, slots=True)
class EdaTick:
    """EDA state at the end of one feature second."""

    tonic: float | None
    phasic: float | None
    scr_rate: float | None
    slope: float | None  # µS per minute over ``eda_slope_window_s``
    quality: QualityState


class EdaProcessor:
    """Streaming EDA for one device. Feed samples in time order, then call :meth:`tick`."""

    def __init__(self, config: AnalysisConfig, device: str) -> None:
        self.cfg = config
        self.device = device
        self._tau_clean = 1.0 / (2.0 * math.pi * config.eda_lowpass_hz)
        self._tau_tonic = 1.0 / (2.0 * math.pi * config.eda_tonic_hz)
        self._hyst = 0.5 * config.scr_min_amplitude_us
        self.last_t = -math.inf  # last sample time accepted (valid or not)
        self.last_valid_t = -math.inf
        self.last_bad_t = -math.inf
        self._last_x = math.nan
        self._c1 = self._c2 = self._t1 = self._t2 = math.nan
        self._rising = False
        self._trough_y = self._peak_t = self._peak_y = math.nan
        self._scr_peaks: deque[float] = deque()
        self._hist: deque[tuple[float, float]] = deque()
        self._last_peak_t = -math.inf
        self._tonic_hist: deque[tuple[int, float]] = deque()
        self._tick_min = math.inf
        self._tick_max = -math.inf
        self._out_t: list[float] = []
        self._out_tonic: list[float] = []
        self._out_phasic: list[float] = []
        self._scrs: list[Scr] = []
        self.out_of_order = 0
        self._coef = (math.nan, 0.0, 0.0)  # (dt, clean coefficient, tonic coefficient)
        flat_n = max(1, int(config.flat_window_s))
        self._mins: deque[float] = deque(maxlen=flat_n)
        self._maxs: deque[float] = deque(maxlen=flat_n)

    def _restart_detector(self) -> None:
        self._rising = False
        self._trough_y = self._peak_t = self._peak_y = math.nan
        self._hist.clear()

    def feed(self, times: list[float], values: list[float]) -> None:
        """Process samples (time-ordered, unix s / µS). Invalid ones are skipped and noted."""
        cfg = self.cfg
        lo, hi = cfg.eda_min_us, cfg.eda_max_us
        max_slope = cfg.eda_max_slope_us_s
        tau_c, tau_t = self._tau_clean, self._tau_tonic
        hyst, amin, max_rise = self._hyst, cfg.scr_min_amplitude_us, cfg.scr_max_rise_s
        exp = math.exp
        hist = self._hist
        out_t, out_tonic, out_phasic = self._out_t, self._out_tonic, self._out_phasic
        c1, c2, t1, t2 = self._c1, self._c2, self._t1, self._t2
        last_t, last_valid_t, last_x = self.last_t, self.last_valid_t, self._last_x
        tick_min, tick_max = self._tick_min, self._tick_max
        cached_dt, a, b = self._coef
        for t, x in zip(times, values, strict=True):
            if t <= last_t:
                self.out_of_order += 1
                continue
            last_t = t
            if not (lo <= x <= hi):  # also rejects NaN
                self.last_bad_t = t
                continue
            dt = t - last_valid_t
            if dt > GAP_RESET_S or abs(x - last_x) > max_slope * max(dt, 1e-3):
                if dt <= GAP_RESET_S:
                    self.last_bad_t = t  # step artefact: restart the filters at the new level
                c1 = c2 = t1 = t2 = x
                self._restart_detector()
            else:
                if dt != cached_dt:
                    cached_dt, a, b = dt, 1.0 - exp(-dt / tau_c), 1.0 - exp(-dt / tau_t)
                c1 += a * (x - c1)
                c2 += a * (c1 - c2)
                t1 += b * (c2 - t1)
                t2 += b * (t1 - t2)
            last_valid_t = t
            last_x = x
            y = c2 - t2
            if x < tick_min:  # noqa: PLR1730 (faster than min() in this loop)
                tick_min = x
            if x > tick_max:  # noqa: PLR1730
                tick_max = x
            out_t.append(t)
            out_tonic.append(t2)
            out_phasic.append(y)
            # SCR detection on the phasic signal: a peak is confirmed once the signal has fallen
            # ``hyst`` below it; its onset is the lowest point in the ``max_rise`` seconds before
            # the peak (and after the previous SCR peak); amplitude = peak - onset value.
            hist.append((t, y))
            cutoff = (self._peak_t if self._rising else t) - max_rise
            while hist[0][0] < cutoff:
                hist.popleft()
            if self._rising:
                if y > self._peak_y:
                    self._peak_t, self._peak_y = t, y
                elif y < self._peak_y - hyst:
                    self._confirm_peak(amin, max_rise)
                    self._rising = False
                    self._trough_y = y
            elif math.isnan(self._trough_y) or y < self._trough_y:
                self._trough_y = y
            elif y > self._trough_y + hyst:
                self._rising = True
                self._peak_t, self._peak_y = t, y
        self._c1, self._c2, self._t1, self._t2 = c1, c2, t1, t2
        self.last_t, self.last_valid_t, self._last_x = last_t, last_valid_t, last_x
        self._tick_min, self._tick_max = tick_min, tick_max
        self._coef = (cached_dt, a, b)

    def _confirm_peak(self, amin: float, max_rise: float) -> None:
        peak_t, peak_y = self._peak_t, self._peak_y
        lo_t = max(peak_t - max_rise, self._last_peak_t)
        onset_t, onset_y = peak_t, peak_y
        for ht, hy in self._hist:  # the latest lowest point before the peak
            if ht > peak_t:
                break
            if ht >= lo_t and hy <= onset_y:
                onset_t, onset_y = ht, hy
        amp = peak_y - onset_y
        if amp >= amin:
            self._scrs.append(Scr(self.device, onset_t, peak_t, amp))
            self._scr_peaks.append(peak_t)
            self._last_peak_t = peak_t

    def tick(self, k: int, *, motion: bool, in_gap: bool) -> EdaTick:
        """State for the feature second ending at ``k`` (all samples ``< k`` fed)."""
        cfg = self.cfg
        self._mins.append(self._tick_min)
        self._maxs.append(self._tick_max)
        self._tick_min, self._tick_max = math.inf, -math.inf
        lost = in_gap or k - self.last_valid_t > cfg.eda_lost_after_s
        if not lost and len(self._mins) == self._mins.maxlen:
            lost = max(self._maxs) - min(self._mins) < cfg.eda_flat_us
        if lost:
            return EdaTick(None, None, None, None, "lost")
        state: QualityState = (
            "degraded" if motion or k - self.last_bad_t <= DEGRADED_HOLD_S else "good"
        )
        peaks = self._scr_peaks
        while peaks and peaks[0] < k - cfg.scr_rate_window_s:
            peaks.popleft()
        rate = len(peaks) * 60.0 / cfg.scr_rate_window_s
        tonic = self._t2
        hist = self._tonic_hist
        hist.append((k, tonic))
        window = cfg.eda_slope_window_s
        while hist and hist[0][0] < k - window:
            hist.popleft()
        slope = None
        if hist[0][0] <= k - window:
            slope = (tonic - hist[0][1]) * 60.0 / window
        return EdaTick(tonic, self._c2 - tonic, rate, slope, state)

    def nbytes(self) -> int:
        """Approximate bytes held (CPython per-element costs of the buffers)."""
        n = len(self._scr_peaks) + len(self._tonic_hist) + 2 * len(self._mins) + len(self._hist)
        return 80 * n + 3 * 32 * len(self._out_t) + 1024

    def take_events(self) -> list[Scr | EdaDecomposition]:
        """SCRs and the decomposition produced since the last call."""
        out: list[Scr | EdaDecomposition] = list(self._scrs)
        self._scrs.clear()
        if self._out_t:
            out.append(
                EdaDecomposition(
                    self.device,
                    np.array(self._out_t, dtype=np.float64),
                    np.array(self._out_tonic, dtype=np.float64),
                    np.array(self._out_phasic, dtype=np.float64),
                )
            )
            self._out_t, self._out_tonic, self._out_phasic = [], [], []
        return out
