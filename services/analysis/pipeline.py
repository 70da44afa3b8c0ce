"""Per-session pipeline: wire messages in, storage lines and analysis events out. No I/O.

The live service, ``rekindle analyze`` and the demo all drive this same class with the same
sequence of messages, which is what makes a replay give the same episodes as the live session.

Time-jump rule: the analyzer closes every feature second in turn, so a silence of days between
two messages would cost one feature row per second in between. A silence longer than
``MAX_SILENCE_S`` (in data time, across the analysed streams) therefore ends the session's
current *analysis segment* exactly as the end of a file does (open episodes close at the last
data), and the data after it starts a fresh segment (new baselines). Every raw sample is still
stored; nothing in between is materialised. A message that itself spans such a silence is split
at it. Data older than what a segment already analysed is stored but not analysed (the
analyzer counts it as late), as before.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import numpy.typing as npt

from rekindle import contract
from rekindle.analysis import points
from rekindle.analysis.core import (
    AnalysisConfig,
    Episode,
    Event,
    GapInput,
    MarkerInput,
    SampleBatch,
    SessionAnalyzer,
)
from rekindle.analysis.core.analyzer import ANALYSED
from rekindle.analysis.points import sample_times_ns
from rekindle.analysis.ppg import BeatSource, DerivedBeats


@dataclass(slots=True)
class PipelineOutput:
    """What one message produced: line-protocol lines and the analysis events behind them."""

    lines: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def extend(self, other: PipelineOutput) -> None:
        self.lines.extend(other.lines)
        self.events.extend(other.events)


def sample_times(
    msg: contract.SampleMessage, times_ns: npt.NDArray[np.int64] | None = None
) -> npt.NDArray[np.float64]:
    """Sample times in unix seconds, from the integer nanoseconds every consumer uses
    (``times_ns``: the message's :func:`sample_times_ns` when the caller has them already)."""
    return (sample_times_ns(msg) if times_ns is None else times_ns).astype(np.float64) / 1e9


def to_input(
    msg: contract.Message, times_ns: npt.NDArray[np.int64] | None = None
) -> SampleBatch | MarkerInput | GapInput | list[MarkerInput] | None:
    """The analyzer's view of a wire message (None for status messages); ``times_ns`` as in
    :func:`sample_times`."""
    if isinstance(msg, contract.SampleMessage):
        if msg.stream == "acc":
            # (the triples flattened by one iterator: ~2x cheaper than ``asarray`` of a tuple of
            # tuples, the same float64 (n, 3) array)
            n = len(msg.values)
            triples = cast(tuple[tuple[float, float, float], ...], msg.values)
            flat = itertools.chain.from_iterable(triples)
            values = np.fromiter(flat, np.float64, 3 * n).reshape(n, 3)
        else:
            values = np.asarray(msg.values, dtype=np.float64)
        return SampleBatch(msg.stream, msg.device, sample_times(msg, times_ns), values)
    if isinstance(msg, contract.MarkerMessage):
        return [MarkerInput(t, text) for t, text in zip(msg.t, msg.values, strict=True)]
    if isinstance(msg, contract.GapMessage):
        return GapInput(msg.gap_stream, msg.device, msg.start, msg.end)
    return None


#: Longest silence (s of data time) analysed second by second; see the module docstring.
MAX_SILENCE_S = 1800.0


def _split_at_silences(batch: SampleBatch, max_silence_s: float) -> list[SampleBatch]:
    """``batch`` cut wherever consecutive samples are more than ``max_silence_s`` apart."""
    times = batch.times
    # (no step between consecutive samples exceeds the batch's whole range: no diff needed)
    if len(times) < 2 or times.max() - times.min() <= max_silence_s:
        return [batch]
    cuts = (np.flatnonzero(np.diff(times) > max_silence_s) + 1).tolist()
    if not cuts:
        return [batch]
    bounds = [0, *cuts, len(times)]
    return [
        SampleBatch(batch.stream, batch.device, times[a:b], batch.values[a:b])
        for a, b in itertools.pairwise(bounds)
    ]


class SessionPipeline:
    """One session's analyzer plus the conversion of everything it sees to storage lines."""

    # Class-level defaults: a pipeline restored from a checkpoint written before these
    # attributes existed gets them (instances set their own in __init__).
    max_silence_s = MAX_SILENCE_S
    latest = -math.inf
    segments_split = 0
    span_s = 0.0
    _beats: BeatSource | None = None

    def __init__(
        self,
        site: str,
        session: str,
        config: AnalysisConfig | None = None,
        *,
        store_lines: bool = True,
        max_silence_s: float = MAX_SILENCE_S,
        beats: BeatSource | None = None,
        decomposition: bool = True,
    ) -> None:
        """``beats``: where the beats derived from PPG come from (default: a
        :class:`DerivedBeats` of ``config``, created on the first PPG message);
        ``decomposition``: the analyzer's per-second EDA decomposition events (stored as lines
        live; :class:`SessionAnalyzer`)."""
        self.site = site
        self.store_lines = store_lines
        self.session = session
        self.analyzer = SessionAnalyzer(config, decomposition=decomposition)
        self.max_silence_s = max_silence_s
        #: Newest analysed sample time (s) of the current segment.
        self.latest = -math.inf
        #: Analysis segments started after a silence longer than ``max_silence_s``.
        self.segments_split = 0
        self.devices_online: set[str] = set()
        self.episodes: list[Episode] = []
        self.samples = 0
        self.finished = False
        self._beats = beats

    def _events(self, events: list[Event]) -> PipelineOutput:
        self.episodes.extend(e for e in events if isinstance(e, Episode))
        lines = points.event_lines(self.site, self.session, events) if self.store_lines else []
        return PipelineOutput(lines, events)

    def handle(self, msg: contract.Message) -> PipelineOutput:
        # the sample times, computed once for the raw lines and the analyzer
        ns = sample_times_ns(msg) if isinstance(msg, contract.SampleMessage) else None
        out = PipelineOutput(points.message_lines(msg, ns) if self.store_lines else [])
        if isinstance(msg, contract.StatusMessage):
            if msg.state == "online":
                self.devices_online.add(msg.device)
            elif msg.state == "end":
                self.devices_online.discard(msg.device)
            return out
        if isinstance(msg, contract.SampleMessage):
            self.samples += len(msg)
            if len(msg) > 1:
                # streams are out of step by up to one message span (docs/method.md, section 1)
                span = msg.end - msg.start
                if span > self.span_s:
                    self.span_s = span
                    self.analyzer.allow_span(span)
        item = to_input(msg, ns)
        if isinstance(item, SampleBatch):
            if not len(item.times):
                return out
            batches: list[SampleBatch] = []
            if item.stream == "ppg":  # RR from PPG (rekindle.analysis.ppg), when enabled
                batches = [
                    b
                    for b in self.derived_beats.inputs(item)
                    if isinstance(b, SampleBatch) and b.stream in ANALYSED
                ]
            elif item.stream in ANALYSED:
                batches = [item]
            if item.stream not in ANALYSED and self.analyzer.accepts(item.stream):
                # a stream only registered detectors read: analysed, but it neither moves the
                # core's time nor starts a new segment (those follow the core's own streams)
                out.extend(self._events(self.analyzer.update(item)))
            for batch in batches:
                self._analyse(batch, out)
            return out
        items = item if isinstance(item, list) else [item] if item is not None else []
        for it in items:
            out.extend(self._events(self.analyzer.update(it)))
        return out

    @property
    def derived_beats(self) -> BeatSource:
        """The session's PPG beat detectors (created on first use; a pipeline restored from a
        checkpoint written before they existed gets them then)."""
        if self._beats is None:
            self._beats = DerivedBeats(self.analyzer.cfg)
        return self._beats

    def _analyse(self, item: SampleBatch, out: PipelineOutput) -> None:
        """Give ``item`` to the analyzer, starting a new segment after a long silence."""
        for part in _split_at_silences(item, self.max_silence_s):
            if self.latest > -math.inf and part.times[0] - self.latest > self.max_silence_s:
                out.extend(self._events(self.analyzer.finish()))
                self.analyzer = SessionAnalyzer(
                    self.analyzer.cfg, decomposition=self.analyzer.decomposition
                )
                self.analyzer.allow_span(self.span_s)
                self.latest = -math.inf
                self.segments_split += 1
            self.latest = max(self.latest, float(part.times[-1]))
            out.extend(self._events(self.analyzer.update(part)))

    @property
    def ended(self) -> bool:
        """True once every device that announced itself online has sent ``end``."""
        return not self.devices_online

    def finish(self) -> PipelineOutput:
        """End of data: flush the analyzer and close open episodes."""
        if self.finished:
            return PipelineOutput()
        self.finished = True
        if self.samples == 0:
            return PipelineOutput()  # nothing to flush: a session that never sent data
        out = PipelineOutput()
        for item in self.derived_beats.finish():
            out.extend(self._events(self.analyzer.update(item)))
        out.extend(self._events(self.analyzer.finish()))
        return out
