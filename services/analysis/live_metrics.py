"""NeuroKit2's interval metrics in the live service, off the worker's hot path.

The live analysis (``service.py``) asks for the metrics of :mod:`rekindle.analysis.intervals`
(``eda_intervalrelated``, ``hrv_time``, ``hrv_frequency`` with >= 2 min of clean beats) of

* each episode, onset to offset, once it has closed and the session's data has moved past its
  offset by the core's ``lateness_s`` (so the beats and EDA samples of its last seconds are in);
* each segment between markers once the data has passed the marker that closes it, and at the
  session's end the last segment and each labelled phase of the session.

Two parts:

* :class:`StretchRecorder` (pure, one per session): the session's raw EDA and RR samples,
  bounded to the last ``keep_s`` seconds of data (older samples are dropped, and a stretch
  reaching before them says so in ``nk_notes``), its markers and extent, and the stretches
  waiting for their data. It is pickled with the service's checkpoint.
* :class:`MetricsRunner`: computes :class:`MetricsJob` s (a stretch and its samples only) in a
  child process (``spawn``: NeuroKit2 and pandas hold the GIL for most of their run, so a thread
  would slow the worker's per-message handling), and hands back InfluxDB lines
  (:func:`metrics_line`). Jobs not yet written are part of the checkpoint, so a restart
  computes them again; their points have data-derived timestamps, so a recomputation
  overwrites rather than duplicates.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent import futures
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import numpy.typing as npt

from rekindle import contract
from rekindle.analysis import packing, points, schema
from rekindle.analysis.core import AnalysisConfig, Episode, EpisodeStart, Event
from rekindle.analysis.core.analyzer import LATENESS_SPAN_S
from rekindle.analysis.intervals import Series, marker_segments, stretch_metrics

log = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]

#: Raw data kept per session for the segment metrics at its end (s of data time): 6 h.
KEEP_S = 6 * 3600.0
#: Streams whose raw samples the metrics need.
STREAMS = ("eda", "rr")
#: Times a job is sent again after its worker process died, before it is stored as failed.
MAX_ATTEMPTS = 3

#: Niceness added to the metrics process: its jobs can wait, the worker's messages cannot.
NICE = 10

EPISODE_MEASUREMENT = "episode_metrics"
SEGMENT_MEASUREMENT = "segment_metrics"


@dataclass(frozen=True, slots=True)
class Stretch:
    """A stretch of one session whose metrics are wanted.

    ``what`` is ``episode`` (``kind`` = ``arousal``/``release``) or ``segment`` (``kind`` =
    ``segment`` between markers, labelled by the marker that opens it, or ``phase``)."""

    site: str
    session: str
    what: str
    kind: str
    start: float
    end: float
    label: str = ""


@dataclass(slots=True, eq=False)
class MetricsJob:
    """What the child process needs: the stretch and its samples only."""

    stretch: Stretch
    eda: Series | None
    rr: Series | None
    config: AnalysisConfig
    notes: tuple[str, ...] = ()
    attempts: int = 0


def compute(job: MetricsJob) -> dict[str, float | str]:
    """The stretch's metrics (runs in the child process)."""
    out = stretch_metrics(job.eda, job.rr, job.stretch.start, job.stretch.end, job.config)
    if job.notes:
        notes = [*job.notes, *([str(out["nk_notes"])] if "nk_notes" in out else [])]
        out["nk_notes"] = "; ".join(notes)
    return out


def _samples(msg: contract.SampleMessage) -> tuple[F64, F64]:
    """Times and values as ``rekindle analyze`` takes them (``t0 + i / fs``: the nanosecond
    times of the stored points, divided back to float seconds, are off by up to 2.4e-7 s at
    today's unix times, which makes 4-Hz EDA look like 3.999996 Hz to NeuroKit2)."""
    values = np.asarray(msg.values, dtype=np.float64)
    if msg.t is not None:
        return np.asarray(msg.t, dtype=np.float64), values
    assert msg.t0 is not None
    assert msg.fs is not None
    return msg.t0 + np.arange(len(values), dtype=np.float64) / msg.fs, values


