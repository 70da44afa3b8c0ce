"""The per-session streaming analyzer: inputs in, events out, in time order behind a watermark.

Determinism: samples are buffered per (stream, device) and processed one feature second at a time
(second ``k`` takes the samples with ``k - 1 <= t < k``) once the watermark (latest sample time
seen minus ``lateness_s``) has passed ``k``. What a second produces therefore depends only on the
data, never on how it was split into batches. Samples older than the part already processed are
late: they are counted and ignored.
"""

from __future__ import annotations

import bisect
import logging
import math
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from services.analysis.core.baseline import Baselines, arousal_index
from services.analysis.core.cardiac import HrProcessor, HrTick, RrProcessor, RrTick
from services.analysis.core.config import AnalysisConfig
from services.analysis.core.eda import EdaProcessor, EdaTick
from services.analysis.core.episodes import EpisodeDetector
from services.analysis.core.errors import InputError
from services.analysis.core.types import (
    Event,
    FeatureRow,
    GapInput,
    MarkerInput,
    QualityChange,
    QualityState,
    SampleBatch,
)

log = logging.getLogger(__name__)

#: Streams with a detector; others (ppg, ecg, temp) are accepted and ignored.
ANALYSED = ("eda", "hr", "rr", "acc")
_RANK: dict[QualityState, int] = {"good": 0, "degraded": 1, "lost": 2}
_T = TypeVar("_T", EdaTick, HrTick, RrTick)
#: Motion seen on a device's ACC keeps its EDA/HR "degraded" this long (s).
MOTION_HOLD_S = 2.0


@dataclass(slots=True)
class _Pending:
    """Accepted, not yet processed samples of one (stream, device); ``pos`` = first unprocessed."""

    times: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    pos: int = 0

    def compact(self) -> None:
        if self.pos > 4096 or self.pos == len(self.times):
            del self.times[: self.pos]
            del self.values[: self.pos]
            self.pos = 0


class _AccProcessor:
    """Motion from the spread of the acceleration magnitude (g) within each second."""

    def __init__(self, config: AnalysisConfig, device: str) -> None:
        self.cfg = config
        self.device = device
        self.last_valid_t = -math.inf
        self.last_motion_t = -math.inf

    def feed(self, times: list[float], mags: list[float]) -> None:
        ok = [m for m in mags if m < 32.0]  # also drops NaN
        if not ok:
            return
        self.last_valid_t = times[-1]
        n = len(ok)
        if n >= 2:
            mean = math.fsum(ok) / n
            var = math.fsum((m - mean) ** 2 for m in ok) / n
            if var > self.cfg.motion_std_g**2:
                self.last_motion_t = times[-1]

    def tick(self, k: int, *, in_gap: bool) -> QualityState:
        if in_gap or k - self.last_valid_t > 5.0:
            return "lost"
        return "degraded" if k - self.last_motion_t <= MOTION_HOLD_S else "good"


_Processor = EdaProcessor | HrProcessor | RrProcessor | _AccProcessor


