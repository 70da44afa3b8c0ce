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
import numpy.typing as npt

from rekindle.analysis.core.arousal import ArousalDetector
from rekindle.analysis.core.cardiac import HrProcessor, HrTick, RrProcessor, RrTick
from rekindle.analysis.core.config import AnalysisConfig
from rekindle.analysis.core.eda import EdaProcessor, EdaTick
from rekindle.analysis.core.errors import InputError
from rekindle.analysis.core.extensions import Detector, registered
from rekindle.analysis.core.types import (
    Event,
    FeatureRow,
    GapInput,
    MarkerInput,
    QualityChange,
    QualityState,
    SampleBatch,
)

log = logging.getLogger(__name__)

#: Streams with a detector; others (ppg, ecg, temp) are accepted and ignored. ``rr_ppg`` is RR
#: derived from PPG beside the core (``rekindle.analysis.ppg``): it is used only while the
#: device's own RR is lost or absent (see :meth:`SessionAnalyzer._tick`).
ANALYSED = ("eda", "hr", "rr", "rr_ppg", "acc")
_RANK: dict[QualityState, int] = {"good": 0, "degraded": 1, "lost": 2}
_T = TypeVar("_T", EdaTick, HrTick, RrTick)
_F64 = np.dtype(np.float64)
#: Motion seen on a device's ACC keeps its EDA/HR "degraded" this long (s).
MOTION_HOLD_S = 2.0
#: The message span that ``lateness_s`` allows for (publishers send <= 1 s per message,
#: docs/method.md section 1); :meth:`SessionAnalyzer.allow_span` widens it for longer ones.
LATENESS_SPAN_S = 1.0
#: Processed samples a stream's pending buffer may keep before they are dropped.
COMPACT_AFTER = 64


@dataclass(slots=True)
class _Pending:
    """Accepted, not yet processed samples of one (stream, device); ``pos`` = first unprocessed.

    ``proc`` is the stream's processor, created when its first samples are processed.
    """

    key: tuple[str, str]
    times: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    pos: int = 0
    proc: _Processor | None = None

    def compact(self) -> None:
        del self.times[: self.pos]
        del self.values[: self.pos]
        self.pos = 0


def _increasing(tl: list[float], times: npt.NDArray[np.float64]) -> bool:
    """Strictly increasing (False on NaN); ``tl`` is ``times`` as a list (not empty)."""
    if len(tl) < 64:  # (a plain loop: ~0.2 us for a 4-Hz second, half of ``all(map(...))``)
        it = iter(tl)
        prev = next(it)
        for t in it:
            if not prev < t:
                return False
            prev = t
        return True
    return bool((times[1:] > times[:-1]).all())


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


_Builtin = EdaProcessor | HrProcessor | RrProcessor | _AccProcessor


class _ExtensionFeed:
    """The processor of a (stream, device) that registered detectors read: each second's samples
    go to the built-in processor, if the stream has one, then to every detector that asked."""

    def __init__(
        self, stream: str, device: str, inner: _Builtin | None, targets: list[Detector]
    ) -> None:
        self.stream = stream
        self.device = device
        self.inner = inner
        self.targets = targets

    def feed(self, times: list[float], values: list[float]) -> None:
        if self.inner is not None:
            self.inner.feed(times, values)
        for det in self.targets:
            det.feed(self.stream, self.device, times, values)


_Processor = _Builtin | _ExtensionFeed
_ANALYSED_SET = frozenset(ANALYSED)
_NOBODY: frozenset[str] = frozenset()


def _pending_key(pend: _Pending) -> tuple[str, str]:
    return pend.key


