"""What every source yields: time-ordered chunks of at most ~1 s of one stream."""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

from rekindle import contract
from rekindle.contract import SampleStream

ChunkStream: TypeAlias = SampleStream | Literal["marker"]


@dataclass(frozen=True, slots=True)
class ReadOptions:
    """What a file cannot say about itself (``rekindle analyze --column ... --start ...``).

    ``columns`` maps a CSV column to ``STREAM:UNIT`` (``eda:uS``, ``acc_x:g``), ``time`` or
    ``time:ms``, ``marker`` or ``ignore``; ``start`` is the unix time of time 0 for files
    whose times are relative (seconds since the start).
    """

    columns: Mapping[str, str] = field(default_factory=dict)
    start: float | None = None


@dataclass(frozen=True, slots=True)
class Chunk:
    """Samples of one stream from one device: regular (``t0``, ``fs``) or irregular (``t``).

    ``values`` are floats, ``(x, y, z)`` triples for ``acc``, or strings for ``marker``.
    """

    stream: ChunkStream
    device: str
    values: tuple[float, ...] | tuple[tuple[float, float, float], ...] | tuple[str, ...]
    t0: float | None = None
    fs: float | None = None
    t: tuple[float, ...] | None = None

    @property
    def start(self) -> float:
        if self.t is not None:
            return self.t[0]
        assert self.t0 is not None
        return self.t0

    @property
    def end(self) -> float:
        if self.t is not None:
            return self.t[-1]
        assert self.t0 is not None
        assert self.fs is not None
        return self.t0 + (len(self.values) - 1) / self.fs

    def to_message(self, site: str, session: str, seq: int, run: str | None) -> contract.Message:
        if self.stream == "marker":
            assert self.t is not None
            texts = tuple(str(v) for v in self.values)
            return contract.MarkerMessage(site, session, self.device, seq, self.t, texts, run)
        return contract.samples(
            site,
            session,
            self.stream,
            self.device,
            seq,
            self.values,  # type: ignore[arg-type]
            t0=self.t0,
            fs=self.fs,
            t=self.t,
            run=run,
        )

    @classmethod
    def from_message(cls, msg: contract.SampleMessage | contract.MarkerMessage) -> Chunk:
        if isinstance(msg, contract.MarkerMessage):
            return cls("marker", msg.device, msg.values, t=msg.t)
        return cls(msg.stream, msg.device, msg.values, msg.t0, msg.fs, msg.t)


@dataclass(frozen=True, slots=True)
class RegularBlocks:
    """A regular series cut into blocks of ``seconds`` (:func:`regular_blocks`)."""

    #: first sample index, samples inside the contract's physical range, and size, per block
    starts: list[int]
    good: list[int]
    sizes: list[int]
    #: every sample: whether it is inside the range, and as a Python float (``acc``: a triple)
    ok: npt.NDArray[np.bool_]
    items: list[Any]


def regular_blocks(
    stream: SampleStream,
    fs: float,
    values: Sequence[float] | Sequence[tuple[float, float, float]] | npt.ArrayLike,
    seconds: float = 1.0,
) -> RegularBlocks | None:
    """The blocks of ``seconds`` (at least one sample each) that :func:`regular_chunks` makes
    chunks of, with the range check vectorised; None for an empty series."""
    per = max(1, math.floor(fs * seconds))
    low, high = contract.PHYSICAL_RANGE[stream]
    arr = np.asarray(values, dtype=np.float64)
    if stream == "acc":
        arr = arr.reshape(-1, 3)
    n = len(arr)
    if n == 0:
        return None
    inside: npt.NDArray[np.bool_] = (arr >= low) & (arr <= high)
    ok: npt.NDArray[np.bool_] = np.asarray(inside.all(axis=1)) if stream == "acc" else inside
    starts = np.arange(0, n, per)
    good = np.add.reduceat(ok.astype(np.int64), starts).tolist()
    sizes = np.diff(np.append(starts, n)).tolist()
    # Python floats (and (x, y, z) tuples) once for the whole series, then sliced per chunk.
    # (acc: zip of the three columns makes the triples directly, 2x cheaper than rows.)
    items: list[Any] = list(zip(*arr.T.tolist(), strict=True)) if stream == "acc" else arr.tolist()
    return RegularBlocks(starts.tolist(), good, sizes, ok, items)


