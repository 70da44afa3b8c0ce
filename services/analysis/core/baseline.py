"""Per-input robust baselines (median and scaled MAD) and the arousal index built on them."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

from services.analysis.core.config import AnalysisConfig

Input: TypeAlias = Literal["tonic", "scr_rate", "hr", "ln_rmssd"]
INPUTS: Final[tuple[Input, ...]] = ("tonic", "scr_rate", "hr", "ln_rmssd")
#: Consistency constant that makes the MAD estimate the SD of normal data.
MAD_TO_SD: Final = 1.4826
#: Per-second history kept for marker-defined baselines (s).
HISTORY_CAP_S: Final = 6 * 3600
_CHUNK: Final = 3600
#: +1 where a higher value means more aroused, -1 where lower does (RMSSD).
SIGN: Final = (1.0, 1.0, 1.0, -1.0)
#: The habituation level is refreshed this often (s).
ADAPT_EVERY_S: Final = 30


@dataclass(frozen=True, slots=True)
class Reference:
    median: float
    scale: float
    final: bool


class Baselines:
    """Collects per-second input values and derives a robust reference for each input.

    Automatic baseline: the first ``baseline_s`` valid seconds of each input after its first
    ``settle_s`` seconds (inputs start at
    different times: RMSSD needs a minute of beats; a sensor may be attached late). A provisional
    reference from the valid seconds so far is available after ``baseline_min_s``.
    Marker baseline: the range between ``baseline_start`` and ``baseline_end`` markers (or
    ``baseline_s`` after a lone start marker, or before a lone end marker) replaces the automatic
    one from the second it is complete; inputs with fewer than ``baseline_min_s`` valid seconds in
    the range keep their automatic reference.
    """

    def __init__(self, config: AnalysisConfig) -> None:
        self.cfg = config
        self.first_tick: int | None = None
        self._hist: npt.NDArray[np.float64] = np.full((_CHUNK, len(INPUTS)), np.nan)
        self._n = 0
        self._count = [0] * len(INPUTS)
        self._first_valid: list[int | None] = [None] * len(INPUTS)
        self._ref: list[Reference | None] = [None] * len(INPUTS)
        self._from_marker = [False] * len(INPUTS)
        self.marker_start: float | None = None
        self.marker_end: float | None = None
        self._marker_done = False
        self.source = "auto"
        self._win = max(1, int(config.adapt_window_s))
        self._ring: npt.NDArray[np.float64] = np.full((self._win, len(INPUTS)), np.nan)
        self._adapted: list[float | None] = [None] * len(INPUTS)

    def nbytes(self) -> int:
        return int(self._hist.nbytes + self._ring.nbytes)

    def _scale(self, i: int, values: npt.NDArray[np.float64], med: float) -> float:
        cfg = self.cfg
        mad = MAD_TO_SD * float(np.median(np.abs(values - med)))
        floor = (
            max(cfg.tonic_scale_floor_us, cfg.tonic_scale_floor_fraction * abs(med)),
            cfg.scr_rate_scale_floor,
            cfg.hr_scale_floor_bpm,
            cfg.ln_rmssd_scale_floor,
        )[i]
        return max(mad, floor)

    def _reference(self, i: int, values: npt.NDArray[np.float64], final: bool) -> Reference:
        med = float(np.median(values))
        return Reference(med, self._scale(i, values, med), final)

    def marker(self, time: float, text: str) -> None:
        if text == "baseline_start":
            self.marker_start, self.marker_end, self._marker_done = time, None, False
        elif text == "baseline_end":
            self.marker_end, self._marker_done = time, False

    def _marker_range(self, k: int) -> tuple[float, float] | None:
        start, end = self.marker_start, self.marker_end
        if self._marker_done or (start is None and end is None):
            return None
        if end is None:
            assert start is not None
            end = start + self.cfg.baseline_s
        if start is None or start >= end:
            start = end - self.cfg.baseline_s
        return (start, end) if k >= end else None

    def update(self, k: int, values: Mapping[Input, float | None]) -> None:
        """Record the values of feature second ``k`` and refresh the references."""
        cfg = self.cfg
        if self.first_tick is None:
            self.first_tick = k
        row = k - self.first_tick
        if row < HISTORY_CAP_S:
            if row >= len(self._hist):
                grow = np.full((_CHUNK, len(INPUTS)), np.nan)
                self._hist = np.concatenate([self._hist, grow])
            self._n = row + 1
        slot = k % self._win
        self._ring[slot, :] = np.nan
        for i, name in enumerate(INPUTS):
            v = values.get(name)
            if v is None or not math.isfinite(v):
                continue
            self._ring[slot, i] = SIGN[i] * v
            if row < HISTORY_CAP_S:
                self._hist[row, i] = v
            ref = self._ref[i]
            if ref is not None and ref.final:
                continue
            first = self._first_valid[i]
            if first is None:
                first = self._first_valid[i] = row
            if row - first < cfg.settle_s:
                continue
            self._count[i] += 1
            count = self._count[i]
            final = count >= cfg.baseline_s
            due = count == math.ceil(cfg.baseline_min_s) or count % ADAPT_EVERY_S == 0
            if count >= cfg.baseline_min_s and (final or due) and row < HISTORY_CAP_S:
                col = self._hist[first + math.ceil(cfg.settle_s) : self._n, i]
                valid = col[~np.isnan(col)]
                self._ref[i] = self._reference(i, valid, final)
        rng = self._marker_range(k)
        if rng is not None:
            self._marker_done = True
            lo = max(0, math.ceil(rng[0]) - self.first_tick)
            hi = min(self._n, math.ceil(rng[1]) - self.first_tick)
            for i in range(len(INPUTS)):
                col = self._hist[lo:hi, i] if hi > lo else np.empty(0)
                valid = col[~np.isnan(col)]
                if len(valid) >= cfg.baseline_min_s:
                    self._ref[i] = self._reference(i, valid, True)
                    self._from_marker[i] = True
                    self.source = "marker"

        if cfg.adapt_window_s > 0 and k % ADAPT_EVERY_S == 0:
            self._adapt()

    def _adapt(self) -> None:
        """Refresh the habituation levels (every ``ADAPT_EVERY_S`` seconds, on the clock grid)."""
        min_valid = min(self._win, int(self.cfg.baseline_min_s))
        counts = np.sum(~np.isnan(self._ring), axis=0)
        if not counts.any():
            self._adapted = [None] * len(INPUTS)
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
            q = np.nanquantile(self._ring, self.cfg.adapt_quantile, axis=0)
        self._adapted = [
            float(q[i]) if counts[i] >= min_valid else None for i in range(len(INPUTS))
        ]

    def reference(self, name: Input) -> Reference | None:
        return self._ref[INPUTS.index(name)]

    def center(self, name: Input) -> float | None:
        """Reference level in arousal orientation (sign flipped for ln RMSSD).

        The baseline median, raised to the recent lower quantile when that is higher.
        """
        i = INPUTS.index(name)
        ref = self._ref[i]
        if ref is None:
            return None
        center = SIGN[i] * ref.median
        adapted = self._adapted[i]
        if ref.final and adapted is not None and adapted > center:
            return adapted
        return center


@dataclass(frozen=True, slots=True)
class IndexResult:
    index: float | None
    contributions: dict[str, float]
    z: dict[Input, float]  # unclipped robust z (positive = towards arousal)
    final: bool  # every input used had a final baseline


def arousal_index(
    config: AnalysisConfig, baselines: Baselines, values: Mapping[Input, float | None]
) -> IndexResult:
    """Arousal index 0-100 from whatever inputs are present.

    ``z`` is the robust z-score of each input against its reference (sign flipped for ln RMSSD,
    so positive always means "more aroused"), clipped to ``[0, z_cap]`` for the index. EDA
    domain = weighted mean of tonic and SCR-rate z; cardiac domain = weighted mean of HR and
    RMSSD z; the index is ``points_per_sd`` times the mean of the domains present, capped at 100.
    Contributions are each input's share of those points (keys ``eda``, ``hr``, ``rmssd``; they
    sum to the index). While any input has a final baseline, only final baselines are used.
    """
    cfg = config
    refs = [baselines.reference(n) for n in INPUTS]
    vals = [values.get(n) for n in INPUTS]
    use_final = any(
        r is not None and r.final and v is not None for r, v in zip(refs, vals, strict=True)
    )
    z: dict[Input, float] = {}
    for i, name in enumerate(INPUTS):
        v, ref = vals[i], refs[i]
        if v is None or ref is None or (use_final and not ref.final):
            continue
        center = baselines.center(name)
        assert center is not None
        z[name] = (SIGN[i] * v - center) / ref.scale
    if not z:
        return IndexResult(None, {}, z, False)
    cap = cfg.z_cap
    weights = (cfg.weight_tonic, cfg.weight_scr_rate, cfg.weight_hr, cfg.weight_rmssd)
    domains: tuple[tuple[Input, Input, str, str], ...] = (
        ("tonic", "scr_rate", "eda", "eda"),
        ("hr", "ln_rmssd", "hr", "rmssd"),
    )
    n_dom = sum(1 for a, b, _, _ in domains if a in z or b in z)
    parts: dict[str, float] = {}
    for j, (a, b, key_a, key_b) in enumerate(domains):
        wa, wb = weights[2 * j], weights[2 * j + 1]
        za, zb = z.get(a), z.get(b)
        if za is None and zb is None:
            continue
        if za is not None and zb is not None:
            wsum = wa + wb
            fa, fb = (wa / wsum, wb / wsum) if wsum > 0 else (0.5, 0.5)
        else:
            fa = fb = 1.0
        scale = cfg.points_per_sd / n_dom
        if za is not None:
            parts[key_a] = parts.get(key_a, 0.0) + scale * fa * min(max(za, 0.0), cap)
        if zb is not None:
            parts[key_b] = parts.get(key_b, 0.0) + scale * fb * min(max(zb, 0.0), cap)
    total = sum(parts.values())
    if total > 100.0:
        parts = {k: v * 100.0 / total for k, v in parts.items()}
        total = 100.0
    return IndexResult(total, parts, z, use_final)
