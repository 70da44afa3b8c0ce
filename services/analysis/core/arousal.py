"""EDA-led change detection: the arousal index, arousal and release episodes (pure, causal).

One :class:`ArousalDetector` per session takes, once per feature second, the values the signal
processors produced (tonic EDA, SCR rate, HR, ln RMSSD; ``None`` = lost) and returns the index,
its contributions and any episode events. ``docs/method.md`` (section 5-7) explains the method and
its references; in short:

* **Change against a local reference.** Each input is averaged over minutes and compared with its
  own lowest (for ln RMSSD: highest) level in the preceding ``rise_window_s``: the *rise* since
  the most recent trough. Slow drift (wrist electrodes warm up over 10-15 min) rises far less
  within a couple of minutes than a response does, and a level the person settled at becomes the
  reference once it is older than the window.
* **Tonic EDA opens episodes** (sweat glands are innervated by the sympathetic branch only); HR and
  ln RMSSD support the index, so a smaller EDA rise counts when the heart rises too, but they
  cannot open an episode on their own while the device measures EDA.
* **Sustained rise.** The index must stay at or above ``enter_index`` (with hysteresis) for
  ``min_episode_s`` before an episode is confirmed (the alert); its onset is set retrospectively
  at the EDA trough the rise started from.
* **Release = recovery.** Once a surge has peaked and its episode has closed, a release is
  confirmed when HR has fallen promptly at least ``release_hr_drop_bpm`` below the surge's HR
  (its mean over the episode) while tonic EDA is not rising, and this has held for
  ``recovery_hold_s`` (90 s: a heart that stays down, not a dip between bursts).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right, insort
from collections import deque
from dataclasses import dataclass
from itertools import islice
from operator import itemgetter

from rekindle.analysis.core.config import AnalysisConfig
from rekindle.analysis.core.types import Episode, EpisodeStart

#: An input is listed among an episode's signals when its own rise reached at least this fraction
#: of its scale during the episode (whether or not the index weights it).
SIGNAL_RISE = 0.5
#: Index points at which an input's rise equals its ``*_rise_*`` scale (the enter threshold's
#: default): the index reads "50" exactly when the EDA rise reaches its scale.
POINTS_PER_SCALE = 50.0
#: An episode's retrospective onset is the last second at which the leading input's rise was
#: at most this fraction of its scale (2.5 index points, i.e. at its reference but for rounding
#: and noise): where the rise began. (0.05 has the smallest onset error on the simulated
#: sessions, 9-19 s late; 0 lets a stale calm second from minutes earlier through.)
ONSET_CALM = 0.05
#: Order of the per-second input values.
TONIC, SCR_RATE, HR, LN_RMSSD = 0, 1, 2, 3


def warmup_s(config: AnalysisConfig) -> float:
    """Seconds from the first data second until an episode can first be declared: the settling
    time, then a full reference window of averaged data."""
    return config.settle_s + config.rise_window_s


class _Mean:
    """Trailing mean of the valid values of the last ``window`` seconds (None: too few)."""

    __slots__ = ("_buf", "_min_n", "_sum", "window")

    def __init__(self, window: float) -> None:
        self.window = window
        self._buf: deque[tuple[int, float]] = deque()
        self._sum = 0.0
        self._min_n = max(1, math.ceil(window / 2))

    def push(self, k: int, v: float | None) -> float | None:
        buf = self._buf
        if v is not None:
            buf.append((k, v))
            self._sum += v
        cutoff = k - self.window
        while buf and buf[0][0] <= cutoff:
            self._sum -= buf.popleft()[1]
        if k % 60 == 0:  # re-sum exactly now and then, so rounding cannot accumulate
            self._sum = math.fsum(x for _, x in buf)
        if len(buf) < self._min_n:
            return None
        return self._sum / len(buf)


class _Extreme:
    """Sliding minimum (``sign`` 1) or maximum (``sign`` -1) over the last ``window`` seconds
    (a monotonic deque)."""

    __slots__ = ("_buf", "sign", "window")

    def __init__(self, window: float, sign: float) -> None:
        self.window = window
        self.sign = sign
        self._buf: deque[tuple[int, float]] = deque()

    def push(self, k: int, v: float | None) -> float | None:
        buf = self._buf
        if v is not None:
            sv = self.sign * v
            while buf and buf[-1][1] >= sv:
                buf.pop()
            buf.append((k, sv))
        cutoff = k - self.window
        while buf and buf[0][0] < cutoff:
            buf.popleft()
        return self.sign * buf[0][1] if buf else None


class _Quantile:
    """Lower ``q`` quantile (towards calm: ``sign`` 1 = low values) of the values from
    ``window + gap`` to ``gap`` seconds ago."""

    __slots__ = ("_buf", "_sorted", "gap", "q", "sign", "window")

    def __init__(self, window: float, gap: float, q: float, sign: float) -> None:
        self.window, self.gap, self.q, self.sign = window, gap, q, sign
        self._buf: deque[tuple[int, float]] = deque()
        #: the values of the first ``len(_sorted)`` entries of ``_buf`` (those up to ``gap``
        #: ago), sorted; kept as the window moves (an insertion and a removal per second instead
        #: of sorting the window every second); None: to be rebuilt (a fresh one, or restored
        #: from a checkpoint written before it was kept)
        self._sorted: list[float] | None = None

    def push(self, k: int, v: float | None) -> float | None:
        buf = self._buf
        if v is not None:
            buf.append((k, self.sign * v))
        kept = self._sorted
        while buf and buf[0][0] < k - self.window - self.gap:
            _, old = buf.popleft()
            if kept:  # (the oldest entry is among those kept while any is)
                del kept[bisect_left(kept, old)]
        hi = k - self.gap
        if kept is None:
            # (buf is in time order, so the values up to ``hi`` are a prefix of it, found by
            # bisection)
            m = bisect_right(buf, hi, key=itemgetter(0))
            kept = self._sorted = sorted(map(itemgetter(1), islice(buf, m)))
        else:
            n = len(kept)
            while n < len(buf) and buf[n][0] <= hi:
                insort(kept, buf[n][1])
                n += 1
        if len(kept) < max(1, math.ceil(self.window / 2)):
            return None
        return self.sign * kept[math.floor(self.q * (len(kept) - 1))]


class _Input:
    """One input's averaged level and its local reference: its trough (ln RMSSD: peak) over the
    window when ``q`` is 0, else the lower ``q`` quantile of the window ending ``gap`` ago."""

    __slots__ = (
        "avg_s",
        "gap_s",
        "level",
        "mean",
        "q",
        "ref",
        "ref_level",
        "sign",
        "window_s",
    )

    def __init__(
        self, avg_s: float, window_s: float, sign: float, q: float = 0.0, gap_s: float = 0.0
    ) -> None:
        self.avg_s, self.window_s, self.sign, self.q, self.gap_s = avg_s, window_s, sign, q, gap_s
        self.mean = _Mean(avg_s)
        self.ref: _Extreme | _Quantile = (
            _Extreme(window_s, sign) if q == 0 else _Quantile(window_s, gap_s, q, sign)
        )
        self.level: float | None = None
        self.ref_level: float | None = None

    def push(self, k: int, v: float | None) -> None:
        self.level = self.mean.push(k, v)
        self.ref_level = self.ref.push(k, self.level)


@dataclass(slots=True)
class _Surge:
    """Recovery tracking after one arousal episode (from its confirmation)."""

    onset: float
    peak: float
    peak_index: float
    hr_start: float | None  # averaged HR at the onset's trough (None: unknown)
    hr_sum: float = 0.0  # HR during the episode (from onset until it closes)
    hr_n: int = 0
    hr_peak: float = -math.inf  # highest averaged HR during the episode
    rm_sum: float = 0.0  # averaged ln RMSSD during the episode (from onset until it closes)
    rm_n: int = 0
    closed_at: float | None = None
    held_since: float | None = None
    done: bool = False


class DetectorTick:
    """One second's result: index (None while warming up or without usable signal), the points
    each input contributed (they sum to the index) and the episode events."""

    __slots__ = ("contributions", "events", "index")

    def __init__(
        self,
        index: float | None,
        contributions: dict[str, float],
        events: list[Episode | EpisodeStart],
    ) -> None:
        self.index = index
        self.contributions = contributions
        self.events = events


_EMPTY: list[Episode | EpisodeStart] = []
_NO_RISES: dict[str, float] = {}


class ArousalDetector:
    """EDA-led arousal and release detection on per-second inputs (see the module docstring).

    Feed every feature second in order with :meth:`step`; call :meth:`finish` at the end of data.
    """

    def __init__(self, config: AnalysisConfig) -> None:
        self.cfg = config
        cfg = config
        w = cfg.rise_window_s
        self._eda = _Input(cfg.eda_avg_s, w, 1.0, cfg.eda_ref_quantile, cfg.ref_gap_s)
        self._hr = _Input(cfg.hr_avg_s, w, 1.0)
        self._rmssd = _Input(cfg.hr_avg_s, w, -1.0)
        #: averaged ln tonic EDA of the last ``eda_avg_s`` seconds, for "EDA not rising"
        self._eda_hist: deque[tuple[int, float]] = deque()
        #: averaged HR of the last ``rise_window_s + min_episode_s`` (and ``release_fall_s``)
        #: seconds: a surge's HR mean starts at its onset, before its confirmation, and a
        #: release's prompt fall looks back ``release_fall_s``
        self._hr_hist: deque[tuple[int, float]] = deque()
        self._hr_keep_s = max(cfg.rise_window_s + cfg.min_episode_s, cfg.release_fall_s)
        #: averaged ln RMSSD over the same span (a surge's ln RMSSD mean starts at its onset)
        self._rm_hist: deque[tuple[int, float]] = deque()
        self.first_tick: int | None = None
        self.eda_seen = False
        # episode state
        self._cand_start: float | None = None
        self._cand_onset = 0.0
        self._active = False
        self._onset = 0.0
        self._confirmed_t = 0.0
        self._peak = -1.0
        self._peak_t = 0.0
        self._rose: dict[str, float] = {}  # each input's largest rise (scale units) this episode
        self._below_since: float | None = None
        self._unusable_t = -math.inf  # the last second without a usable index
        self._calm_t = -math.inf  # the last second the leading input had not risen
        self._surge: _Surge | None = None

    # -- per second -----------------------------------------------------------------------------
    def step(self, k: int, values: list[float | None], eda_degraded: bool = False) -> DetectorTick:
        """Second ``k``'s inputs (``None`` = lost); ``eda_degraded``: the EDA of this second is
        degraded (motion or a step artefact), so it is left out of the average when
        ``eda_skip_degraded`` is on."""
        cfg = self.cfg
        if self.first_tick is None:
            self.first_tick = k
        settled = k - self.first_tick >= cfg.settle_s
        tonic = values[TONIC]
        if tonic is not None:
            self.eda_seen = True
        ln_tonic = (
            math.log(max(tonic, cfg.eda_min_us))
            if tonic is not None and settled and not (eda_degraded and cfg.eda_skip_degraded)
            else None
        )
        eda = self._eda
        eda.push(k, ln_tonic)
        hr = self._hr
        hr.push(k, values[HR] if settled else None)
        rm = self._rmssd
        rm.push(k, values[LN_RMSSD] if settled else None)
        if hr.level is not None:
            self._hr_hist.append((k, hr.level))
        hr_hist = self._hr_hist
        while hr_hist and hr_hist[0][0] < k - self._hr_keep_s:
            hr_hist.popleft()
        if rm.level is not None:
            self._rm_hist.append((k, rm.level))
        rm_hist = self._rm_hist
        while rm_hist and rm_hist[0][0] < k - self._hr_keep_s:
            rm_hist.popleft()
        hist = self._eda_hist
        if eda.level is not None:
            hist.append((k, eda.level))
        while hist and hist[0][0] < k - cfg.eda_avg_s:
            hist.popleft()

        warm = k - self.first_tick >= warmup_s(cfg)
        cardiac_now = values[HR] is not None or values[LN_RMSSD] is not None
        index, contrib, rises = (
            self._index(tonic is not None, cardiac_now) if warm else (None, {}, _NO_RISES)
        )
        t = float(k)
        out: list[Episode | EpisodeStart] = _EMPTY
        if index is None:
            self._unusable_t = t
            if self._active:
                out = [self._close(self._below_since or t)]
            self._cand_start = None
        else:
            out = self._episodes(t, index, rises)
        surge = self._surge
        if surge is not None and not surge.done:
            release = self._track_release(t, index, surge)
            if release is not None:
                out = [*out, release]
        return DetectorTick(index, contrib, out)

    def _index(
        self, eda_now: bool, cardiac_now: bool
    ) -> tuple[float | None, dict[str, float], dict[str, float]]:
        """Index points from the rises, and each input's rise in units of its scale. None when
        the signal that leads is lost this second (EDA on a device that measures it; else the
        heart): the averages still hold earlier values, but no episode rests on lost signal."""
        cfg = self.cfg
        eda = self._eda
        e: float | None = None
        if self.eda_seen and not eda_now:
            return None, {}, _NO_RISES
        if not self.eda_seen and not cardiac_now:
            return None, {}, _NO_RISES
        if eda.level is not None and eda.ref_level is not None:
            rise_ln = eda.level - eda.ref_level
            rise_us = math.exp(eda.level) - math.exp(eda.ref_level)
            e = max(0.0, min(rise_ln / cfg.eda_rise_ln, rise_us / cfg.eda_rise_min_us))
        elif self.eda_seen or eda_now:
            return None, {}, _NO_RISES
        hr, rm = self._hr, self._rmssd
        c_hr = c_rm = None
        if hr.level is not None and hr.ref_level is not None:
            c_hr = max(0.0, (hr.level - hr.ref_level) / cfg.hr_rise_bpm)
        if rm.level is not None and rm.ref_level is not None:
            c_rm = max(0.0, (rm.ref_level - rm.level) / cfg.ln_rmssd_fall)
        if e is None and c_hr is None and c_rm is None:
            return None, {}, _NO_RISES
        w_hr, w_rm = cfg.weight_hr, cfg.weight_rmssd
        if c_hr is None or c_rm is None:
            w_hr, w_rm = (1.0, 0.0) if c_rm is None else (0.0, 1.0)
        else:
            total_w = w_hr + w_rm
            w_hr, w_rm = (w_hr / total_w, w_rm / total_w) if total_w > 0 else (0.5, 0.5)
        # with EDA, the cardiac domain only supports (weight ``cardiac_weight``); without any
        # EDA on the device it is the whole index
        cw = cfg.cardiac_weight if e is not None else 1.0
        parts: dict[str, float] = {}
        if e is not None:
            parts["eda"] = POINTS_PER_SCALE * e
        if c_hr is not None:
            parts["hr"] = POINTS_PER_SCALE * cw * w_hr * c_hr
        if c_rm is not None:
            parts["rmssd"] = POINTS_PER_SCALE * cw * w_rm * c_rm
        total = math.fsum(parts.values())
        if total > 100.0:
            parts = {name: v * 100.0 / total for name, v in parts.items()}
            total = 100.0
        rises = {"eda": e, "hr": c_hr, "rmssd": c_rm}
        return total, parts, {k: v for k, v in rises.items() if v is not None}

    def _episodes(
        self, t: float, index: float, rises: dict[str, float]
    ) -> list[Episode | EpisodeStart]:
        cfg = self.cfg
        e = rises.get("eda")
        lead = e if e is not None else rises.get("hr")
        if lead is None or lead <= ONSET_CALM:
            self._calm_t = t
        if self._cand_start is not None or self._active:
            rose = self._rose
            for name, r in rises.items():
                if r > rose.get(name, 0.0):
                    rose[name] = r
        if self._active:
            if index > self._peak:
                self._peak, self._peak_t = index, t
            if index >= cfg.exit_index:
                self._below_since = None
                return _EMPTY
            if self._below_since is None:
                self._below_since = t
            if t - self._below_since >= cfg.exit_hold_s:
                return [self._close(self._below_since)]
            return _EMPTY
        # EDA opens: with EDA on the device its own rise must reach ``eda_open_min`` of its scale
        opens = index >= cfg.enter_index and (
            (e is None and not self.eda_seen) or (e is not None and e >= cfg.eda_open_min)
        )
        if self._cand_start is None:
            if opens:
                self._cand_start = t
                # the rise started at the trough of the input that opened it
                # the rise began after the last calm second (the leading input's rise at most
                # ONSET_CALM of its scale), never before a second without a usable index
                # (warm-up, lost signal), nor further back than the reference window
                self._cand_onset = max(self._calm_t, self._unusable_t + 1.0, t - cfg.rise_window_s)
                self._peak, self._peak_t = index, t
                self._rose = dict(rises)
            return _EMPTY
        if index < cfg.exit_index:
            self._cand_start = None
            return _EMPTY
        if index > self._peak:
            self._peak, self._peak_t = index, t
        if t - self._cand_start < cfg.min_episode_s:
            return _EMPTY
        self._active = True
        self._onset = self._cand_onset
        self._confirmed_t = t
        self._below_since = None
        hr_start = self._hr.ref_level
        s = self._surge = _Surge(self._onset, self._peak_t, self._peak, hr_start)
        for tk, level in self._hr_hist:
            if tk >= self._onset:
                s.hr_sum += level
                s.hr_n += 1
                s.hr_peak = max(s.hr_peak, level)
        for tk, level in self._rm_hist:
            if tk >= self._onset:
                s.rm_sum += level
                s.rm_n += 1
        return [EpisodeStart("arousal", self._onset, t, self._peak)]

    def _close(self, offset: float) -> Episode:
        picked = [k for k, v in self._rose.items() if v >= SIGNAL_RISE]
        ep = Episode(
            "arousal",
            self._onset,
            self._peak_t,
            offset,
            self._peak,
            tuple(sorted(picked)),
            confirmed=self._confirmed_t,
        )
        self._active = False
        self._cand_start = None
        self._below_since = None
        s = self._surge
        if s is not None and s.onset == self._onset:
            s.closed_at = offset
            s.peak, s.peak_index = self._peak_t, self._peak
        return ep

    def _eda_settling(self) -> bool:
        """Tonic EDA (its averaged ln level) rose less than ``release_eda_rise_ln`` over the last
        ``eda_avg_s`` and, when ``release_eda_fall_ln`` > 0, fell by at least that much (the
        sympathetic side withdrawing). Unknown (too little history): settling unless a fall is
        required."""
        cfg = self.cfg
        hist = self._eda_hist
        if len(hist) < 2:
            return cfg.release_eda_fall_ln <= 0
        change = hist[-1][1] - hist[0][1]
        return change <= cfg.release_eda_rise_ln and (
            cfg.release_eda_fall_ln <= 0 or change <= -cfg.release_eda_fall_ln
        )

    def _vagal_rebound(self, s: _Surge, rm: float | None) -> bool:
        """ln RMSSD (30-s average) at least ``release_rmssd_rise_ln`` above its mean during the
        surge (parasympathetic rebound). Off when the parameter is 0; when RMSSD is not measured
        now or was not during the surge (wrist RR is often lost), HR alone decides."""
        need = self.cfg.release_rmssd_rise_ln
        if need <= 0 or rm is None or not s.rm_n:
            return True
        return rm - s.rm_sum / s.rm_n >= need

    def _hr_fell_promptly(self, t: float, hr: float) -> bool:
        """HR came down by ``release_hr_drop_bpm`` within the last ``release_fall_s`` (a prompt
        fall, as after a stressor ends; a state that fades over many minutes is not a release).
        Off when ``release_fall_s`` is 0."""
        cfg = self.cfg
        if cfg.release_fall_s <= 0:
            return True
        since = t - cfg.release_fall_s
        high = max((v for k, v in self._hr_hist if k >= since), default=hr)
        return high - hr >= cfg.release_hr_drop_bpm

    def _track_release(self, t: float, index: float | None, s: _Surge) -> Episode | None:
        cfg = self.cfg
        active = self._active and s.onset == self._onset
        if active:
            s.peak, s.peak_index = self._peak_t, self._peak
        elif s.closed_at is None:
            s.done = True  # superseded by a newer surge, or closed on lost signal
            return None
        hr = self._hr.level
        if active and hr is not None:
            s.hr_sum += hr
            s.hr_n += 1
            s.hr_peak = max(s.hr_peak, hr)
        rm_now = self._rmssd.level
        if active and rm_now is not None:
            s.rm_sum += rm_now
            s.rm_n += 1
        if s.closed_at is not None and t - s.closed_at > cfg.release_window_s:
            s.done = True
            return None
        # judged once the surge has peaked and the episode has closed (or, with
        # release_needs_close 0, is falling), and not before release_after_peak_s after the peak
        falling = not active or (
            not cfg.release_needs_close
            and index is not None
            and index <= cfg.release_falling_fraction * s.peak_index
        )
        # HR is compared with its mean over the episode, not with its peak: the peak of a noisy
        # signal is biased upwards, and a fall from it happens by chance (regression to the mean)
        surge_hr = (s.hr_peak if cfg.release_hr_ref_peak else s.hr_sum / s.hr_n) if s.hr_n else None
        recovered = (
            falling
            and t - s.peak >= cfg.release_after_peak_s
            and hr is not None
            and surge_hr is not None
            and surge_hr - hr >= cfg.release_hr_drop_bpm
            and self._hr_fell_promptly(t, hr)
            and self._eda_settling()
            and self._vagal_rebound(s, rm_now)
        )
        if not recovered:
            s.held_since = None
            return None
        if s.held_since is None:
            s.held_since = t
        if t - s.held_since < cfg.recovery_hold_s:
            return None
        s.done = True
        assert hr is not None
        signals = ["hr"]
        rm = self._rmssd
        # RMSSD recovered too: back within half its scale of its recent (calm) peak
        if (
            rm.level is not None
            and rm.ref_level is not None
            and rm.level >= rm.ref_level - 0.5 * cfg.ln_rmssd_fall
        ):
            signals.append("rmssd")
        assert surge_hr is not None
        rise = surge_hr - s.hr_start if s.hr_start is not None else None
        depth = (surge_hr - hr) / rise if rise is not None and rise > 0 else None
        return Episode(
            "release",
            s.onset,
            s.peak,
            t,
            s.peak_index,
            tuple(sorted(signals)),
            recovery_depth=depth,
            recovery_latency=max(0.0, s.held_since - s.peak),
            confirmed=t,
        )

    def nbytes(self) -> int:
        """Approximate bytes held (CPython per-element cost of the windows)."""
        n = len(self._eda_hist) + len(self._hr_hist) + len(self._rm_hist)
        for inp in (self._eda, self._hr, self._rmssd):
            n += len(inp.mean._buf) + len(inp.ref._buf)
        return 72 * n + 2048

    def finish(self, t: float) -> list[Episode]:
        """End of data: close an open episode at ``t``."""
        if self._active:
            return [self._close(self._below_since or t)]
        return []
