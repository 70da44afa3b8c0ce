"""Fewer, longer messages for a replay at ``--speed max``: consecutive chunks of a stream joined.

Live, publishers send at most 1 s per message (when its last sample is measured). A replay as
fast as the broker acknowledges gains nothing from that: every message costs the same on the
wire and in the analysis (decode, PUBACK, seq tracking, end-to-end acknowledgement) whatever
it holds, so a session-hour in 1-s messages (18k for an E4 export) spends most of its time on
messages rather than samples. :func:`coalesce` joins the chunks of each (device, stream) that
fall in one ``span_s`` cell of data time (``floor(start / span_s)``) into one chunk, keeping
every sample and its time to the last bit:

* a regular chunk continues a regular run only when the joined message gives every sample
  the same integer nanoseconds as its own message did (``t0`` + ``i / fs`` as
  :meth:`rekindle.contract.SampleMessage.times_ns` computes them), so storage and analysis
  see the same times; otherwise (a rate that is not a power of two, a gap) a new run starts;
* irregular chunks join irregular runs (their times are listed); markers are never joined;
* a run stops at the contract's limits (4096 values, an estimate of the payload well under
  256 KiB).

Order: when the data enters a new cell, every run of the cells before is sent, ordered by its
start. Every message therefore starts no earlier than any message sent before it, and
streams are out of step by at most one message span: the analysis widens its lateness
allowance by the span it sees (docs/method.md, section 1), so nothing arrives late.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from rekindle import contract
from rekindle.ingest.sources.base import Chunk, regular_blocks, regular_chunks

#: Data per message (s) of ``rekindle replay --speed max`` and of ``rekindle analyze`` (which
#: feeds the pipeline the messages such a replay publishes).
MAX_SPEED_MESSAGE_S = 30.0
#: Bytes one JSON number may take in a payload (``-1.2345678901234567e-05`` and a comma).
_NUMBER_BYTES = 25
#: Payload budget of one joined message (the contract allows 256 KiB).
_PAYLOAD_BUDGET = 192 * 1024


def _width(stream: str) -> int:
    return 3 if stream == "acc" else 1


@functools.lru_cache(maxsize=64)
def _offsets(fs: float) -> tuple[int | None, np.ndarray[Any, np.dtype[np.int64]]]:
    """Sample ``i`` of a regular message at ``t0`` is at ``round(t0 * 1e9) + offsets[i]`` ns,
    as :meth:`rekindle.contract.SampleMessage.times_ns` computes it (``round(i * (1e9 / fs))``,
    the same float operations, for every index a message may have); and the sample period in
    whole ns when every offset is exactly that period times the index (``1e9 / fs`` an integer:
    64 Hz, 4 Hz...), else None."""
    offsets = np.rint(np.arange(contract.MAX_VALUES + 1, dtype=np.float64) * (1e9 / fs)).astype(
        np.int64
    )
    offsets.setflags(write=False)
    step = 1e9 / fs
    exact = step == math.floor(step) and step * contract.MAX_VALUES < 2**53
    return (int(step) if exact else None), offsets


@dataclass(slots=True)
class _Run:
    first: Chunk
    parts: list[Chunk] = field(default_factory=list)
    count: int = 0

    def chunk(self) -> Chunk:
        if len(self.parts) == 1:
            return self.first
        c = self.first
        values: tuple[Any, ...] = tuple(itertools.chain.from_iterable(p.values for p in self.parts))
        if c.t is None:
            return Chunk(c.stream, c.device, values, c.t0, c.fs)
        times = tuple(itertools.chain.from_iterable(p.t or () for p in self.parts))
        return Chunk(c.stream, c.device, values, t=times)

    def room(self, chunk: Chunk, span_s: float) -> bool:
        """Whether ``chunk`` can join this run as one valid message with the same times."""
        c = self.first
        if chunk.stream == "marker" or (chunk.t is None) != (c.t is None):
            return False
        n = self.count + len(chunk.values)
        per_value = _NUMBER_BYTES * (_width(c.stream) + (0 if c.t is None else 1))
        if n > contract.MAX_VALUES or n * per_value > _PAYLOAD_BUDGET:
            return False
        if chunk.end - c.start > min(contract.MAX_SPAN_S, 2 * span_s):
            return False
        if c.t is not None:
            return True
        assert c.t0 is not None
        assert c.fs is not None
        assert chunk.t0 is not None
        if chunk.fs != c.fs:
            return False
        # sample j of the chunk: its own message puts it at round(chunk.t0 * 1e9) + offsets[j],
        # the joined one at round(c.t0 * 1e9) + offsets[count + j]
        shift = round(chunk.t0 * 1e9) - round(c.t0 * 1e9)
        step, offsets = _offsets(c.fs)
        if step is not None:
            return shift == self.count * step
        k = len(chunk.values)
        return bool(np.array_equal(offsets[self.count : self.count + k] - offsets[:k], shift))

    def add(self, chunk: Chunk) -> None:
        self.parts.append(chunk)
        self.count += len(chunk.values)


def coalesce(chunks: Iterable[Chunk], span_s: float) -> Iterator[Chunk]:
    """``chunks`` (time-ordered by start) joined per stream into cells of ``span_s`` seconds of
    data time; see the module docstring. ``span_s <= 1`` gives the chunks back unchanged."""
    if span_s <= 1.0:
        yield from chunks
        return
    open_runs: dict[tuple[str, str], _Run] = {}
    done: list[_Run] = []
    cell: float | None = None

    def flush() -> Iterator[Chunk]:
        runs = sorted([*done, *open_runs.values()], key=lambda r: r.first.start)
        done.clear()
        open_runs.clear()
        for run in runs:
            yield run.chunk()

    for chunk in chunks:
        here = math.floor(chunk.start / span_s)
        if cell is not None and here > cell:
            yield from flush()
        cell = here if cell is None else max(cell, here)
        key = (chunk.device, chunk.stream)
        run = open_runs.get(key)
        if run is not None and run.room(chunk, span_s):
            run.add(chunk)
            continue
        if run is not None:
            done.append(run)
            del open_runs[key]
        fresh = _Run(chunk)
        fresh.add(chunk)
        if chunk.stream == "marker":
            done.append(fresh)
        else:
            open_runs[key] = fresh
    yield from flush()


def coalesced_regular(
    stream: contract.SampleStream,
    device: str,
    t0: float,
    fs: float,
    values: npt.ArrayLike,
    span_s: float,
) -> Iterator[Chunk]:
    """Exactly the chunks of ``coalesce(regular_chunks(stream, device, t0, fs, values),
    span_s)``, made from the arrays without the 1-s chunks in between (about 10x cheaper on
    an E4 session-hour: no Chunk, tuple and run check per second of data).

    The 1-s blocks of :func:`~rekindle.ingest.sources.base.regular_chunks` (its range check:
    a block with dropped samples is irregular, an empty one is skipped) are joined as
    :meth:`_Run.room` joins them, block by block on plain numbers: a run ends where a block
    enters a new ``span_s`` cell, changes between regular and irregular, would pass the
    contract's value or payload limits or the span limit, or would get other integer
    nanoseconds. Merged with the other streams' chunks by start, the result is what
    :func:`coalesce` yields from all of them: :func:`coalesce` leaves these chunks as they are
    (tests/test_coalesce.py)."""
    if span_s <= 1.0:
        yield from regular_chunks(stream, device, t0, fs, values)
        return
    blocks = regular_blocks(stream, fs, values)
    if blocks is None:
        return
    items, ok = blocks.items, blocks.ok
    width = _width(stream)
    limit_span = min(contract.MAX_SPAN_S, 2 * span_s)
    step, offsets = _offsets(fs)
    # the run being joined: kind (True: regular), first block's start/t0 and ns, sample count,
    # and its samples as (first index, end index) slices of items (irregular: with their times)
    run_regular = False
    run_start = run_ns = 0.0
    run_cell = -math.inf
    count = 0
    parts: list[tuple[int, int, list[bool] | None]] = []

    def emit() -> Chunk:
        if run_regular:
            joined = tuple(itertools.chain.from_iterable(items[a:b] for a, b, _ in parts))
            return Chunk(stream, device, joined, run_start, fs)
        vals: list[Any] = []
        times: list[float] = []
        for a, b, flags in parts:
            assert flags is not None
            for i, g in zip(range(a, b), flags, strict=True):
                if g:
                    vals.append(items[i])
                    times.append(t0 + i / fs)
        return Chunk(stream, device, tuple(vals), t=tuple(times))

    for start, g, size in zip(blocks.starts, blocks.good, blocks.sizes, strict=True):
        if not g:
            continue
        regular = g == size
        flags = None if regular else ok[start : start + size].tolist()
        if regular:
            b_start = t0 + start / fs
            b_end = b_start + (size - 1) / fs
        else:
            assert flags is not None
            first = flags.index(True)
            last = size - 1 - flags[::-1].index(True)
            b_start = t0 + (start + first) / fs
            b_end = t0 + (start + last) / fs
        cell = math.floor(b_start / span_s)
        joins = bool(parts) and cell == run_cell and regular == run_regular
        if joins:
            total = count + g
            per_value = _NUMBER_BYTES * (width + (0 if regular else 1))
            too_long = b_end - run_start > limit_span
            if total > contract.MAX_VALUES or total * per_value > _PAYLOAD_BUDGET or too_long:
                joins = False
            elif regular:
                shift = round(b_start * 1e9) - run_ns
                if step is not None:
                    joins = shift == count * step
                else:
                    joins = bool(np.array_equal(offsets[count : count + g] - offsets[:g], shift))
        if not joins:
            if parts:
                yield emit()
            parts = []
            run_regular, run_start, run_cell, count = regular, b_start, cell, 0
            run_ns = round(b_start * 1e9)
        parts.append((start, start + size, flags))
        count += g
    if parts:
        yield emit()
