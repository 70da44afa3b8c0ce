"""Arousal and emotional-release episode detection on the per-second index (pure, causal)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from services.analysis.core.baseline import INPUTS, SIGN, Baselines, Input
from services.analysis.core.config import AnalysisConfig
from services.analysis.core.types import Episode, EpisodeStart

#: An input is listed among an episode's signals when it gave at least this share of the index
#: at the episode's peak.
SIGNAL_SHARE = 0.2
#: The onset is searched back at most this far (s) from the enter-threshold crossing.
ONSET_LOOKBACK_S = 60.0
#: Signals whose recovery is tracked for the release episode, with the index input behind them.
RECOVERY_SIGNALS: Mapping[str, Input] = {"hr": "hr", "rmssd": "ln_rmssd", "eda": "tonic"}
_RECOVERY = tuple((name, INPUTS.index(inp)) for name, inp in RECOVERY_SIGNALS.items())

#: Calm reference of each input (``Baselines.snapshot``): (level in arousal orientation, robust
#: scale), or None while the input has no reference.
Snapshot = tuple[tuple[float, float] | None, ...]


@dataclass(slots=True)
class _Surge:
    """Recovery tracking after one arousal episode."""

    onset: float
    peak: float
    peak_index: float
    #: The calm references (no habituation) as they were when the surge began: recovery is
    #: judged against these, not against references that may have habituated meanwhile.
    ref: Snapshot
    offset: float | None = None
    peak_z: dict[str, float] = field(default_factory=dict)
    peak_at: dict[str, float] = field(default_factory=dict)  # when each signal peaked
    held_since: dict[str, float] = field(default_factory=dict)
    done: bool = False


class EpisodeDetector:
    """Hysteresis detector for arousal episodes plus the release tracker.

    Feed one index value per second with :meth:`step` (``None`` when no usable signal: that
    second can never be part of an episode and closes an open one), with that second's input
    values (in ``baseline.INPUTS`` order). ``baselines`` is read (never changed) to take the
    calm (non-habituated) references when a surge begins.
    """

    def __init__(self, config: AnalysisConfig, baselines: Baselines) -> None:
        self.cfg = config
        self._baselines = baselines
        self._cand_ref: Snapshot = ()
        self._cand_start: float | None = None
        self._active = False
        self._onset = 0.0
        self._peak_t = 0.0
        self._peak = -1.0
        self._peak_contrib: dict[str, float] = {}
        self._below_since: float | None = None
        self._last_t = 0.0
        self._enter_t = 0.0
        self._confirmed_t = 0.0
        self._last_calm: float | None = None  # last second with the index below exit_index
        self._surge: _Surge | None = None

    @property
    def active(self) -> bool:
        return self._active

    def _close(self, offset: float) -> Episode:
        total = sum(self._peak_contrib.values())
        share = SIGNAL_SHARE * total
        picked = [k for k, v in self._peak_contrib.items() if total > 0 and v >= share]
        signals = tuple(sorted(picked))
        ep = Episode(
            "arousal",
            self._onset,
            self._peak_t,
            offset,
            self._peak,
            signals,
            confirmed=self._confirmed_t,
        )
        self._active = False
        self._cand_start = None
        self._below_since = None
        if self._surge is not None and self._surge.onset == self._onset:
            self._surge.offset = offset
            self._surge.peak = self._peak_t
            self._surge.peak_index = self._peak
        return ep

    def step(
        self,
        t: float,
        index: float | None,
        contributions: Mapping[str, float],
        values: Sequence[float | None],
    ) -> list[Episode | EpisodeStart]:
        cfg = self.cfg
        out: list[Episode | EpisodeStart] = []
        if index is None:
            if self._active:
                out.append(self._close(self._below_since or t))
            self._cand_start = None
        elif self._active:
            if index > self._peak:
                self._peak, self._peak_t, self._peak_contrib = index, t, dict(contributions)
            if index >= cfg.exit_index:
                self._below_since = None
            else:
                if self._below_since is None:
                    self._below_since = t
                if t - self._below_since >= cfg.exit_hold_s:
                    out.append(self._close(self._below_since))
        elif self._cand_start is None:
            if index >= cfg.enter_index:
                # The episode starts where the index left the calm zone (below exit_index) on
                # its way up, at most ``ONSET_LOOKBACK_S`` before crossing the enter threshold.
                calm = self._last_calm
                start = t if calm is None else max(calm + 1.0, t - ONSET_LOOKBACK_S)
                self._cand_start = start
                self._enter_t = t
                self._cand_ref = self._baselines.snapshot()
                self._peak, self._peak_t, self._peak_contrib = index, t, dict(contributions)
        elif index < cfg.exit_index:
            self._cand_start = None
        else:
            if index > self._peak:
                self._peak, self._peak_t, self._peak_contrib = index, t, dict(contributions)
            if t - self._enter_t >= cfg.min_episode_s:
                self._active = True
                self._confirmed_t = t
                self._onset = self._cand_start
                self._below_since = None
                self._surge = _Surge(self._onset, self._peak_t, self._peak, self._cand_ref)
                out.append(EpisodeStart("arousal", self._onset, t, self._peak))
        if index is None or index < cfg.exit_index:
            self._last_calm = t
        self._last_t = t
        if self._surge is not None and not self._surge.done:
            out.extend(self._track_release(t, values))
        return out

    def _track_release(self, t: float, values: Sequence[float | None]) -> list[Episode]:
        cfg = self.cfg
        s = self._surge
        if s is None or s.done:
            return []
        if s.offset is not None and t - s.offset > cfg.release_window_s:
            s.done = True
            return []
        if self._active:
            s.peak, s.peak_index = self._peak_t, self._peak
        recovered: dict[str, float] = {}
        first_met = t
        for name, i in _RECOVERY:
            v = values[i]
            ref = s.ref[i]
            if v is None or ref is None:
                s.held_since.pop(name, None)
                continue
            zz = (SIGN[i] * v - ref[0]) / ref[1]
            if zz > s.peak_z.get(name, float("-inf")):
                s.peak_z[name] = zz
                s.peak_at[name] = t
            zp = s.peak_z[name]
            if zp < cfg.surge_min_z:
                continue
            frac = (zp - zz) / zp
            if frac >= cfg.recovery_fraction:
                since = s.held_since.setdefault(name, t)
                if since - s.peak_at[name] > cfg.release_window_s:
                    continue  # came down, but slowly: a fading state, not a release
                if t - since >= cfg.recovery_hold_s:
                    recovered[name] = frac
                    first_met = min(first_met, since)
            else:
                s.held_since.pop(name, None)
        if not recovered:
            return []
        s.done = True
        return [
            Episode(
                "release",
                s.onset,
                s.peak,
                t,
                s.peak_index,
                tuple(sorted(recovered)),
                recovery_depth=max(recovered.values()),
                recovery_latency=max(0.0, first_met - s.peak),
                confirmed=t,
            )
        ]

    def finish(self, t: float) -> list[Episode]:
        """End of data: close an open episode at ``t``."""
        if self._active:
            return [self._close(self._below_since or t)]
        return []