def metrics_line(stretch: Stretch, metrics: dict[str, float | str]) -> str | None:
    """The stretch's point: ``episode_metrics`` (tags site, session, kind; fields ``onset``,
    ``offset``, ``duration_s`` as the ``episode`` point, time = onset) or ``segment_metrics``
    (tags site, session, kind; fields ``label``, ``start``, ``end``, ``duration_s`` as
    ``segments.csv``, time = start), then the ``nk_*`` metrics."""
    duration = stretch.end - stretch.start
    fields: dict[str, points.FieldValue | None]
    if stretch.what == "episode":
        fields = {"onset": stretch.start, "offset": stretch.end, "duration_s": duration}
    else:  # the schema's segment fields, in its order (kind is the tag)
        values: dict[str, points.FieldValue] = {"label": stretch.label, "start": stretch.start}
        values.update(end=stretch.end, duration_s=duration)
        fields = {f.name: values[f.name] for f in schema.SEGMENT_FIELDS if f.name != "kind"}
    fields.update(metrics)
    measurement = EPISODE_MEASUREMENT if stretch.what == "episode" else SEGMENT_MEASUREMENT
    tags = {"site": stretch.site, "session": stretch.session, "kind": stretch.kind}
    return points.line(measurement, tags, fields, points.to_ns(stretch.start))


@dataclass(slots=True)
class Block:
    """Samples of one stream and device in arrival order (not necessarily sorted): the layout
    of checkpoints written before :class:`SampleStore` (read by
    :meth:`StretchRecorder.__setstate__`)."""

    times: F64
    values: F64
    first: float
    last: float


#: Samples per sealed (packed) chunk of a :class:`SampleStore` (~4 min of 4-Hz EDA).
CHUNK = 1024
#: First capacity of a store's unsealed tail (doubled up to :data:`CHUNK`).
_TAIL_START = 64
#: Samples a store queues unconverted before converting them together (:meth:`SampleStore.queue`).
QUEUE_SAMPLES = 64


@dataclass(frozen=True, slots=True)
class _Chunk:
    times: packing.Packed
    values: packing.Packed
    first: float
    last: float

    @classmethod
    def of(cls, times: F64, values: F64) -> _Chunk:
        first, last = float(times.min()), float(times.max())
        return cls(packing.pack(times), packing.pack(values), first, last)

    def __len__(self) -> int:
        return self.times.n

    def arrays(self) -> tuple[F64, F64]:
        return packing.unpack(self.times), packing.unpack(self.values)