class SessionAnalyzer:
    """Streaming analysis of one session. See the module docstring for the time model."""

    def __init__(self, config: AnalysisConfig | None = None, *, decomposition: bool = True) -> None:
        """``decomposition``: emit each second's :class:`EdaDecomposition` (the tonic/phasic
        samples the live service stores); off where nothing reads them (an offline analysis
        keeps only the feature rows and episodes), which saves ~5 % of its time."""
        self.cfg = config or AnalysisConfig()
        self.decomposition = decomposition
        self._lateness = self.cfg.lateness_s
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._entries: list[_Pending] = []  # sorted by key
        self._gaps: list[GapInput] = []
        # ``_gaps`` merged per (stream, device) into sorted disjoint closed intervals (starts,
        # ends), so that ``_in_gap`` costs O(log n) however many gaps a publisher sends; rebuilt
        # from ``_gaps`` whenever ``_gaps_built`` lags ``_gaps_version``. Gaps whose end lies
        # before their start are kept apart and matched as given.
        self._gap_index: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
        self._reversed_gaps: list[GapInput] = []
        self._gaps_version = 0
        self._gaps_built = -1
        self._eda: dict[str, EdaProcessor] = {}
        self._hr: dict[str, HrProcessor] = {}
        self._rr: dict[str, RrProcessor] = {}
        self._rr_ppg: dict[str, RrProcessor] = {}
        self._acc: dict[str, _AccProcessor] = {}
        self._max_seen = -math.inf
        self._next_tick: int | None = None
        self._quality: dict[str, str] = {}
        self._detector = ArousalDetector(self.cfg)
        self._finished = False
        self.late_samples = 0
        self.dropped_samples = 0
        # registered detectors (extensions.py), one each per session, run after the core every
        # second; the streams only they read do not move the watermark (the core's timing stays
        # that of its own streams), and their late or disordered samples are counted apart
        self._ext: list[Detector] = []
        self._ext_fields: list[tuple[str, ...]] = []
        self._ext_feeds: dict[str, list[Detector]] = {}
        for spec in registered():
            det = spec.factory(self.cfg.section(spec.name))
            self._ext.append(det)
            self._ext_fields.append(tuple(f.name for f in spec.fields))
            for stream in spec.streams:
                self._ext_feeds.setdefault(stream, []).append(det)
        self.extension_late = 0

    # -- input -------------------------------------------------------------------------------------
    def update(self, item: SampleBatch | MarkerInput | GapInput) -> list[Event]:
        """Take one input; return the events of every feature second that became final."""
        if self._finished:
            raise InputError("update() after finish()")
        if type(item) is SampleBatch or not isinstance(item, MarkerInput | GapInput):
            if self._add_samples(item):
                next_tick = self._next_tick
                watermark = self._max_seen - self._lateness
                if next_tick is None or watermark >= next_tick:
                    return self._advance(watermark)
            return []
        if isinstance(item, GapInput):
            self._gaps.append(item)
            self._gaps_version += 1
            if self._gaps_built == self._gaps_version - 1:
                self._index_gap(item)
                self._gaps_built = self._gaps_version
        # (markers are stored and shown by the pipeline; the detector's references are local)
        return []

    def allow_span(self, span_s: float) -> None:
        """This session's inputs come in messages spanning up to ``span_s`` seconds of data
        (a replay at ``--speed max`` joins seconds into longer messages): widen the allowance
        to ``lateness_s - LATENESS_SPAN_S + span_s``, the rule of ``lateness_s`` with this span
        in place of 1 s, so that streams out of step by one message span are not late. Never
        narrows it, and changes no result whose inputs were not late (only how far behind the
        newest data a second is processed)."""
        wanted = self.cfg.lateness_s - LATENESS_SPAN_S + span_s
        self._lateness = max(self._lateness, wanted)

    def finish(self) -> list[Event]:
        """End of data: process everything, close open episodes at the last data time."""
        if self._finished:
            return []
        self._finished = True
        if not math.isfinite(self._max_seen):
            return []
        out = self._advance(math.floor(self._max_seen) + 1.0)
        last = self.final_second
        if last is not None:
            out.extend(self._detector.finish(last))
        return out

    @property
    def final_second(self) -> float | None:
        """After :meth:`finish`: the data second at which open episodes were closed."""
        if not self._finished or self._next_tick is None or not math.isfinite(self._max_seen):
            return None
        return float(min(self._next_tick - 1, math.ceil(self._max_seen)))

    def accepts(self, stream: str) -> bool:
        """True when ``stream`` is analysed: by the core, or read by a registered detector."""
        return stream in _ANALYSED_SET or stream in self._ext_feeds

    def _add_samples(self, batch: SampleBatch) -> bool:
        """Buffer a batch's acceptable samples; True when any was accepted (of the core's own
        streams: only those move the watermark)."""
        stream = batch.stream
        if stream not in _ANALYSED_SET:
            if stream in self._ext_feeds:
                self._add_extension_samples(batch)
            return False
        times = batch.times
        values = batch.values
        if type(times) is not np.ndarray or times.dtype is not _F64:
            times = np.asarray(times, dtype=np.float64)
        if type(values) is not np.ndarray or values.dtype is not _F64:
            values = np.asarray(values, dtype=np.float64)
        if times.ndim != 1 or len(values) != len(times):
            raise InputError(f"{stream}/{batch.device}: {len(times)} times, {len(values)} values")
        if stream == "acc":
            if values.ndim != 2 or values.shape[1:] != (3,):
                raise InputError(f"acc/{batch.device}: values must have shape (n, 3)")
            values = np.sqrt(np.sum(values * values, axis=1))
        elif values.ndim != 1:
            raise InputError(f"{stream}/{batch.device}: values must have shape (n,)")
        tl = times.tolist()
        if not tl:
            return False
        key = (stream, batch.device)
        pend = self._pending.get(key)
        if pend is None:
            pend = self._pending[key] = _Pending(key)
            self._entries = sorted(self._pending.values(), key=_pending_key)
        next_tick = self._next_tick
        boundary = -math.inf if next_tick is None else next_tick - 1.0
        pt, pv = pend.times, pend.values
        prev = pt[-1] if pt else -math.inf
        if prev < boundary:
            prev = math.nextafter(boundary, -math.inf)
        last = tl[-1]
        if tl[0] > prev and last < math.inf and (len(tl) == 1 or _increasing(tl, times)):
            # the common case: in order, after what is buffered, finite (NaN fails ``<``)
            pt.extend(tl)
            pv.extend(values.tolist())
            if last > self._max_seen:  # noqa: PLR1730 (hot path)
                self._max_seen = last
            return True
        n_before = len(pt)
        for t, v in zip(tl, values.tolist(), strict=True):
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
            return True
        return False

    def _add_extension_samples(self, batch: SampleBatch) -> None:
        """Buffer the samples of a stream that only registered detectors read (``acc`` as the
        magnitude). Samples before the part already processed, out of order or at a non-finite
        time are counted in ``extension_late``."""
        times = np.asarray(batch.times, dtype=np.float64)
        values = np.asarray(batch.values, dtype=np.float64)
        if values.ndim == 2 and values.shape[1:] == (3,):
            values = np.sqrt(np.sum(values * values, axis=1))
        if times.ndim != 1 or values.ndim != 1 or len(values) != len(times):
            raise InputError(
                f"{batch.stream}/{batch.device}: {len(times)} times, {len(values)} values"
            )
        key = (batch.stream, batch.device)
        pend = self._pending.get(key)
        if pend is None:
            pend = self._pending[key] = _Pending(key)
            self._entries = sorted(self._pending.values(), key=_pending_key)
        next_tick = self._next_tick
        boundary = -math.inf if next_tick is None else next_tick - 1.0
        prev = pend.times[-1] if pend.times else -math.inf
        for t, v in zip(times.tolist(), values.tolist(), strict=True):
            if t > prev and t >= boundary and t < math.inf:
                pend.times.append(t)
                pend.values.append(v)
                prev = t
            else:
                self.extension_late += 1

    # -- processing --------------------------------------------------------------------------------
    def _processor(self, pend: _Pending) -> _Processor:
        stream, device = pend.key
        proc: _Builtin | None = None
        if stream == "eda":
            proc = self._eda[device] = EdaProcessor(self.cfg, device)
        elif stream == "hr":
            proc = self._hr[device] = HrProcessor(self.cfg, device)
        elif stream == "rr":
            proc = self._rr[device] = RrProcessor(self.cfg, device)
        elif stream == "rr_ppg":
            proc = self._rr_ppg[device] = RrProcessor(self.cfg, device)
        elif stream == "acc":
            proc = self._acc[device] = _AccProcessor(self.cfg, device)
        targets = self._ext_feeds.get(stream)
        out: _Processor
        if targets:
            out = _ExtensionFeed(stream, device, proc, targets)
        else:
            assert proc is not None  # (only the core's streams and the detectors' are buffered)
            out = proc
        pend.proc = out
        return out

    def _advance(self, watermark: float) -> list[Event]:
        next_tick = self._next_tick
        if next_tick is None:
            starts = [
                p.times[p.pos]
                for p in self._pending.values()
                if p.pos < len(p.times) and p.key[0] in _ANALYSED_SET
            ]
            if not starts:
                return []
            next_tick = self._next_tick = math.floor(min(starts)) + 1
        last_tick = math.floor(watermark)
        if next_tick > last_tick:
            return []
        out: list[Event] = []
        entries = self._entries
        bisect_left = bisect.bisect_left
        tick = self._tick
        for k in range(next_tick, last_tick + 1):
            kf = float(k)  # (the same comparisons, float to float: faster than float to int)
            for p in entries:
                pt = p.times
                pos = p.pos
                if pos < len(pt) and pt[pos] < kf:
                    i1 = bisect_left(pt, kf, pos)
                    (p.proc or self._processor(p)).feed(pt[pos:i1], p.values[pos:i1])
                    p.pos = i1
            tick(k, out)
        self._next_tick = last_tick + 1
        # Drop the processed prefix soon: a processed sample held here costs ~64 B (two list
        # slots and two float objects), and up to 4,096 of them per stream (the old bound) were
        # ~0.5 MB per session; what stays is the lateness allowance's few seconds.
        for p in entries:
            if p.pos > COMPACT_AFTER or p.pos == len(p.times):
                p.compact()
        return out

    def _index_gap(self, g: GapInput) -> None:
        """Merge ``g`` into the gap index: a gap covers second ``k`` when ``start < k`` and
        ``end > k - 1``, i.e. when ``[start, end]`` meets ``(k - 1, k)``, so merging closed
        intervals that overlap or touch answers every query as the gaps one by one would."""
        s, e = g.start, g.end
        if not e >= s:  # (also NaN)
            self._reversed_gaps.append(g)
            return
        key = (g.stream, g.device)
        entry = self._gap_index.get(key)
        if entry is None:
            entry = self._gap_index[key] = ([], [])
        starts, ends = entry
        lo = bisect.bisect_left(ends, s)  # first interval ending at or after s
        hi = bisect.bisect_right(starts, e)  # intervals before hi start at or before e
        if lo < hi:
            s = min(s, starts[lo])
            e = max(e, ends[hi - 1])
        starts[lo:hi] = [s]
        ends[lo:hi] = [e]

    def _in_gap(self, stream: str, device: str, k: int) -> bool:
        if not self._gaps:
            return False
        if self._gaps_built != self._gaps_version:
            self._gap_index = {}
            self._reversed_gaps = []
            for g in self._gaps:
                self._index_gap(g)
            self._gaps_built = self._gaps_version
        for g in self._reversed_gaps:
            if g.stream == stream and g.device == device and g.start < k and g.end > k - 1:
                return True
        entry = self._gap_index.get((stream, device))
        if entry is None:
            return False
        starts, ends = entry
        i = bisect.bisect_left(starts, k) - 1  # the last interval starting before k
        return i >= 0 and ends[i] > k - 1

    @staticmethod
    def _pick(ticks: dict[str, _T]) -> _T:
        """The tick of the device whose stream is in the best state (ties: device name)."""
        if len(ticks) == 1:
            return next(iter(ticks.values()))
        best = min(ticks, key=lambda d: (_RANK[ticks[d].quality], d))
        return ticks[best]

    def _motion(self, k: int, gaps: list[GapInput], quality: dict[str, str]) -> set[str]:
        """Tick the ACC processors: set ``quality["acc"]``, return the devices in motion."""
        moving: set[str] = set()
        acc_state: dict[str, QualityState] = {}
        for d, a in self._acc.items():
            in_gap = bool(gaps) and self._in_gap("acc", d, k)
            acc_state[d] = q = a.tick(k, in_gap=in_gap)
            if q == "degraded":
                moving.add(d)
        quality["acc"] = min(acc_state.values(), key=_RANK.__getitem__)
        return moving

    def _tick(self, k: int, out: list[Event]) -> None:
        """Close feature second ``k``: append its events to ``out``."""
        gaps = self._gaps
        if gaps and k % 60 == 0:
            kept = [g for g in gaps if g.end > k - 3600]
            if len(kept) != len(gaps):
                gaps = self._gaps = kept
                self._gaps_version += 1
        quality: dict[str, str] = {}
        # (rare: the device also streams acceleration)
        moving = self._motion(k, gaps, quality) if self._acc else _NOBODY
        tonic = phasic = scr_rate = None
        eda_procs = self._eda
        if eda_procs:
            if len(eda_procs) == 1 and not gaps and not moving:
                for proc_e in eda_procs.values():
                    tonic, phasic, scr_rate, quality["eda"] = proc_e.tick(
                        k, motion=False, in_gap=False
                    )
                    proc_e.take_events(out, self.decomposition)
            else:
                eda_ticks: dict[str, EdaTick] = {}
                for d, proc_e in eda_procs.items():
                    in_gap = bool(gaps) and self._in_gap("eda", d, k)
                    eda_ticks[d] = proc_e.tick(k, motion=d in moving, in_gap=in_gap)
                    proc_e.take_events(out, self.decomposition)
                tonic, phasic, scr_rate, quality["eda"] = self._pick(eda_ticks)
        hr_value = None
        hr_procs = self._hr
        if hr_procs:
            if len(hr_procs) == 1 and not gaps and not moving:
                for proc_h in hr_procs.values():
                    hr_value, quality["hr"] = proc_h.tick(k, motion=False, in_gap=False)
            else:
                hr_ticks: dict[str, HrTick] = {}
                for d, proc_h in hr_procs.items():
                    in_gap = bool(gaps) and self._in_gap("hr", d, k)
                    hr_ticks[d] = proc_h.tick(k, motion=d in moving, in_gap=in_gap)
                hr_value, quality["hr"] = self._pick(hr_ticks)
        rmssd = ln_rmssd = rr_hr = None
        rr_procs = self._rr
        if rr_procs:
            if len(rr_procs) == 1 and not gaps:
                for proc_r in rr_procs.values():
                    rr_hr, rmssd, quality["rr"] = proc_r.tick(k, in_gap=False)
            else:
                rr_ticks: dict[str, RrTick] = {}
                for d, proc_r in rr_procs.items():
                    rr_ticks[d] = proc_r.tick(k, in_gap=bool(gaps) and self._in_gap("rr", d, k))
                rr_hr, rmssd, quality["rr"] = self._pick(rr_ticks)
        if self._rr_ppg:
            # RR derived from PPG: ticked always (its own quality, ``rr_ppg``), used only while
            # the device's RR is lost or absent. A gap in a device's PPG is a gap in its beats.
            ppg_ticks = {
                d: p.tick(k, in_gap=bool(gaps) and self._in_gap("ppg", d, k))
                for d, p in self._rr_ppg.items()
            }
            ppg_hr, ppg_rmssd, quality["rr_ppg"] = self._pick(ppg_ticks)
            if quality.get("rr", "lost") == "lost":
                rr_hr, rmssd = ppg_hr, ppg_rmssd
        if hr_value is None:
            hr_value = rr_hr
        if rmssd is not None and rmssd > 0:
            ln_rmssd = math.log(rmssd)
        res = self._detector.step(
            k, [tonic, scr_rate, hr_value, ln_rmssd], quality.get("eda") == "degraded"
        )
        t = float(k)
        last_quality = self._quality
        if quality != last_quality:
            for stream, state in quality.items():
                if last_quality.get(stream) != state:
                    last_quality[stream] = state
                    out.append(QualityChange(t, stream, state))  # type: ignore[arg-type]
        index, contributions = res.index, res.contributions
        if self._ext:
            extra: dict[str, float | None] = {}
            row = FeatureRow(
                t, hr_value, rmssd, tonic, phasic, scr_rate, index, contributions, quality, extra
            )
            for det, names in zip(self._ext, self._ext_fields, strict=True):
                values = det.tick(k, row)
                for name in names:
                    # a float or None in every output (an int would be an InfluxDB integer
                    # field, NaN no JSON at all)
                    v = values.get(name)
                    extra[name] = None if v is None or not math.isfinite(v) else float(v)
            out.append(row)
        else:
            out.append(
                FeatureRow(
                    t, hr_value, rmssd, tonic, phasic, scr_rate, index, contributions, quality
                )
            )
        if res.events:
            out.extend(res.events)

    def state_nbytes(self) -> int:
        """Approximate memory held by this session's state, in bytes (containers counted at
        CPython's typical per-element cost)."""
        n = self._detector.nbytes() + 4096
        for pend in self._pending.values():
            n += 2 * 32 * (len(pend.times) - pend.pos) + 2 * 8 * len(pend.times)
        for proc_e in self._eda.values():
            n += proc_e.nbytes()
        for proc_h in self._hr.values():
            n += 2 * 40 * len(proc_h._window) + 512
        for proc_r in (*self._rr.values(), *self._rr_ppg.values()):
            n += 80 * (len(proc_r._beats) + len(proc_r._diffs) + len(proc_r._events)) + 1024
        n += 160 * len(self._gaps) + 1024 * len(self._acc)
        return n