class SessionAnalyzer:
    """Streaming analysis of one session. See the module docstring for the time model."""

    def __init__(self, config: AnalysisConfig | None = None) -> None:
        self.cfg = config or AnalysisConfig()
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._keys: list[tuple[str, str]] = []
        self._procs: dict[tuple[str, str], _Processor] = {}
        self._markers: list[MarkerInput] = []
        self._gaps: list[GapInput] = []
        self._eda: dict[str, EdaProcessor] = {}
        self._hr: dict[str, HrProcessor] = {}
        self._rr: dict[str, RrProcessor] = {}
        self._acc: dict[str, _AccProcessor] = {}
        self._max_seen = -math.inf
        self._next_tick: int | None = None
        self._quality: dict[str, str] = {}
        self._baselines = Baselines(self.cfg)
        self._episodes = EpisodeDetector(self.cfg)
        self._finished = False
        self.late_samples = 0
        self.dropped_samples = 0

    # -- input -------------------------------------------------------------------------------------
    def update(self, item: SampleBatch | MarkerInput | GapInput) -> list[Event]:
        """Take one input; return the events of every feature second that became final."""
        if self._finished:
            raise InputError("update() after finish()")
        if isinstance(item, MarkerInput):
            bisect.insort(self._markers, item, key=lambda m: m.time)
            return []
        if isinstance(item, GapInput):
            self._gaps.append(item)
            return []
        self._add_samples(item)
        return self._advance(self._max_seen - self.cfg.lateness_s)

    def finish(self) -> list[Event]:
        """End of data: process everything, close open episodes at the last data time."""
        if self._finished:
            return []
        self._finished = True
        if not math.isfinite(self._max_seen):
            return []
        out = self._advance(math.floor(self._max_seen) + 1.0)
        if self._next_tick is not None:
            last = float(min(self._next_tick - 1, math.ceil(self._max_seen)))
            out.extend(self._episodes.finish(last))
        return out

    def _add_samples(self, batch: SampleBatch) -> None:
        stream = batch.stream
        if stream not in ANALYSED:
            return
        times = np.asarray(batch.times, dtype=np.float64)
        values = np.asarray(batch.values, dtype=np.float64)
        if times.ndim != 1 or len(values) != len(times):
            raise InputError(f"{stream}/{batch.device}: {len(times)} times, {len(values)} values")
        if stream == "acc":
            if values.ndim != 2 or values.shape[1:] != (3,):
                raise InputError(f"acc/{batch.device}: values must have shape (n, 3)")
            values = np.sqrt(np.sum(values * values, axis=1))
        elif values.ndim != 1:
            raise InputError(f"{stream}/{batch.device}: values must have shape (n,)")
        key = (stream, batch.device)
        pend = self._pending.get(key)
        if pend is None:
            pend = self._pending[key] = _Pending()
            self._keys = sorted(self._pending)
        boundary = -math.inf if self._next_tick is None else self._next_tick - 1.0
        prev = pend.times[-1] if pend.times else -math.inf
        if prev < boundary:
            prev = math.nextafter(boundary, -math.inf)
        pt, pv = pend.times, pend.values
        n_before = len(pt)
        for t, v in zip(times.tolist(), values.tolist(), strict=True):
            if t > prev and t < math.inf:
                pt.append(t)
                pv.append(v)
                prev = t
            elif t < boundary:
                self.late_samples += 1
            else:
                self.dropped_samples += 1  # NaN/infinite time, duplicate or out of order
        if len(pt) > n_before:
            self._max_seen = max(self._max_seen, pt[-1])

    # -- processing --------------------------------------------------------------------------------
    def _processor(self, key: tuple[str, str]) -> _Processor:
        stream, device = key
        proc: _Processor
        if stream == "eda":
            proc = self._eda[device] = EdaProcessor(self.cfg, device)
        elif stream == "hr":
            proc = self._hr[device] = HrProcessor(self.cfg, device)
        elif stream == "rr":
            proc = self._rr[device] = RrProcessor(self.cfg, device)
        else:
            proc = self._acc[device] = _AccProcessor(self.cfg, device)
        self._procs[key] = proc
        return proc

    def _advance(self, watermark: float) -> list[Event]:
        if self._next_tick is None:
            starts = [p.times[p.pos] for p in self._pending.values() if p.pos < len(p.times)]
            if not starts:
                return []
            self._next_tick = math.floor(min(starts)) + 1
        last_tick = math.floor(watermark)
        if self._next_tick > last_tick:
            return []
        out: list[Event] = []
        pending = self._pending
        for k in range(self._next_tick, last_tick + 1):
            for key in self._keys:
                p = pending[key]
                pos = p.pos
                if pos < len(p.times) and p.times[pos] < k:
                    i1 = bisect.bisect_left(p.times, k, pos)
                    proc = self._procs.get(key) or self._processor(key)
                    proc.feed(p.times[pos:i1], p.values[pos:i1])
                    p.pos = i1
            out.extend(self._tick(k))
        self._next_tick = last_tick + 1
        for p in pending.values():
            p.compact()
        return out

    def _in_gap(self, stream: str, device: str, k: int) -> bool:
        if not self._gaps:
            return False
        return any(
            g.stream == stream and g.device == device and g.start < k and g.end > k - 1
            for g in self._gaps
        )

    @staticmethod
    def _pick(ticks: dict[str, _T]) -> _T:
        """The tick of the device whose stream is in the best state (ties: device name)."""
        if len(ticks) == 1:
            return next(iter(ticks.values()))
        best = min(ticks, key=lambda d: (_RANK[ticks[d].quality], d))
        return ticks[best]

    def _tick(self, k: int) -> list[Event]:
        out: list[Event] = []
        markers = self._markers
        while markers and markers[0].time < k:
            m = markers.pop(0)
            self._baselines.marker(m.time, m.text)
        if self._gaps and k % 60 == 0:
            self._gaps = [g for g in self._gaps if g.end > k - 3600]
        moving: set[str] = set()
        quality: dict[str, str] = {}
        if self._acc:
            acc_state: dict[str, QualityState] = {}
            for d, a in self._acc.items():
                acc_state[d] = q = a.tick(k, in_gap=self._in_gap("acc", d, k))
                if q == "degraded":
                    moving.add(d)
            quality["acc"] = min(acc_state.values(), key=_RANK.__getitem__)
        eda: EdaTick | None = None
        if self._eda:
            eda_ticks: dict[str, EdaTick] = {}
            for d, proc_e in self._eda.items():
                eda_ticks[d] = proc_e.tick(k, motion=d in moving, in_gap=self._in_gap("eda", d, k))
                out.extend(proc_e.take_events())
            eda = self._pick(eda_ticks)
            quality["eda"] = eda.quality
        hr: HrTick | None = None
        if self._hr:
            hr = self._pick(
                {
                    d: p.tick(k, motion=d in moving, in_gap=self._in_gap("hr", d, k))
                    for d, p in self._hr.items()
                }
            )
            quality["hr"] = hr.quality
        rr: RrTick | None = None
        if self._rr:
            rr = self._pick(
                {d: p.tick(k, in_gap=self._in_gap("rr", d, k)) for d, p in self._rr.items()}
            )
            quality["rr"] = rr.quality
        hr_value = hr.hr if hr is not None else None
        if hr_value is None and rr is not None:
            hr_value = rr.hr
        rmssd = rr.rmssd if rr is not None else None
        tonic = eda.tonic if eda is not None else None
        scr_rate = eda.scr_rate if eda is not None else None
        values = [  # in baseline.INPUTS order
            tonic,
            scr_rate,
            hr_value,
            math.log(rmssd) if rmssd is not None and rmssd > 0 else None,
        ]
        self._baselines.update(k, values)
        res = arousal_index(self.cfg, self._baselines, values)
        last_quality = self._quality
        for stream, state in quality.items():
            if last_quality.get(stream) != state:
                last_quality[stream] = state
                out.append(QualityChange(float(k), stream, state))  # type: ignore[arg-type]
        out.append(
            FeatureRow(
                float(k),
                hr_value,
                rmssd,
                tonic,
                eda.phasic if eda is not None else None,
                scr_rate,
                res.index,
                res.contributions,
                quality,
            )
        )
        episode_index = res.index if res.final else None
        out.extend(self._episodes.step(float(k), episode_index, res.contributions, res.z))
        return out

    def state_nbytes(self) -> int:
        """Approximate memory held by this session's state, in bytes (containers counted at
        CPython's typical per-element cost)."""
        n = self._baselines.nbytes() + 4096
        for pend in self._pending.values():
            n += 2 * 32 * (len(pend.times) - pend.pos) + 2 * 8 * len(pend.times)
        for proc_e in self._eda.values():
            n += proc_e.nbytes()
        for proc_h in self._hr.values():
            n += 80 * len(proc_h._window) + 512
        for proc_r in self._rr.values():
            n += 80 * (len(proc_r._beats) + len(proc_r._diffs) + len(proc_r._events)) + 1024
        n += 160 * (len(self._markers) + len(self._gaps)) + 1024 * len(self._acc)
        return n