class SampleStore:
    """One stream and device's samples in arrival order, compact and exact: sealed chunks of
    :data:`CHUNK` samples packed losslessly (:mod:`rekindle.analysis.packing`: ~3 B a sample
    of 4-Hz EDA, ~6 B an RR interval, against 16 B as float64 pairs), and an unsealed tail in
    float64 arrays. What comes out (:meth:`candidates`) is bit for bit what went in.

    A message's samples are first only queued as they came (:meth:`queue`: its ``t0``/``fs``
    or ``t`` and its values appended to lists, no conversion), and converted to arrays
    together every :data:`QUEUE_SAMPLES` samples or when read: the same float64 values as
    converting each message (:func:`_samples`), for a fraction of the worker's time per
    message (the checkpoint pickles the queue as it is).
    """

    __slots__ = ("_n", "_q_meta", "_q_t", "_q_v", "_t", "_v", "chunks")

    def __init__(self) -> None:
        self.chunks: list[_Chunk] = []
        self._t: F64 = np.empty(0)
        self._v: F64 = np.empty(0)
        self._n = 0
        # the queue, as flat lists of floats (cheap to extend and to pickle): per message
        # t0, fs (0 for per-sample times), sample count; the per-sample times; the values
        self._q_meta: list[float] = []
        self._q_t: list[float] = []
        self._q_v: list[float] = []

    def __len__(self) -> int:
        return sum(len(c) for c in self.chunks) + self._n + len(self._q_v)

    def __getstate__(
        self,
    ) -> tuple[list[_Chunk], F64, F64, tuple[list[float], list[float], list[float]]]:
        queued = (self._q_meta, self._q_t, self._q_v)
        return self.chunks, self._t[: self._n].copy(), self._v[: self._n].copy(), queued

    def __setstate__(self, state: tuple[object, ...]) -> None:
        """Also a checkpoint written before the queue (three items)."""
        chunks, self._t, self._v = cast(tuple[list[_Chunk], F64, F64], state[:3])
        self.chunks, self._n = chunks, len(self._t)
        queued = cast(
            tuple[list[float], list[float], list[float]],
            state[3] if len(state) > 3 else ([], [], []),
        )
        self._q_meta, self._q_t, self._q_v = (list(q) for q in queued)

    def queue(
        self,
        t0: float | None,
        fs: float | None,
        t: Sequence[float] | None,
        values: Sequence[float],
    ) -> None:
        """One message's samples (``t0`` and ``fs``, or ``t``), converted later."""
        if t is None:
            assert t0 is not None
            assert fs is not None
            self._q_meta += (t0, fs, len(values))
        else:
            self._q_meta += (0.0, 0.0, len(values))
            self._q_t += t
        self._q_v += values
        if len(self._q_v) >= QUEUE_SAMPLES:
            self._drain()

    def _drain(self) -> None:
        """The queued messages' samples into the arrays, in arrival order."""
        if not self._q_v:
            return
        meta = np.array(self._q_meta, dtype=np.float64).reshape(-1, 3)
        values = np.array(self._q_v, dtype=np.float64)
        irregular = np.array(self._q_t, dtype=np.float64)
        self._q_meta, self._q_t, self._q_v = [], [], []
        if len(irregular) == len(values):
            times = irregular
        else:
            # t0 + i / fs per message, as _samples computes it, for all of them at once
            lengths = meta[:, 2].astype(np.intp)
            per_sample = meta[:, 1] == 0.0
            fs = np.where(per_sample, 1.0, meta[:, 1])
            starts = np.cumsum(lengths) - lengths
            index = (np.arange(len(values)) - np.repeat(starts, lengths)).astype(np.float64)
            times = np.repeat(meta[:, 0], lengths) + index / np.repeat(fs, lengths)
            if len(irregular):
                times[np.repeat(per_sample, lengths)] = irregular
        self._append(times, values)

    def add(self, times: F64, values: F64) -> None:
        self._drain()
        self._append(times, values)

    def _append(self, times: F64, values: F64) -> None:
        i, n = 0, len(times)
        while i < n:
            if self._n == CHUNK:
                self._seal()
            if self._n == len(self._t):
                cap = min(CHUNK, max(_TAIL_START, 2 * len(self._t)))
                t, v = np.empty(cap), np.empty(cap)
                t[: self._n], v[: self._n] = self._t[: self._n], self._v[: self._n]
                self._t, self._v = t, v
            take = min(n - i, len(self._t) - self._n)
            self._t[self._n : self._n + take] = times[i : i + take]
            self._v[self._n : self._n + take] = values[i : i + take]
            self._n += take
            i += take

    def _seal(self) -> None:
        self.chunks.append(_Chunk.of(self._t[: self._n], self._v[: self._n]))
        self._n = 0

    def prune(self, horizon: float) -> int:
        """Drop the samples before ``horizon``; how many were dropped."""
        self._drain()
        dropped = 0
        kept: list[_Chunk] = []
        for c in self.chunks:
            if c.first >= horizon:
                kept.append(c)
                continue
            times, values = c.arrays()
            keep = times >= horizon
            dropped += len(c) - int(keep.sum())
            if keep.any():
                kept.append(_Chunk.of(times[keep], values[keep]))
        self.chunks = kept
        keep = self._t[: self._n] >= horizon
        if not keep.all():
            k = int(keep.sum())
            dropped += self._n - k
            self._t[:k], self._v[:k] = self._t[: self._n][keep], self._v[: self._n][keep]
            self._n = k
        return dropped

    def candidates(self, start: float, end: float) -> tuple[F64, F64]:
        """Every sample with ``start <= t < end`` (and maybe others), in arrival order."""
        self._drain()
        parts = [c.arrays() for c in self.chunks if c.last >= start and c.first < end]
        parts.append((self._t[: self._n], self._v[: self._n]))
        return (
            np.concatenate([t for t, _ in parts]),
            np.concatenate([v for _, v in parts]),
        )


