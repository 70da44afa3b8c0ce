"""Per-input robust baselines (median and scaled MAD) and the arousal index built on them."""

from __future__ import annotations

import math
from array import array
from collections.abc import Mapping, Sequence
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
#: +1 where a higher value means more aroused, -1 where lower does (RMSSD).
SIGN: Final = (1.0, 1.0, 1.0, -1.0)
#: The habituation level is refreshed this often (s).
ADAPT_EVERY_S: Final = 30


@dataclass(frozen=True, slots=True)
class Reference:
    median: float
    scale: float
    final: bool


Values = Mapping[Input, float | None] | Sequence[float | None]


def _as_list(values: Values) -> list[float | None]:
    if isinstance(values, Mapping):
        return [values.get(n) for n in INPUTS]
    return list(values)


class Baselines:
    """Collects per-second input values and derives a robust reference for each input.

    Automatic baseline: the first ``baseline_s`` valid seconds of each input after its first
    ``settle_s`` seconds (inputs start at different times: RMSSD needs a minute of beats; a sensor
    may be attached late). A provisional reference from the valid seconds so far is available
    after ``baseline_min_s``.
    Marker baseline: the range between ``baseline_start`` and ``baseline_end`` markers (or
    ``baseline_s`` after a lone start marker, or before a lone end marker) replaces the automatic
    one from the second it is complete; inputs with fewer than ``baseline_min_s`` valid seconds in
    the range keep their automatic reference.
    Habituation: see :meth:`center`.
    """

    def __init__(self, config: AnalysisConfig) -> None:
        self.cfg = config
        self.first_tick: int | None = None
        n = len(INPUTS)
        self._hist = [array("d") for _ in range(n)]  # one value per second, NaN when missing
        self._count = [0] * n
        self._first_valid: list[int | None] = [None] * n
        self._ref: list[Reference | None] = [None] * n
        self._from_marker = [False] * n
        self.marker_start: float | None = None
        self.marker_end: float | None = None
        self._marker_done = False
        self.source = "auto"
        self._win = max(1, int(config.adapt_window_s))
        self._ring = [array("d", [math.nan]) * self._win for _ in range(n)]
        self._adapted: list[float | None] = [None] * n  # trailing lower quantile
        self._settled: list[float | None] = [None] * n  # trailing median
        #: Reference level per input in arousal orientation (see :meth:`center`).
        self.centers: list[float | None] = [None] * n
        self._dirty = False  # references or habituation levels changed: refresh ``centers``

    def nbytes(self) -> int:
        return sum(a.itemsize * len(a) for a in (*self._hist, *self._ring))

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

    def _reference(self, i: int, lo: int, hi: int, final: bool) -> Reference | None:
        col = np.frombuffer(self._hist[i], dtype=np.float64)[max(lo, 0) : hi]
        valid = col[~np.isnan(col)]
        if len(valid) == 0:
            return None
        med = float(np.median(valid))
        return Reference(med, self._scale(i, valid, med), final)

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

    def update(self, k: int, values: Values) -> None:
        """Record the values of feature second ``k`` and refresh the references."""
        cfg = self.cfg
        vals = values if type(values) is list else _as_list(values)
        if self.first_tick is None:
            self.first_tick = k
        row = k - self.first_tick
        keep = row < HISTORY_CAP_S
        slot = k % self._win
        settle = cfg.settle_s
        nan = math.nan
        isfinite = math.isfinite
        refs = self._ref
        for i in range(4):
            v = vals[i]
            ring = self._ring[i]
            if v is None or not isfinite(v):
                ring[slot] = nan
                if keep:
                    self._hist[i].append(nan)
                continue
            ring[slot] = SIGN[i] * v
            if keep:
                self._hist[i].append(v)
            ref = refs[i]
            if ref is not None and ref.final:
                continue
            first = self._first_valid[i]
            if first is None:
                first = self._first_valid[i] = row
            if row - first < settle:
                continue
            self._count[i] += 1
            count = self._count[i]
            final = count >= cfg.baseline_s
            due = count == math.ceil(cfg.baseline_min_s) or count % ADAPT_EVERY_S == 0
            if count >= cfg.baseline_min_s and (final or due) and keep:
                refs[i] = self._reference(i, first + math.ceil(settle), row + 1, final)
                self._dirty = True
        if self.marker_start is not None or self.marker_end is not None:
            self._apply_marker(k, row)
        if k % ADAPT_EVERY_S == 0 and cfg.adapt_window_s > 0:
            self._adapt()
            self._dirty = True
        if self._dirty:
            self._dirty = False
            self._refresh_centers()

    def _refresh_centers(self) -> None:
        refs = self._ref
        adapted_all = self._adapted
        settled_all = self._settled
        down = self.cfg.adapt_down
        centers = self.centers
        for i in range(4):
            ref = refs[i]
            if ref is None:
                centers[i] = None
                continue
            center = SIGN[i] * ref.median
            if ref.final:
                settled = settled_all[i]
                if down and settled is not None and settled < center:
                    center = settled  # the baseline itself was aroused: follow the calmer level
                adapted = adapted_all[i]
                if adapted is not None and adapted > center:
                    center = adapted
            centers[i] = center

    def _apply_marker(self, k: int, row: int) -> None:
        """Replace the references by the marker range once it is complete."""
        rng = self._marker_range(k)
        if rng is None or self.first_tick is None:
            return
        cfg = self.cfg
        self._marker_done = True
        lo = math.ceil(rng[0]) - self.first_tick
        hi = min(row + 1, math.ceil(rng[1]) - self.first_tick)
        for i in range(len(INPUTS)):
            col = np.frombuffer(self._hist[i], dtype=np.float64)[max(lo, 0) : max(hi, 0)]
            if int(np.count_nonzero(~np.isnan(col))) >= cfg.baseline_min_s:
                self._ref[i] = self._reference(i, lo, hi, True)
                self._from_marker[i] = True
                self.source = "marker"
                self._dirty = True

    def _adapt(self) -> None:
        """Refresh the habituation levels (every ``ADAPT_EVERY_S`` seconds, on the clock grid)."""
        min_valid = min(self._win, int(self.cfg.baseline_min_s))
        for i in range(len(INPUTS)):
            if self._ref[i] is None:
                self._adapted[i] = self._settled[i] = None
                continue
            ring = np.frombuffer(self._ring[i], dtype=np.float64)
            valid = ring[~np.isnan(ring)]
            if len(valid) < min_valid:
                self._adapted[i] = self._settled[i] = None
                continue
            # "lower" sample quantiles (observed values), via one partial sort
            kth = math.floor(self.cfg.adapt_quantile * (len(valid) - 1))
            kmed = (len(valid) - 1) // 2
            part = np.partition(valid, (kth, kmed))
            self._adapted[i] = float(part[kth])
            self._settled[i] = float(part[kmed])

    def snapshot(self) -> tuple[tuple[float, float] | None, ...]:
        """The calm reference of every input as (level in arousal orientation, scale): the
        reference without habituation (the baseline median, lowered to the trailing median when
        the baseline was aroused), so that a state the reference has habituated to still counts
        as part of the rise that a release must give back."""
        out: list[tuple[float, float] | None] = []
        down = self.cfg.adapt_down
        for i, ref in enumerate(self._ref):
            if ref is None:
                out.append(None)
                continue
            level = SIGN[i] * ref.median
            settled = self._settled[i]
            if ref.final and down and settled is not None and settled < level:
                level = settled
            out.append((level, ref.scale))
        return tuple(out)

    def reference(self, name: Input) -> Reference | None:
        return self._ref[INPUTS.index(name)]

    def center(self, name: Input) -> float | None:
        """Reference level in arousal orientation (sign flipped for ln RMSSD).

        The baseline median, raised to the recent lower quantile (habituation) when that is
        further towards arousal.
        """
        return self.centers[INPUTS.index(name)]


