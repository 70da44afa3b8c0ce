"""The per-session streaming analyzer: inputs in, events out, in time order behind a watermark.

Determinism: samples are buffered per (stream, device) and processed one feature second at a time
(second ``k`` takes the samples with ``k - 1 <= t < k``) once the watermark (latest sample time
seen minus ``lateness_s``) has passed ``k``. What a second produces therefore depends only on the
data, never on how it was split into batches. Samples older than the part already processed are
late: they are counted and ignored.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from services.analysis.core.baseline import Baselines, Input, arousal_index
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
#: Motion seen on a device's ACC keeps its EDA/HR "degraded" this long (s).
MOTION_HOLD_S = 2.0


@dataclass(slots=True)
class _Pending:
    times: list[npt.NDArray[np.float64]] = field(default_factory=list)
    values: list[npt.NDArray[np.float64]] = field(default_factory=list)
    n: int = 0


class _AccProcessor:
    """Motion from the spread of the acceleration magnitude within each second."""

    def __init__(self, config: AnalysisConfig) -> None:
        self.cfg = config
        self.last_valid_t = -math.inf
        self.last_motion_t = -math.inf
        self.last_t = -math.inf

    def feed_array(self, times: npt.NDArray[np.float64], values: npt.NDArray[np.float64]) -> None:
        keep = times > self.last_t
        times, values = times[keep], values[keep]
        if len(times) == 0:
            return
        self.last_t = float(times[-1])
        mag = np.sqrt(np.sum(values * values, axis=1))
        ok = np.isfinite(mag) & (mag < 32.0)
        if not ok.any():
            return
        self.last_valid_t = float(times[ok][-1])
        m = mag[ok]
        if len(m) >= 2 and float(np.std(m)) > self.cfg.motion_std_g:
            self.last_motion_t = self.last_valid_t

    def tick(self, k: int, *, in_gap: bool) -> QualityState:
        if in_gap or k - self.last_valid_t > 5.0:
            return "lost"
        return "degraded" if k - self.last_motion_t <= MOTION_HOLD_S else "good"


class SessionAnalyzer:
    """Streaming analysis of one session. See the module docstring for the time model."""

    def __init__(self, config: AnalysisConfig | None = None) -> None:
        self.cfg = config or AnalysisConfig()
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._markers: list[MarkerInput] = []
        self._gaps: list[GapInput] = []
        self._eda: dict[str, EdaProcessor] = {}
        self._hr: dict[str, HrProcessor] = {}
        self._rr: dict[str, RrProcessor] = {}
        self._acc: dict[str, _AccProcessor] = {}
        self._max_seen = -math.inf
        self._next_tick: int | None = None
        self._quality: dict[str, QualityState] = {}
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
            self._markers.append(item)
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
        out = self._advance(math.floor(self._max_seen) + 1.0) if self._pending else []
        if self._next_tick is not None:
            last = float(min(self._next_tick - 1, math.ceil(self._max_seen)))
            out.extend(self._episodes.finish(last))
        self._finished = True
        return out

    def _add_samples(self, batch: SampleBatch) -> None:
        if batch.stream not in ANALYSED:
            return
        times = np.asarray(batch.times, dtype=np.float64)
        values = np.asarray(batch.values, dtype=np.float64)
        if times.ndim != 1 or len(values) != len(times):
            raise InputError(
                f"{batch.stream}/{batch.device}: {len(times)} times but {len(values)} values"
            )
        if batch.stream == "acc" and (values.ndim != 2 or values.shape[1:] != (3,)):
            raise InputError(f"acc/{batch.device}: values must have shape (n, 3)")
        if batch.stream != "acc" and values.ndim != 1:
            raise InputError(f"{batch.stream}/{batch.device}: values must have shape (n,)")
        finite = np.isfinite(times)
        if not finite.all():
            self.dropped_samples += int((~finite).sum())
            times, values = times[finite], values[finite]
        if len(times) == 0:
            return
        if np.any(np.diff(times) < 0):
            order = np.argsort(times, kind="stable")
            times, values = times[order], values[order]
        if self._next_tick is not None:
            boundary = self._next_tick - 1
            late = times < boundary
            if late.any():
                n_late = int(late.sum())
                self.late_samples += n_late
                log.debug("%d late %s samples from %s ignored", n_late, batch.stream, batch.device)
                times, values = times[~late], values[~late]
                if len(times) == 0:
                    return
        pend = self._pending.setdefault((batch.stream, batch.device), _Pending())
        pend.times.append(times)
        pend.values.append(values)
        pend.n += len(times)
        self._max_seen = max(self._max_seen, float(times[-1]))

    # -- processing --------------------------------------------------------------------------------
    def _advance(self, watermark: float) -> list[Event]:
        if self._next_tick is None:
            starts = [float(p.times[0][0]) for p in self._pending.values() if p.n]
            if not starts:
                return []
            self._next_tick = math.floor(min(starts)) + 1
        if self._next_tick > watermark:
            return []
        last_tick = math.floor(watermark)
        # Take every pending sample that belongs to seconds up to last_tick.
        work: list[tuple[tuple[str, str], npt.NDArray[np.float64], npt.NDArray[np.float64]]] = []
        for key in sorted(self._pending):
            pend = self._pending[key]
            if not pend.n:
                continue
            times = np.concatenate(pend.times) if len(pend.times) > 1 else pend.times[0]
            values = np.concatenate(pend.values) if len(pend.values) > 1 else pend.values[0]
            if np.any(np.diff(times) < 0):
                order = np.argsort(times, kind="stable")
                times, values = times[order], values[order]
            cut = int(np.searchsorted(times, last_tick, side="left"))
            pend.times = [times[cut:]] if cut < len(times) else []
            pend.values = [values[cut:]] if cut < len(times) else []
            pend.n = len(times) - cut
            if cut:
                work.append((key, times[:cut], values[:cut]))
        starts_idx = [0] * len(work)
        out: list[Event] = []
        for k in range(self._next_tick, last_tick + 1):
            for j, (key, times, values) in enumerate(work):
                i0 = starts_idx[j]
                i1 = int(np.searchsorted(times, k, side="left"))
                if i1 > i0:
                    self._feed(key, times[i0:i1], values[i0:i1])
                    starts_idx[j] = i1
            out.extend(self._tick(k))
        self._next_tick = last_tick + 1
        return out

    def _feed(
        self, key: tuple[str, str], times: npt.NDArray[np.float64], values: npt.NDArray[np.float64]
    ) -> None:
        stream, device = key
        if stream == "acc":
            self._acc.setdefault(device, _AccProcessor(self.cfg)).feed_array(times, values)
            return
        t_list: list[float] = times.tolist()
        v_list: list[float] = values.tolist()
        if stream == "eda":
            proc_e = self._eda.get(device)
            if proc_e is None:
                proc_e = self._eda[device] = EdaProcessor(self.cfg, device)
            proc_e.feed(t_list, v_list)
        elif stream == "hr":
            proc_h = self._hr.get(device)
            if proc_h is None:
                proc_h = self._hr[device] = HrProcessor(self.cfg, device)
            proc_h.feed(t_list, v_list)
        else:
            proc_r = self._rr.get(device)
            if proc_r is None:
                proc_r = self._rr[device] = RrProcessor(self.cfg, device)
            proc_r.feed(t_list, v_list)

    def _in_gap(self, stream: str, device: str, k: int) -> bool:
        if not self._gaps:
            return False
        return any(
            g.stream == stream and g.device == device and g.start < k and g.end > k - 1
            for g in self._gaps
        )

    @staticmethod
    def _best(ticks: Sequence[tuple[str, QualityState]]) -> str | None:
        """Device whose stream is in the best state (ties: device name)."""
        if not ticks:
            return None
        return min(ticks, key=lambda dq: (_RANK[dq[1]], dq[0]))[0]

    def _tick(self, k: int) -> list[Event]:
        out: list[Event] = []
        while self._markers and self._markers[0].time < k:
            m = self._markers.pop(0)
            self._baselines.marker(m.time, m.text)
        if self._gaps:
            self._gaps = [g for g in self._gaps if g.end > k - 3600]
        motion = {d: a.tick(k, in_gap=self._in_gap("acc", d, k)) for d, a in self._acc.items()}
        moving = {d for d, q in motion.items() if q == "degraded"}
        eda_ticks: dict[str, EdaTick] = {}
        for d, proc_e in self._eda.items():
            eda_ticks[d] = proc_e.tick(k, motion=d in moving, in_gap=self._in_gap("eda", d, k))
            out.extend(proc_e.take_events())
        hr_ticks: dict[str, HrTick] = {
            d: p.tick(k, motion=d in moving, in_gap=self._in_gap("hr", d, k))
            for d, p in self._hr.items()
        }
        rr_ticks: dict[str, RrTick] = {
            d: p.tick(k, in_gap=self._in_gap("rr", d, k)) for d, p in self._rr.items()
        }
        quality: dict[str, str] = {}
        eda = hr = rr = None
        if eda_ticks:
            dev = self._best([(d, t.quality) for d, t in eda_ticks.items()])
            assert dev is not None
            eda = eda_ticks[dev]
            quality["eda"] = eda.quality
        if hr_ticks:
            dev = self._best([(d, t.quality) for d, t in hr_ticks.items()])
            assert dev is not None
            hr = hr_ticks[dev]
            quality["hr"] = hr.quality
        if rr_ticks:
            dev = self._best([(d, t.quality) for d, t in rr_ticks.items()])
            assert dev is not None
            rr = rr_ticks[dev]
            quality["rr"] = rr.quality
        if motion:
            dev = self._best([(d, "good" if q == "good" else "lost" if q == "lost" else "degraded")
                              for d, q in motion.items()])
            assert dev is not None
            quality["acc"] = motion[dev]
        hr_value = hr.hr if hr is not None and hr.hr is not None else None
        if hr_value is None and rr is not None:
            hr_value = rr.hr
        rmssd = rr.rmssd if rr is not None else None
        values: dict[Input, float | None] = {
            "tonic": eda.tonic if eda is not None else None,
            "scr_rate": eda.scr_rate if eda is not None else None,
            "hr": hr_value,
            "ln_rmssd": math.log(rmssd) if rmssd is not None and rmssd > 0 else None,
        }
        self._baselines.update(k, values)
        res = arousal_index(self.cfg, self._baselines, values)
        for stream, state in quality.items():
            if self._quality.get(stream) != state:
                self._quality[stream] = state  # type: ignore[assignment]
                out.append(QualityChange(float(k), stream, state))  # type: ignore[arg-type]
        out.append(
            FeatureRow(
                time=float(k),
                hr=hr_value,
                rmssd=rmssd,
                eda_tonic=eda.tonic if eda is not None else None,
                eda_phasic=eda.phasic if eda is not None else None,
                scr_rate=eda.scr_rate if eda is not None else None,
                arousal_index=res.index,
                contributions=res.contributions,
                quality=quality,
            )
        )
        episode_index = res.index if res.final else None
        out.extend(self._episodes.step(float(k), episode_index, res.contributions, res.z))
        return out

    def state_nbytes(self) -> int:
        """Approximate memory held by this session's state, in bytes."""
        n = self._baselines.nbytes()
        for pend in self._pending.values():
            n += sum(a.nbytes for a in pend.times) + sum(a.nbytes for a in pend.values)
        for proc_e in self._eda.values():
            n += 64 * (len(proc_e._scr_peaks) + len(proc_e._tonic_hist) + len(proc_e._range_hist))
            n += 24 * 3 * len(proc_e._out_t) + 1024
        for proc_h in self._hr.values():
            n += 64 * len(proc_h._window) + 512
        for proc_r in self._rr.values():
            n += 64 * (len(proc_r._beats) + len(proc_r._diffs) + len(proc_r._events)) + 1024
        n += 128 * (len(self._markers) + len(self._gaps)) + 4096
        return n