class StretchRecorder:
    """One session's raw EDA and RR (bounded), markers, extent and waiting stretches. No I/O.

    A segment between markers is wanted when its closing marker arrives and computed once the
    data has passed it (:meth:`ready`); at the session's end the segments are cut again from
    every marker known (a marker that arrived late splits one) and those not yet submitted with
    the same bounds are computed (a segment's point is per kind and start, so a recomputed
    one replaces the earlier).

    Each stream and device's samples are a :class:`SampleStore` (packed chunks of
    :data:`CHUNK` samples: a checkpoint pickles a few arrays per chunk, not one per message).
    Samples older than ``keep_s`` before the newest are cut off whenever the newest has
    advanced by a tenth of ``keep_s``.
    """

    #: Longest sample message seen (s of data): the data is out of step by up to that much.
    span_s = 0.0

    def __init__(self, site: str, session: str, keep_s: float = KEEP_S) -> None:
        self.site = site
        self.session = session
        self.keep_s = keep_s
        self.stores: dict[tuple[str, str], SampleStore] = {}
        self.counts: dict[tuple[str, str], int] = {}
        self.pruned_at = -math.inf
        #: Newest sample time of the kept streams; samples older than ``newest - keep_s`` go.
        self.newest = -math.inf
        #: Oldest time still kept (the samples before it were dropped); -inf: nothing dropped.
        self.kept_from = -math.inf
        self.start: float | None = None
        self.end: float | None = None
        self.markers: list[tuple[float, str]] = []
        self.waiting: list[Stretch] = []
        #: Segments already submitted before the session's end (not computed twice).
        self.submitted: set[Stretch] = set()

    def __setstate__(self, state: dict[str, object]) -> None:
        """Also a checkpoint of the layout before :class:`SampleStore` (``parts``: lists of
        :class:`Block` in arrival order)."""
        parts = state.pop("parts", None)
        self.__dict__.update(state)
        if isinstance(parts, dict):
            self.stores = {}
            for key, blocks in parts.items():
                store = self.stores[key] = SampleStore()
                for b in blocks:
                    store.add(b.times, b.values)

    def extent(self, start: float, end: float) -> None:
        """A sample message of any stream spans ``start`` to ``end``."""
        self.start = start if self.start is None else min(self.start, start)
        self.end = end if self.end is None else max(self.end, end)
        self.span_s = max(self.span_s, end - start)

    def add(self, stream: str, device: str, times: F64, values: F64) -> None:
        if stream not in STREAMS or not len(times):
            return
        self._store(stream, device).add(times, values)
        self._added(stream, device, len(times), float(times.max()))

    def add_message(self, msg: contract.SampleMessage) -> None:
        """:meth:`add` of a message's samples (:func:`_samples`), queued unconverted
        (:meth:`SampleStore.queue`)."""
        if msg.stream not in STREAMS or not len(msg):
            return
        values = cast(tuple[float, ...], msg.values)  # (STREAMS: scalar streams)
        self._store(msg.stream, msg.device).queue(msg.t0, msg.fs, msg.t, values)
        # the newest of t0 + i / fs is the last, msg.end (the same float)
        self._added(msg.stream, msg.device, len(values), msg.end if msg.t is None else max(msg.t))

    def _store(self, stream: str, device: str) -> SampleStore:
        store = self.stores.get((stream, device))
        if store is None:
            store = self.stores[(stream, device)] = SampleStore()
        return store

    def _added(self, stream: str, device: str, n: int, newest: float) -> None:
        """Count ``n`` samples added to (stream, device), the newest at ``newest``; prune."""
        key = (stream, device)
        self.counts[key] = self.counts.get(key, 0) + n
        self.newest = max(self.newest, newest)
        if self.newest - self.pruned_at >= self.keep_s / 10:
            self.prune()

    def prune(self) -> None:
        """Drop the samples older than ``keep_s`` before the newest."""
        self.pruned_at = self.newest
        horizon = self.newest - self.keep_s
        for key, store in self.stores.items():
            dropped = store.prune(horizon)
            if dropped:
                self.counts[key] -= dropped
                self.kept_from = max(self.kept_from, horizon)

    def add_marker(self, t: float, text: str) -> None:
        """A marker; the segment it closes (from the marker before it, or the session's start)
        is wanted as soon as the data has passed it, not only at the session's end."""
        if self.start is not None and t > self.start:
            before = [(m, x) for m, x in self.markers if self.start < m < t]
            a, label = max(before) if before else (self.start, "start")
            if t > a:
                self.want(Stretch(self.site, self.session, "segment", "segment", a, t, label))
        self.markers.append((t, text))

    def want(self, stretch: Stretch) -> None:
        self.waiting.append(stretch)

    def ready(self, lateness_s: float) -> list[Stretch]:
        """The waiting stretches whose data is in: the newest sample is ``lateness_s`` past
        their end (what arrives later than that the core counts as late, too)."""
        if not self.waiting:
            return []
        done = [s for s in self.waiting if s.end + lateness_s <= self.newest]
        if done:
            self.waiting = [s for s in self.waiting if s.end + lateness_s > self.newest]
        return done

    def segments(self, phases: Iterable[tuple[str, float, float]] = ()) -> list[Stretch]:
        """The session's segments between markers and its labelled phases (at its end)."""
        out = [
            Stretch(self.site, self.session, "segment", "segment", s.start, s.end, s.label)
            for s in marker_segments(self.markers, self.start, self.end)
        ]
        out += [
            Stretch(self.site, self.session, "segment", "phase", a, b, label)
            for label, a, b in phases
            if b > a
        ]
        return out

    def series(self, stream: str, start: float, end: float) -> Series | None:
        """``start <= t < end`` of the stream's device with most samples kept, in time order."""
        keys = [k for k in self.stores if k[0] == stream and self.counts.get(k, 0) > 0]
        if not keys:
            return None
        key = max(keys, key=lambda k: self.counts[k])
        times, values = self.stores[key].candidates(start, end)
        order = np.argsort(times, kind="stable")
        return Series(*Series(times[order], values[order]).between(start, end))

    def job(self, stretch: Stretch, config: AnalysisConfig) -> MetricsJob:
        notes: tuple[str, ...] = ()
        if stretch.start < self.kept_from:
            notes = (
                f"raw data before {self.kept_from:.0f} no longer kept (the service keeps the "
                f"last {self.keep_s:g} s): metrics of the rest",
            )
        return MetricsJob(
            stretch,
            self.series("eda", stretch.start, stretch.end),
            self.series("rr", stretch.start, stretch.end),
            config,
            notes,
        )