class IndexResult:
    """One second's index. A plain class with ``Final`` attributes rather than a frozen
    dataclass: built every second, and a frozen dataclass's ``__init__`` is the slow
    ``object.__setattr__`` path (also when compiled with mypyc)."""

    __slots__ = ("contributions", "final", "index", "z")

    def __init__(
        self,
        index: float | None,
        contributions: dict[str, float],
        z: dict[Input, float],
        final: bool,
    ) -> None:
        self.index: Final = index
        self.contributions: Final = contributions
        self.z: Final = z  # unclipped robust z (positive = towards arousal)
        self.final: Final = final  # every input used had a final baseline


def arousal_index(config: AnalysisConfig, baselines: Baselines, values: Values) -> IndexResult:
    """Arousal index 0-100 from whatever inputs are present.

    ``z`` is the robust z-score of each input against its reference (sign flipped for ln RMSSD,
    so positive always means "more aroused"), clipped to ``[0, z_cap]`` for the index. EDA
    domain = weighted mean of tonic and SCR-rate z; cardiac domain = weighted mean of HR and
    RMSSD z; the index is ``points_per_sd`` times the domain present, or with both domains
    ``points_per_sd * (domain_weight_eda * EDA + domain_weight_cardiac * cardiac)``, capped at 100.
    Contributions are each input's share of those points (keys ``eda``, ``hr``, ``rmssd``; they
    sum to the index). While any input has a final baseline, only final baselines are used.
    """
    cfg = config
    vals = values if type(values) is list else _as_list(values)
    refs = baselines._ref
    centers = baselines.centers
    use_final = False
    for i in range(4):
        r = refs[i]
        if r is not None and r.final and vals[i] is not None:
            use_final = True
            break
    zs: list[float | None] = [None, None, None, None]
    z: dict[Input, float] = {}
    for i in range(4):
        v, r, c = vals[i], refs[i], centers[i]
        if v is None or r is None or c is None or (use_final and not r.final):
            continue
        zs[i] = z[INPUTS[i]] = (SIGN[i] * v - c) / r.scale
    if not z:
        return IndexResult(None, {}, z, False)
    cap = cfg.z_cap
    z_t, z_s, z_h, z_r = zs
    has_eda = z_t is not None or z_s is not None
    has_card = z_h is not None or z_r is not None
    pts = cfg.points_per_sd
    eda = 0.0
    if z_t is not None and z_s is not None:
        fa, fb = _shares(cfg.weight_tonic, cfg.weight_scr_rate, True, True)
        eda = fa * _clip(z_t, cap) + fb * _clip(z_s, cap)
    elif z_t is not None:
        eda = _clip(z_t, cap)
    elif z_s is not None:
        eda = _clip(z_s, cap)
    hr_part = rmssd_part = 0.0
    if z_h is not None and z_r is not None:
        fa, fb = _shares(cfg.weight_hr, cfg.weight_rmssd, True, True)
        hr_part, rmssd_part = fa * _clip(z_h, cap), fb * _clip(z_r, cap)
    elif z_h is not None:
        hr_part = _clip(z_h, cap)
    elif z_r is not None:
        rmssd_part = _clip(z_r, cap)
    card = hr_part + rmssd_part
    if has_eda and has_card:
        mean = 0.5 * (eda + card)
        level = mean if mean > eda or not cfg.eda_alone else eda
    else:
        level = eda + card
    total = pts * level
    parts: dict[str, float] = {}
    evidence = eda + card
    if has_eda:
        parts["eda"] = total * eda / evidence if evidence > 0 else 0.0
    if z_h is not None:
        parts["hr"] = total * hr_part / evidence if evidence > 0 else 0.0
    if z_r is not None:
        parts["rmssd"] = total * rmssd_part / evidence if evidence > 0 else 0.0
    if total > 100.0:
        parts = {k: v * 100.0 / total for k, v in parts.items()}
        total = 100.0
    return IndexResult(total, parts, z, use_final)


def _clip(z: float, cap: float) -> float:
    return 0.0 if z < 0.0 else cap if z > cap else z


def _shares(wa: float, wb: float, has_a: bool, has_b: bool) -> tuple[float, float]:
    """Normalised weights of two inputs of one domain (1.0 for an input that is alone)."""
    if has_a and has_b:
        wsum = wa + wb
        return (wa / wsum, wb / wsum) if wsum > 0 else (0.5, 0.5)
    return 1.0, 1.0
