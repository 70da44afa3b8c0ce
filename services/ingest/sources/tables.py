"""A recording as arrays: timed series per stream plus markers, whatever format it came from.

Readers of formats without a fixed layout (generic CSV, EmotiBit, XDF) build a
:class:`SeriesSet`; its :meth:`SeriesSet.chunks` are what ``analyze``/``replay`` consume.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from rekindle.contract import SampleStream
from rekindle.ingest.sources.base import Chunk, marker_chunks, merge_in_time, series_chunks

F64Array = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class TimedSeries:
    """One stream's samples in contract units; ``values`` is ``(n,)`` or ``(n, 3)`` for acc;
    ``times`` are unix seconds, increasing."""

    stream: SampleStream
    device: str
    times: F64Array
    values: F64Array


@dataclass(slots=True)
class SeriesSet:
    series: list[TimedSeries] = field(default_factory=list)
    marker_times: list[float] = field(default_factory=list)
    marker_texts: list[str] = field(default_factory=list)
    marker_device: str = "markers"

    def chunks(self) -> Iterator[Chunk]:
        streams = [series_chunks(s.stream, s.device, s.times, s.values) for s in self.series]
        if self.marker_times:
            streams.append(marker_chunks(self.marker_device, self.marker_times, self.marker_texts))
        return merge_in_time(streams)