class _SharedPool:
    """One metrics process per OS process, shared by its runners (``rekindle analysis
    --workers`` runs several partitions' services in one process; each NeuroKit2 process holds
    about 250 MB). Shut down when its last runner closes; replaced when it broke."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._users: set[int] = set()

    def acquire(self, user: object) -> ProcessPoolExecutor:
        with self._lock:
            self._users.add(id(user))
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    1, mp_context=multiprocessing.get_context("spawn"), initializer=_child_init
                )
            return self._pool

    def replace(self, broken: ProcessPoolExecutor) -> None:
        """``broken`` died: the next :meth:`acquire` starts a fresh process."""
        with self._lock:
            if self._pool is broken:
                self._pool = None
        broken.shutdown(wait=False, cancel_futures=True)

    def release(self, user: object) -> None:
        with self._lock:
            self._users.discard(id(user))
            pool = self._pool if not self._users else None
            if pool is not None:
                self._pool = None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


_SHARED = _SharedPool()


@dataclass(slots=True)
class MetricsState:
    """What the checkpoint holds: the open sessions' recorders and the jobs not yet written."""

    recorders: dict[tuple[str, str], StretchRecorder] = field(default_factory=dict)
    jobs: list[MetricsJob] = field(default_factory=list)


@dataclass(slots=True)
class MetricsStats:
    submitted: int = 0
    written: int = 0
    failed: int = 0
    #: Worker processes replaced after dying.
    restarts: int = 0
    #: Errors of the runner itself (logged; the analysis went on without those metrics).
    errors: int = 0
    #: CPU seconds the child spent, summed over the jobs written (for the log and benchmarks).
    compute_s: float = 0.0


