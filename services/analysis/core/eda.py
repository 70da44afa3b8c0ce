"""Causal EDA processing for one device: validation, cleaning, tonic/phasic split, SCRs.

Every filter is a cascade of first-order exponential sections whose coefficient is computed from
each sample's own time step, so irregular or jittered sampling and gaps are handled exactly the
same way whatever the batch boundaries are. No I/O, no clock.
"""

from __future__ import annotations

import math
from array import array
from collections import deque
from typing import NamedTuple

import numpy as np

from rekindle.analysis.core.config import AnalysisConfig
from rekindle.analysis.core.types import EdaDecomposition, Event, QualityState, Scr

#: After a time step longer than this (s) the filters restart from the new sample.
GAP_RESET_S = 10.0
#: Seconds a step artefact or invalid sample keeps the stream "degraded".
DEGRADED_HOLD_S = 5.0


class EdaTick(NamedTuple):
    """EDA state at the end of one feature second (an immutable tuple: cheap to build)."""

    tonic: float | None
    phasic: float | None
    scr_rate: float | None
    quality: QualityState


_LOST_TICK = EdaTick(None, None, None, "lost")
_EMPTY = array("d")


class EdaProcessor:
    """Streaming EDA for one device. Feed samples in time order, then call :meth:`tick`."""

    def __init__(self, config: AnalysisConfig, device: str) -> None:
        self.cfg = config
        self.device = device
        self._tau_clean = 1.0 / (2.0 * math.pi * config.eda_lowpass_hz)
        self._tau_tonic = 1.0 / (2.0 * math.pi * config.eda_tonic_hz)
        self._hyst = 0.5 * config.scr_min_amplitude_us
        #: The constants :meth:`feed` needs, in one tuple (one attribute load per call).
        self._feed_params = (
            config.eda_min_us,
            config.eda_max_us,
            config.eda_max_slope_us_s,
            self._tau_clean,
            self._tau_tonic,
            self._hyst,
            config.scr_min_amplitude_us,
            config.scr_max_rise_s,
        )
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
        self._tick_min = math.inf
        self._tick_max = -math.inf
        self._out_t = array("d")
        self._out_tonic = array("d")
        self._out_phasic = array("d")
        self._scrs: list[Scr] = []
        self.out_of_order = 0
        self._coef = (math.nan, 0.0, 0.0)  # (dt, clean coefficient, tonic coefficient)
        self._flat_n = flat_n = max(1, int(config.flat_window_s))
        self._mins: deque[float] = deque(maxlen=flat_n)
        self._maxs: deque[float] = deque(maxlen=flat_n)
        self._wide_k = -math.inf  # last second whose own samples spanned ``eda_flat_us``

    def feed(self, times: list[float], values: list[float]) -> None:
        """Process samples (time-ordered, unix s / µS). Invalid ones are skipped and noted."""
        lo, hi, max_slope, tau_c, tau_t, hyst, amin, max_rise = self._feed_params
        exp = math.exp
        hist = self._hist
        out_t, out_tonic, out_phasic = self._out_t, self._out_tonic, self._out_phasic
        c1, c2, t1, t2 = self._c1, self._c2, self._t1, self._t2
        last_t, last_valid_t, last_x = self.last_t, self.last_valid_t, self._last_x
        tick_min, tick_max = self._tick_min, self._tick_max
        cached_dt, a, b = self._coef
        lim = max_slope * max(cached_dt, 1e-3) if cached_dt == cached_dt else math.inf  # noqa: PLR0124
        t_append, tonic_append, phasic_append = out_t.append, out_tonic.append, out_phasic.append
        hist_append = hist.append
        rising, trough_y = self._rising, self._trough_y
        peak_t, peak_y = self._peak_t, self._peak_y
        for t, x in zip(times, values, strict=True):
            if t <= last_t:
                self.out_of_order += 1
                continue
            last_t = t
            if not (lo <= x <= hi):  # also rejects NaN
                self.last_bad_t = t
                continue
            dt = t - last_valid_t
            if dt != cached_dt:  # (regular sampling: computed once)
                cached_dt, a, b = dt, 1.0 - exp(-dt / tau_c), 1.0 - exp(-dt / tau_t)
                lim = max_slope * max(dt, 1e-3)
            d = x - last_x
            if dt > GAP_RESET_S or d > lim or d < -lim:
                if dt <= GAP_RESET_S:
                    self.last_bad_t = t  # step artefact: restart the filters at the new level
                c1 = c2 = t1 = t2 = x
                rising, trough_y, peak_t, peak_y = False, math.nan, math.nan, math.nan
                hist.clear()
            else:
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
            t_append(t)
            tonic_append(t2)
            phasic_append(y)
            # SCR detection on the phasic signal: a peak is confirmed once the signal has fallen
            # ``hyst`` below it; its onset is the lowest point in the ``max_rise`` seconds before
            # the peak (and after the previous SCR peak); amplitude = peak - onset value.
            hist_append((t, y))
            if rising:
                cutoff = peak_t - max_rise
                while hist[0][0] < cutoff:
                    hist.popleft()
                if y > peak_y:
                    peak_t, peak_y = t, y
                elif y < peak_y - hyst:
                    self._peak_t, self._peak_y = peak_t, peak_y
                    self._confirm_peak(amin, max_rise)
                    rising = False
                    trough_y = y
            else:
                cutoff = t - max_rise
                while hist[0][0] < cutoff:
                    hist.popleft()
                if y < trough_y or trough_y != trough_y:  # noqa: PLR0124 (NaN: no trough yet)
                    trough_y = y
                elif y > trough_y + hyst:
                    rising = True
                    peak_t, peak_y = t, y
        self._rising, self._trough_y, self._peak_t, self._peak_y = rising, trough_y, peak_t, peak_y
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
        tmin, tmax = self._tick_min, self._tick_max
        self._mins.append(tmin)
        self._maxs.append(tmax)
        self._tick_min, self._tick_max = math.inf, -math.inf
        flat_us = cfg.eda_flat_us
        if tmax - tmin >= flat_us:
            self._wide_k = float(k)  # this second alone spans the flat threshold
        lost = in_gap or k - self.last_valid_t > cfg.eda_lost_after_s
        if not lost and k - self._wide_k >= self._flat_n and len(self._mins) == self._flat_n:
            # no second in the window spans the threshold by itself: check the whole window
            lost = max(self._maxs) - min(self._mins) < flat_us
        if lost:
            return _LOST_TICK
        peaks = self._scr_peaks
        while peaks and peaks[0] < k - cfg.scr_rate_window_s:
            peaks.popleft()
        tonic = self._t2
        return EdaTick(
            tonic,
            self._c2 - tonic,
            len(peaks) * 60.0 / cfg.scr_rate_window_s,
            "degraded" if motion or k - self.last_bad_t <= DEGRADED_HOLD_S else "good",
        )

    def nbytes(self) -> int:
        """Approximate bytes held (CPython per-element costs of the buffers)."""
        n = len(self._scr_peaks) + 2 * len(self._mins) + len(self._hist)
        return 80 * n + 3 * 8 * len(self._out_t) + 1024

    def take_events(self, out: list[Event], decomposition: bool = True) -> None:
        """Append the SCRs and (with ``decomposition``) the decomposition produced since the
        last call to ``out``; without, the decomposition is dropped."""
        if self._scrs:
            out.extend(self._scrs)
            self._scrs.clear()
        if self._out_t:
            if decomposition:
                # the arrays take over the buffers (no copy); fresh buffers collect the next
                # ones (``frombuffer``'s default dtype is float64; passing it costs ~0.3 us)
                frombuffer = np.frombuffer
                out.append(
                    EdaDecomposition(
                        self.device,
                        frombuffer(self._out_t),
                        frombuffer(self._out_tonic),
                        frombuffer(self._out_phasic),
                    )
                )
            empty = _EMPTY  # (slicing an empty array is cheaper than ``array("d")``)
            self._out_t, self._out_tonic, self._out_phasic = empty[:], empty[:], empty[:]
