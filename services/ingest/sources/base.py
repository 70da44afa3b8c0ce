"""What every source yields: time-ordered chunks of at most ~1 s of one stream."""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

from services import contract
from services.contract import SampleStream
from services.ingest.errors import SourceError

ChunkStream: TypeAlias = SampleStream | Literal["marker"]


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
    per = max(1, math.floor(fs * seconds))
    low, high = contract.PHYSICAL_RANGE[stream]
    arr = np.asarray(values, dtype=np.float64)
    if stream == "acc":
        arr = arr.reshape(-1, 3)
    n = len(arr)
    if n == 0:
        return
    inside: npt.NDArray[np.bool_] = (arr >= low) & (arr <= high)
    ok: npt.NDArray[np.bool_] = np.asarray(inside.all(axis=1)) if stream == "acc" else inside
    starts = np.arange(0, n, per)
    good_per_block = np.add.reduceat(ok.astype(np.int64), starts)
    sizes = np.diff(np.append(starts, n))
    # Python floats (and (x, y, z) tuples) once for the whole series, then sliced per chunk.
    items: list[Any] = arr.tolist()
    if stream == "acc":
        items = [tuple(v) for v in items]
    for start, good, size in zip(
        starts.tolist(), good_per_block.tolist(), sizes.tolist(), strict=True
    ):
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


def open_source(path: Path) -> Iterator[Chunk]:
    """Chunks of a recording: an Empatica E4 export folder or zip, or a Rekindle recording."""
    from services.ingest.sources import e4, recording  # noqa: PLC0415 (avoids an import cycle)

    if path.is_dir():
        return e4.read_e4_folder(path)
    if path.is_file() and path.suffix.lower() == ".zip":
        return e4.read_e4_zip(path)
    if path.is_file():
        return recording.read_recording(path)
    raise SourceError(path, "no such file or folder")
