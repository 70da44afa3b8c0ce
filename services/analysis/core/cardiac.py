"""Causal cardiac processing: HR from the device, RR artefact correction, RMSSD, HR from RR.

No I/O, no clock. Beats are handled one at a time in time order, so results do not depend on
how the samples were batched.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from operator import itemgetter
from typing import NamedTuple

from rekindle.analysis.core.config import AnalysisConfig
from rekindle.analysis.core.types import QualityState

DEGRADED_HOLD_S = 5.0
#: Share of corrected or rejected beats (over the RMSSD window) above which RR is "degraded";
#: Kubios advises against using HRV from recordings with more than 5 % corrected beats.
RR_ARTEFACT_DEGRADED = 0.05


#: The second item of a pair (the value of a ``(time, value)`` entry).
_second = itemgetter(1)


def _adjacent(t_prev: float, t: float, rr_ms: float) -> bool:
    """The beat at ``t`` with interval ``rr_ms`` directly follows the beat at ``t_prev``."""
    return abs((t - t_prev) * 1000.0 - rr_ms) <= max(50.0, 0.1 * rr_ms)


def _median(values: Iterable[float]) -> float:
    """The median as :func:`statistics.median` computes it (same rounding), without its overhead."""
    data = sorted(values)
    n = len(data)
    i = n // 2
    return data[i] if n % 2 else (data[i - 1] + data[i]) / 2


class HrTick(NamedTuple):
    hr: float | None
    quality: QualityState


_HR_LOST = HrTick(None, "lost")


class HrProcessor:
    """Device-reported heart rate (bpm): range check and trailing mean."""

    def __init__(self, config: AnalysisConfig, device: str) -> None:
        self.cfg = config
        self.device = device
        self.last_t = -math.inf
        self.last_valid_t = -math.inf
        self.last_bad_t = -math.inf
        # valid samples in the trailing window: times, and the values (summed every second)
        self._window: deque[float] = deque()
        self._values: deque[float] = deque()
        self.out_of_order = 0

    def feed(self, times: list[float], values: list[float]) -> None:
        lo, hi = self.cfg.hr_min_bpm, self.cfg.hr_max_bpm
        for t, x in zip(times, values, strict=True):
            if t <= self.last_t:
                self.out_of_order += 1
                continue
            self.last_t = t
            if not (lo <= x <= hi):
                self.last_bad_t = t
                continue
            self.last_valid_t = t
            self._window.append(t)
            self._values.append(x)

    def tick(self, k: int, *, motion: bool, in_gap: bool) -> HrTick:
        cfg = self.cfg
        w = self._window
        cutoff = k - cfg.hr_window_s
        if w and w[0] < cutoff:
            values = self._values
            while w and w[0] < cutoff:
                w.popleft()
                values.popleft()
        if in_gap or not w or k - self.last_valid_t > cfg.hr_lost_after_s:
            return _HR_LOST
        hr = math.fsum(self._values) / len(w)
        state: QualityState = (
            "degraded" if motion or k - self.last_bad_t <= DEGRADED_HOLD_S else "good"
        )
        return HrTick(hr, state)


class RrTick(NamedTuple):
    hr: float | None
    rmssd: float | None
    quality: QualityState


_RR_LOST = RrTick(None, None, "lost")


class RrProcessor:
    """RR intervals (ms) with causal artefact correction and sliding RMSSD / mean HR.

    Each interval is classified against the median of the previous ``rr_reference_beats``
    accepted intervals, with one beat of look-ahead (after Lipponen & Tarvainen 2019, using a
    fixed relative threshold):

    * normal: within ``rr_artefact_fraction`` of the reference;
    * missed beat: about twice the reference -> split into two intervals;
    * extra beat: short, and the sum with the next interval is about one reference -> merged;
    * ectopic beat: short followed by a compensatory long interval whose sum is about two
      references -> both replaced by their mean;
    * otherwise rejected. Three mutually consistent rejected intervals in a row re-seed the
      reference (a genuine, fast change of heart rate).

    Successive differences are only formed between intervals of adjacent beats, so gaps in the
    beat stream (E4 drops beats it cannot detect) never create spurious differences.
    """

    def __init__(self, config: AnalysisConfig, device: str) -> None:
        self.cfg = config
        self.device = device
        self.last_t = -math.inf
        self.last_accept_t = -math.inf
        self.last_bad_t = -math.inf
        self._pending: tuple[float, float] | None = None  # (beat time, interval ms)
        self._prev_beat_t = -math.inf  # time of the beat before the pending one
        self._ref: deque[float] = deque(maxlen=config.rr_reference_beats)
        self._rejected: list[tuple[float, float]] = []
        self._last_acc: tuple[float, float] | None = None  # last accepted (beat time, ms)
        self._beats: deque[tuple[float, float]] = deque()  # accepted (t, ms) in HR window
        self._diffs: deque[tuple[float, float]] = deque()  # (t, squared successive diff)
        self._events: deque[tuple[float, bool]] = deque()  # (t, was artefact) in RMSSD window
        self.corrected = 0
        self.rejected = 0
        self.out_of_order = 0
        self._skip_next = False
        self._n_art = 0  # artefacts among _events
        self._d2_sum = 0.0  # running sum of the squared differences in _diffs

    def _event(self, t: float, artefact: bool) -> None:
        self._events.append((t, artefact))
        self._n_art += artefact

    # -- beat handling ---------------------------------------------------------------------------
    def _accept(self, t: float, rr: float, *, artefact: bool) -> None:
        last = self._last_acc
        # (inlined :meth:`_event`: this runs for every beat)
        if last is not None and _adjacent(last[0], t, rr):
            d = rr - last[1]
            self._diffs.append((t, d * d))
            self._d2_sum += d * d
        self._last_acc = beat = (t, rr)
        self._ref.append(rr)
        self._beats.append(beat)
        self._events.append((t, artefact))
        self._n_art += artefact
        self.last_accept_t = t

    def _reject(self, t: float, rr: float) -> None:
        self.rejected += 1
        self.last_bad_t = t
        self._event(t, True)
        self._rejected.append((t, rr))
        if len(self._rejected) >= 3:
            vals = [r for _, r in self._rejected[-3:]]
            med = _median(vals)
            if all(abs(v - med) <= self.cfg.rr_artefact_fraction * med for v in vals):
                self._ref.clear()
                for bt, v in self._rejected[-3:]:
                    self._ref.append(v)
                    self._beats.append((bt, v))
                self._last_acc = self._rejected[-1]
                self.last_accept_t = self._rejected[-1][0]
                self._rejected.clear()

    def _classify(self, nxt: tuple[float, float] | None) -> None:
        """Decide the pending beat, looking at the next one when it is adjacent."""
        assert self._pending is not None
        t, rr = self._pending
        self._pending = None
        f = self.cfg.rr_artefact_fraction
        if len(self._ref) < 3:
            self._rejected.clear()
            self._accept(t, rr, artefact=False)
            return
        ref = _median(self._ref)
        if abs(rr - ref) <= f * ref:
            self._rejected.clear()
            self._accept(t, rr, artefact=False)
            return
        if abs(rr / 2.0 - ref) <= f * ref:  # missed beat
            self.corrected += 1
            self._rejected.clear()
            self._accept(t - rr / 2000.0, rr / 2.0, artefact=True)
            self._accept(t, rr / 2.0, artefact=True)
            return
        if nxt is not None and rr < (1.0 - f) * ref:
            t2, rr2 = nxt
            total = rr + rr2
            if abs(total - ref) <= f * ref:  # extra beat: merge with the next interval
                self.corrected += 1
                self._rejected.clear()
                self._accept(t2, total, artefact=True)
                self._skip_next = True
                return
            if rr2 > (1.0 + f) * ref and abs(total - 2.0 * ref) <= f * 2.0 * ref:  # ectopic
                self.corrected += 1
                self._rejected.clear()
                self._accept(t2 - total / 2000.0, total / 2.0, artefact=True)
                self._accept(t2, total / 2.0, artefact=True)
                self._skip_next = True
                return
        self._reject(t, rr)

    def feed(self, times: list[float], values: list[float]) -> None:
        lo, hi = self.cfg.rr_min_ms, self.cfg.rr_max_ms
        for t, rr in zip(times, values, strict=True):
            if t <= self.last_t:
                self.out_of_order += 1
                continue
            self.last_t = t
            if not (lo <= rr <= hi):
                self.rejected += 1
                self.last_bad_t = t
                self._event(t, True)
                if self._pending is not None:
                    self._classify(None)
                continue
            self._skip_next = False
            pending = self._pending
            if pending is not None:
                self._classify((t, rr) if _adjacent(pending[0], t, rr) else None)
            if self._skip_next:
                self._skip_next = False
                continue
            self._pending = (t, rr)

    def flush_before(self, k: int) -> None:
        """Decide a pending beat that can no longer get an adjacent successor before ``k``."""
        if self._pending is not None and k - self._pending[0] > self.cfg.rr_max_ms / 1000.0:
            self._classify(None)

    def tick(self, k: int, *, in_gap: bool) -> RrTick:
        cfg = self.cfg
        self.flush_before(k)
        beats, diffs = self._beats, self._diffs
        cutoff = k - cfg.hr_window_s
        while beats and beats[0][0] < cutoff:
            beats.popleft()
        cutoff = k - cfg.rmssd_window_s
        if diffs and diffs[0][0] < cutoff:
            d2_sum = self._d2_sum
            while diffs and diffs[0][0] < cutoff:
                d2_sum -= diffs.popleft()[1]
            self._d2_sum = d2_sum
        if k % 60 == 0:  # re-sum exactly now and then, so rounding cannot accumulate
            self._d2_sum = math.fsum(map(_second, diffs))
        ev = self._events
        if ev and ev[0][0] < cutoff:
            n_art = self._n_art
            while ev and ev[0][0] < cutoff:
                n_art -= ev.popleft()[1]
            self._n_art = n_art
        if in_gap or k - self.last_accept_t > cfg.rr_lost_after_s or not beats:
            return _RR_LOST
        mean_rr = math.fsum(map(_second, beats)) / len(beats)
        rmssd = None
        n_diffs = len(diffs)
        if n_diffs >= cfg.rmssd_min_pairs:
            rmssd = math.sqrt(max(self._d2_sum, 0.0) / n_diffs)
        frac = self._n_art / len(ev) if ev else 0.0
        state: QualityState = "degraded" if frac > RR_ARTEFACT_DEGRADED else "good"
        return RrTick(60000.0 / mean_rr, rmssd, state)
