"""Per-input robust baselines (median and scaled MAD) and the arousal index built on them."""

from __future__ import annotations

import math
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


@dataclass(frozen=True, slots=True)
class Reference:
    median: float
    scale: float
    final: bool


class Baselines:
    """Collects per-second input values and derives a robust reference for each input.

    Automatic baseline: the first ``baseline_s`` valid seconds of each input (inputs start at
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
        self._ref: list[Reference | None] = [None] * len(INPUTS)
        self._from_marker = [False] * len(INPUTS)
        self.marker_start: float | None = None
        self.marker_end: float | None = None
        self._marker_done = False
        self.source = "auto"

    def nbytes(self) -> int:
        return int(self._hist.nbytes)

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
        for i, name in enumerate(INPUTS):
            v = values.get(name)
            if v is None or not math.isfinite(v):
                continue
            if row < HISTORY_CAP_S:
                self._hist[row, i] = v
            ref = self._ref[i]
            if ref is not None and ref.final:
                continue
            self._count[i] += 1
            if self._count[i] >= cfg.baseline_min_s and row < HISTORY_CAP_S:
                col = self._hist[: self._n, i]
                valid = col[~np.isnan(col)]
                self._ref[i] = self._reference(i, valid, self._count[i] >= cfg.baseline_s)
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

    def reference(self, name: Input) -> Reference | None:
        return self._ref[INPUTS.index(name)]


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

    ``z`` is the robust z-score of each input against its baseline (sign flipped for ln RMSSD, so
    positive always means "more aroused"), clipped to ``[0, z_cap]``. EDA domain = weighted mean
    of tonic and SCR-rate z; cardiac domain = weighted mean of HR and RMSSD z; the index is
    ``points_per_sd`` times the mean of the domains present, capped at 100. Contributions are each
    input's share of those points (keys ``eda``, ``hr``, ``rmssd``; they sum to the index).
    """
    cfg = config
    weights: dict[Input, float] = {
        "tonic": cfg.weight_tonic,
        "scr_rate": cfg.weight_scr_rate,
        "hr": cfg.weight_hr,
        "ln_rmssd": cfg.weight_rmssd,
    }
    z: dict[Input, float] = {}
    use_final = any(
        (r := baselines.reference(n)) is not None and r.final and values.get(n) is not None
        for n in INPUTS
    )
    for name in INPUTS:
        v = values.get(name)
        ref = baselines.reference(name)
        if v is None or ref is None or (use_final and not ref.final):
            continue
        zz = (v - ref.median) / ref.scale
        z[name] = -zz if name == "ln_rmssd" else zz
    domains = [d for d in (("tonic", "scr_rate"), ("hr", "ln_rmssd")) if any(n in z for n in d)]
    if not domains:
        return IndexResult(None, {}, z, False)
    parts: dict[str, float] = {"eda": 0.0, "hr": 0.0, "rmssd": 0.0}
    key = {"tonic": "eda", "scr_rate": "eda", "hr": "hr", "ln_rmssd": "rmssd"}
    for dom in domains:
        present = [n for n in dom if n in z]
        wsum = sum(weights[n] for n in present)
        for n in present:
            zc = min(max(z[n], 0.0), cfg.z_cap)
            w = weights[n] / wsum if wsum > 0 else 1.0 / len(present)
            parts[key[n]] += cfg.points_per_sd * w * zc / len(domains)
    total = parts["eda"] + parts["hr"] + parts["rmssd"]
    if total > 100.0:
        parts = {k: v * 100.0 / total for k, v in parts.items()}
        total = 100.0
    present_keys = {key[n] for n in z}
    contributions = {k: v for k, v in parts.items() if k in present_keys}
    return IndexResult(total, contributions, z, use_final)