def regular_chunks(
    stream: SampleStream,
    device: str,
    t0: float,
    fs: float,
    values: Sequence[float] | Sequence[tuple[float, float, float]] | npt.ArrayLike,
    *,
    seconds: float = 1.0,
) -> Iterator[Chunk]:
    """Split a regular series into chunks of ``seconds`` (at least one sample each).

    Samples outside the contract's physical range (or NaN) are dropped (the chunk holding them
    becomes irregular) so one bad sample never costs a whole message. ``values`` may be a list
    or a numpy array (``(n, 3)`` for ``acc``); the range check is vectorised.
    """
    blocks = regular_blocks(stream, fs, values, seconds)
    if blocks is None:
        return
    items, ok = blocks.items, blocks.ok
    for start, good, size in zip(blocks.starts, blocks.good, blocks.sizes, strict=True):
        part = items[start : start + size]
        if good == size:
            yield Chunk(stream, device, tuple(part), t0 + start / fs, fs)
        elif good:
            flags = ok[start : start + size].tolist()
            times = tuple(t0 + (start + i) / fs for i, g in enumerate(flags) if g)
            kept = tuple(v for v, g in zip(part, flags, strict=True) if g)
            yield Chunk(stream, device, kept, t=times)


def irregular_chunks(
    stream: ChunkStream,
    device: str,
    times: list[float],
    values: list[float] | list[str],
    *,
    seconds: float = 1.0,
) -> Iterator[Chunk]:
    """Group irregular samples into chunks spanning at most ``seconds``."""
    i = 0
    n = len(times)
    while i < n:
        j = i + 1
        while j < n and times[j] - times[i] < seconds:
            j += 1
        yield Chunk(stream, device, tuple(values[i:j]), t=tuple(times[i:j]))  # type: ignore[arg-type]
        i = j


def merge_in_time(streams: Iterable[Iterator[Chunk]]) -> Iterator[Chunk]:
    """Merge per-stream chunk iterators into one, ordered by chunk start time."""
    return heapq.merge(*streams, key=lambda c: c.start)


def open_source(
    path: Path, options: ReadOptions | None = None, *, message_s: float = 1.0
) -> Iterator[Chunk]:
    """Chunks of a recording in any supported format: E4 folder or zip, CSV, EmotiBit, XDF,
    Rekindle recording (see :mod:`rekindle.ingest.sources.formats`, also for ``message_s``)."""
    from rekindle.ingest.sources import formats  # noqa: PLC0415 (avoids an import cycle)

    return formats.open_recording(path, options, message_s=message_s)


def binned_chunks(
    stream: SampleStream,
    device: str,
    times: npt.NDArray[np.float64],
    values: npt.NDArray[np.float64],
    *,
    seconds: float = 1.0,
) -> Iterator[Chunk]:
    """Irregular samples (sorted by time) in chunks of one ``seconds`` bin each, vectorised;
    samples outside the contract's physical range (or NaN) are dropped."""
    low, high = contract.PHYSICAL_RANGE[stream]
    inside = (values >= low) & (values <= high)
    ok = np.asarray(inside.all(axis=1)) if values.ndim == 2 else inside
    times, values = times[ok], values[ok]
    if not len(times):
        return
    bins = np.floor((times - times[0]) / seconds)
    cuts = np.flatnonzero(np.diff(bins)) + 1
    bounds = [0, *cuts.tolist(), len(times)]
    tl: list[float] = times.tolist()
    vl: list[Any] = values.tolist()
    if values.ndim == 2:
        vl = [tuple(v) for v in vl]
    for a, b in itertools.pairwise(bounds):
        yield Chunk(stream, device, tuple(vl[a:b]), t=tuple(tl[a:b]))


def regular_rate(times: npt.NDArray[np.float64]) -> float | None:
    """The sample rate when ``times`` are regular to within a quarter sample (timestamps
    rounded to the millisecond still qualify), else None. A rate within 0.01 % of a whole
    number of Hz is taken as that number."""
    n = len(times)
    if n < 3 or not times[-1] > times[0]:
        return None
    fs = (n - 1) / float(times[-1] - times[0])
    if abs(fs - round(fs)) < 1e-4 * fs:
        fs = float(round(fs))
    expected = times[0] + np.arange(n) / fs
    if float(np.max(np.abs(times - expected))) > 0.25 / fs:
        return None
    return fs


def series_chunks(
    stream: SampleStream,
    device: str,
    times: npt.NDArray[np.float64],
    values: npt.NDArray[np.float64],
) -> Iterator[Chunk]:
    """Samples with their own times as chunks: the regular form when the times are regular
    (``t0`` = first time), else irregular 1-s chunks. RR is always irregular."""
    fs = None if stream in contract.IRREGULAR_ONLY else regular_rate(times)
    if fs is not None and contract.FS_RANGE[0] <= fs <= contract.FS_RANGE[1]:
        return regular_chunks(stream, device, float(times[0]), fs, values)
    return binned_chunks(stream, device, times, values)


def marker_chunks(device: str, times: Sequence[float], texts: Sequence[str]) -> Iterator[Chunk]:
    """Markers in time order, one chunk per distinct time (as the E4 reader groups tags)."""
    order = sorted(range(len(times)), key=lambda i: times[i])
    return irregular_chunks(
        "marker", device, [float(times[i]) for i in order], [texts[i] for i in order], seconds=1e-9
    )