def _child_init() -> None:
    """In the metrics process: run at a lower priority (``NICE``); leave SIGINT to the service
    (a Ctrl-C reaches the whole process group; the service stops it); end when the service's
    process is gone (even SIGKILLed, which a process pool does not notice by itself); then
    import NeuroKit2 before the first job."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # below the service's priority: on a busy machine the worker's messages go first
    os.nice(NICE)
    parent = multiprocessing.parent_process()
    if parent is not None:
        sentinel = parent.sentinel

        def watch() -> None:
            multiprocessing.connection.wait([sentinel])
            os._exit(0)

        threading.Thread(target=watch, name="rekindle-metrics-parent", daemon=True).start()
    _warm()


def _warm() -> None:
    """Import NeuroKit2 (about 2 s), so that it is not paid inside a job."""
    import neurokit2  # noqa: F401, PLC0415


def _timed_compute(job: MetricsJob) -> tuple[dict[str, float | str], float]:
    started = time.process_time()
    out = compute(job)
    return out, time.process_time() - started


class MetricsRunner:
    """Recorders of the open sessions and a one-process pool for their jobs.

    Every method but :meth:`pending` and :meth:`wait` is called by the service's worker thread
    (or by ``stop`` once the worker has ended)."""

    def __init__(
        self,
        config: AnalysisConfig | None = None,
        *,
        keep_s: float = KEEP_S,
        phases: dict[str, list[tuple[str, float, float]]] | None = None,
    ) -> None:
        self.config = config or AnalysisConfig()
        self.keep_s = keep_s
        self.phases = phases or {}
        self.state = MetricsState()
        self.stats = MetricsStats()
        self._pool: ProcessPoolExecutor | None = None
        self._running: list[tuple[MetricsJob, Future[tuple[dict[str, float | str], float]]]] = []
        self._lock = threading.Lock()
        self._outstanding = 0
        #: Lines of jobs that ended without the process (it could not be used).
        self._ready: list[str] = []
        #: Done once the metrics process has imported NeuroKit2 (after :meth:`start`).
        self.warmed: Future[None] | None = None

    # ---------------------------------------------------------------------- what comes in
    def recorder(self, site: str, session: str) -> StretchRecorder:
        key = (site, session)
        rec = self.state.recorders.get(key)
        if rec is None:
            rec = self.state.recorders[key] = StretchRecorder(site, session, self.keep_s)
        return rec

    def _guarded(self, what: str, step: Callable[..., None], *args: object) -> None:
        """Run one of the service's hooks; never raises: an error is logged and counted in
        ``stats.errors``, and the analysis goes on without those metrics."""
        try:
            step(*args)
        except Exception:
            self.stats.errors += 1
            log.exception("NeuroKit2 metrics: error in %s(); the analysis goes on", what)

    def message(self, msg: contract.Message) -> None:
        """:meth:`_message` through :meth:`_guarded` (never raises)."""
        self._guarded("message", self._message, msg)

    def _message(self, msg: contract.Message) -> None:
        """Record what a message of an open session brings: the extent of any samples, the raw
        EDA and RR, markers."""
        if isinstance(msg, contract.SampleMessage):
            if not len(msg):
                return
            rec = self.recorder(msg.site, msg.session)
            rec.extent(msg.start, msg.end)
            if msg.stream in STREAMS:
                rec.add_message(msg)
        elif isinstance(msg, contract.MarkerMessage):
            rec = self.recorder(msg.site, msg.session)
            for t, text in zip(msg.t, msg.values, strict=True):
                rec.add_marker(t, text)

    def events(self, site: str, session: str, events: Sequence[Event]) -> None:
        """:meth:`_events` through :meth:`_guarded` (never raises)."""
        self._guarded("events", self._events, site, session, events)

    def _events(self, site: str, session: str, events: Sequence[Event]) -> None:
        """Closed episodes wait for their data; stretches whose data is in are submitted. The
        first confirmed episode starts the metrics process (see :meth:`start`)."""
        rec = self.recorder(site, session)
        for ev in events:
            if isinstance(ev, Episode):
                rec.want(Stretch(site, session, "episode", ev.kind, ev.onset, ev.offset))
            elif isinstance(ev, EpisodeStart) and self._pool is None:
                self.start()
        # the core's allowance, widened as its analyzer widens it for long messages
        lateness = self.config.lateness_s + max(0.0, rec.span_s - LATENESS_SPAN_S)
        for stretch in rec.ready(lateness):
            if stretch.what == "segment":
                rec.submitted.add(stretch)
            self._submit(rec.job(stretch, self.config))

    def session_end(self, site: str, session: str, events: Sequence[Event]) -> None:
        """:meth:`_session_end` through :meth:`_guarded` (never raises)."""
        self._guarded("session_end", self._session_end, site, session, events)

    def _session_end(self, site: str, session: str, events: Sequence[Event]) -> None:
        """The session ended: its waiting episodes and its segments are submitted now."""
        rec = self.state.recorders.pop((site, session), None)
        if rec is None:
            return
        for ev in events:
            if isinstance(ev, Episode):
                rec.want(Stretch(site, session, "episode", ev.kind, ev.onset, ev.offset))
        episodes = [s for s in rec.waiting if s.what == "episode"]
        final = [s for s in rec.segments(self.phases.get(session, ())) if s not in rec.submitted]
        for stretch in [*episodes, *final]:
            self._submit(rec.job(stretch, self.config))
        rec.waiting = []

    # ------------------------------------------------------------------------- the pool
    def start(self) -> MetricsRunner:
        """Start the metrics process now: it imports NeuroKit2 (about 2 s of CPU) before its
        first job. The runner does so at the first confirmed episode, which closes 30 s or more
        later, so a service that never sees an episode (and each test that starts one) does
        not pay the import and the process' 250 MB; else at the first job. If no process can
        be started here, that is logged and each job is stored as failed (``nk_notes``)."""
        try:
            self.warmed = self._executor().submit(_warm)
        except Exception:
            log.exception("NeuroKit2 metrics: cannot start the metrics process")
        return self

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = _SHARED.acquire(self)
        return self._pool

    def _submit(self, job: MetricsJob, *, again: bool = False) -> None:
        if not again:
            self.state.jobs.append(job)
            self.stats.submitted += 1
            with self._lock:
                self._outstanding += 1
        job.attempts += 1
        try:
            future = self._executor().submit(_timed_compute, job)
        except Exception as exc:  # e.g. no process can be started here
            log.exception("NeuroKit2 metrics: cannot hand a job to the metrics process")
            self.stats.failed += 1
            note = f"metrics failed: the metrics process cannot run: {type(exc).__name__}: {exc}"
            self._ready.extend(self._done(job, {"nk_notes": note}, 0.0))
            return
        self._running.append((job, future))

    def collect(self) -> list[str]:
        """Lines of the jobs finished since the last call (never raises for a job)."""
        lines, self._ready = self._ready, []
        if not self._running:
            return lines
        still: list[tuple[MetricsJob, Future[tuple[dict[str, float | str], float]]]] = []
        broken: list[MetricsJob] = []
        for job, fut in self._running:
            if not fut.done():
                still.append((job, fut))
                continue
            try:
                metrics, cpu = fut.result()
            except BrokenProcessPool:
                broken.append(job)
                continue
            except Exception as exc:
                log.error(
                    "NeuroKit2 metrics of %s %s %.0f-%.0f of %s/%s failed: %s",
                    job.stretch.what,
                    job.stretch.kind,
                    job.stretch.start,
                    job.stretch.end,
                    job.stretch.site,
                    job.stretch.session,
                    exc,
                    exc_info=True,
                )
                metrics, cpu = {"nk_notes": f"metrics failed: {type(exc).__name__}: {exc}"}, 0.0
                self.stats.failed += 1
            lines.extend(self._done(job, metrics, cpu))
        self._running = still
        if broken:
            self._restart(broken, lines)
        return lines

    def _done(self, job: MetricsJob, metrics: dict[str, float | str], cpu: float) -> list[str]:
        self.state.jobs.remove(job)
        self.stats.written += 1
        self.stats.compute_s += cpu
        with self._lock:
            self._outstanding -= 1
        log.debug(
            "NeuroKit2 metrics of %s %s %.0f-%.0f of %s/%s: %.3f s CPU",
            job.stretch.what,
            job.stretch.kind,
            job.stretch.start,
            job.stretch.end,
            job.stretch.site,
            job.stretch.session,
            cpu,
        )
        line = metrics_line(job.stretch, metrics)
        return [] if line is None else [line]

    def _restart(self, broken: list[MetricsJob], lines: list[str]) -> None:
        """The worker process died: a fresh pool, and the jobs it held sent again."""
        log.error("the NeuroKit2 metrics process died; starting a new one")
        self.stats.restarts += 1
        if self._pool is not None:
            _SHARED.replace(self._pool)
        self._pool = None
        running = [job for job, _ in self._running]
        self._running = []
        for job in [*broken, *running]:
            if job.attempts >= MAX_ATTEMPTS:
                self.stats.failed += 1
                note = f"metrics failed: the worker process died {job.attempts} times on it"
                lines.extend(self._done(job, {"nk_notes": note}, 0.0))
            else:
                self._submit(job, again=True)

    # ------------------------------------------------------------------- state and waiting
    def pending(self) -> int:
        """Jobs submitted and not yet handed back as lines (any thread)."""
        with self._lock:
            return self._outstanding

    def checkpoint_state(self) -> MetricsState:
        return self.state

    def restore(self, state: MetricsState) -> None:
        """Continue from a checkpoint: its recorders, and its unwritten jobs computed again."""
        self.state = MetricsState(dict(state.recorders), [])
        for job in state.jobs:
            job.attempts = 0
            self._submit(job)
        if state.jobs:
            log.info("%d NeuroKit2 metrics job(s) from the checkpoint sent again", len(state.jobs))

    def close(self, timeout_s: float = 60.0) -> list[str]:
        """Wait up to ``timeout_s`` for the running jobs; their lines, then the pool shut down.
        Jobs still running stay in :attr:`state` (the checkpoint)."""
        deadline = time.monotonic() + timeout_s
        lines = self.collect()
        while self._running and time.monotonic() < deadline:
            left = max(0.0, min(0.2, deadline - time.monotonic()))
            futures.wait([f for _, f in self._running], left, futures.FIRST_COMPLETED)
            lines.extend(self.collect())
        if self._running:
            log.warning(
                "%d NeuroKit2 metrics job(s) unfinished at stop (kept in the checkpoint)",
                len(self._running),
            )
        if self._pool is not None:
            _SHARED.release(self)
            self._pool = None
        self._running = []
        return lines
