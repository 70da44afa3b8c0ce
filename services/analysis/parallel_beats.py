"""Offline only: the beats derived from PPG computed in a second process, beside the rest.

The beats of :mod:`rekindle.analysis.ppg` depend on nothing but the session's PPG messages, in
order, and they are about a third of an offline analysis's CPU (S02). An offline analysis can
read the whole recording before it starts, so a forked child (:class:`BeatsProcess`) makes the
session's PPG messages from the recording's chunks (:func:`ppg_messages`, the messages the
pipeline gets), runs its :class:`~rekindle.analysis.ppg.DerivedBeats` over them, as the
pipeline would, and sends what each one derived; the pipeline takes it through the same two
calls as its own ``DerivedBeats`` (``inputs`` right after each PPG message, ``finish`` at the
end of data), so the derived intervals reach the analyzer at exactly the points where a single
process would have computed them, and the outputs are the same bit for bit
(tests/test_parallel_beats.py). The child gets the chunks by ``fork`` (nothing is pickled but
the derived batches); where ``fork`` is not available, or on one CPU, the analysis derives its
beats itself (:func:`available`). For an E4 export the child is started before anything is
read and reads the PPG file itself (:func:`start_before_reading`), so that its beats overlap
this process's reading of the other files as well as its analysis.

The live service never uses this: there the PPG arrives message by message.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from multiprocessing.connection import Connection
from pathlib import Path

from rekindle import contract
from rekindle.analysis.core import AnalysisConfig, AnalyzerInput, SampleBatch
from rekindle.analysis.errors import AnalysisError
from rekindle.analysis.pipeline import to_input
from rekindle.analysis.ppg import DerivedBeats
from rekindle.ingest.coalesce import coalesce
from rekindle.ingest.errors import IngestError
from rekindle.ingest.sources.base import Chunk

#: The exit code of a child that could not read the PPG itself
#: (:func:`start_before_reading`).
SOURCE_FAILED = 3


class BeatsProcessError(AnalysisError):
    """The process deriving the PPG beats ended before sending them all (``exitcode``)."""

    def __init__(self, exitcode: int | None) -> None:
        why = " reading the PPG" if exitcode == SOURCE_FAILED else ""
        super().__init__(f"the PPG beat process ended early{why} (exit code {exitcode})")
        self.exitcode = exitcode


def available() -> bool:
    """Whether a second process can derive the beats here: ``fork`` exists and this process
    may run on more than one CPU."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return "fork" in multiprocessing.get_all_start_methods() and (cpus or 1) > 1


def ppg_inputs(messages: Iterable[contract.Message]) -> Iterator[contract.SampleMessage]:
    """The messages whose samples the pipeline gives ``DerivedBeats.inputs``: non-empty PPG."""
    for m in messages:
        if isinstance(m, contract.SampleMessage) and m.stream == "ppg" and len(m) > 0:
            yield m


def ppg_messages(chunks: Iterable[Chunk], message_s: float) -> Iterator[contract.SampleMessage]:
    """The PPG messages that :func:`~rekindle.ingest.coalesce.coalesce` makes of ``chunks``
    (in time order) with the other streams, made from the PPG chunks alone (lazily: for the
    child). The same: a run of one stream's chunks ends where they leave a ``message_s`` cell
    (every run is flushed when the data enters a new cell, and in time order that happens
    between two PPG chunks exactly when their cells differ) or at its own limits; neither
    depends on the other streams (tests/test_parallel_beats.py). ``seq`` is not kept (the
    analysis does not read it)."""
    ppg = coalesce((c for c in chunks if c.stream == "ppg"), message_s)
    return ppg_inputs(c.to_message("", "", 0, None) for c in ppg)


def _read_then_make(
    read: Callable[[], Iterable[Chunk]], message_s: float
) -> Iterator[contract.SampleMessage]:
    # (a generator: ``read`` runs where it is first iterated, in the child)
    yield from ppg_messages(read(), message_s)


def start_before_reading(
    spec: str, config: AnalysisConfig | None, message_s: float
) -> BeatsProcess | None:
    """A :class:`BeatsProcess` for the recording at ``spec`` whose child reads the PPG itself,
    started before this process reads the recording, so that the beats are derived while it
    reads the other streams; for a format that reads its PPG alone for less
    (:func:`~rekindle.ingest.sources.formats.stream_reader`: E4 folders and zips, whose chunks
    are in time order by construction, so that :func:`ppg_messages` of them are the
    pipeline's). None where that does not hold, the beats are off, or :func:`available` is
    not: then ``run_pipeline(parallel_beats=True)`` forks after reading, or the pipeline
    derives the beats itself. A PPG file the child cannot read ends it quietly (exit code
    :data:`SOURCE_FAILED`): this process reads the same file and reports the error."""
    from rekindle.ingest.sources import formats  # noqa: PLC0415

    cfg = config or AnalysisConfig()
    if cfg.ppg_beats <= 0 or not available():
        return None
    read = formats.stream_reader(Path(spec), "ppg", message_s)
    if read is None:
        return None
    return BeatsProcess(cfg, _read_then_make(read, message_s))


def in_time_order(chunks: Sequence[Chunk]) -> bool:
    """Whether each chunk starts no earlier than the one before (what every source yields)."""
    return all(a.start <= b.start for a, b in itertools.pairwise(chunks))


def _derive(
    config: AnalysisConfig, messages: Iterable[contract.SampleMessage], out: Connection
) -> None:
    # (Ctrl-C reaches the whole process group: the parent handles it and stops this child)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    beats = DerivedBeats(config)
    try:
        for msg in messages:
            item = to_input(msg)
            assert isinstance(item, SampleBatch)
            out.send(beats.inputs(item)[1:])  # (inputs gives the item first, then what it derived)
    except IngestError:
        sys.exit(SOURCE_FAILED)  # (no traceback: the parent reads the same file and says why)
    out.send(beats.finish())
    out.close()


class BeatsProcess:
    """The pipeline's beat source (in place of its own ``DerivedBeats``) whose beats a child
    process derives from ``messages``, the session's PPG messages (:func:`ppg_inputs`,
    :func:`ppg_messages`) in the order the pipeline will get them: an iterable that the child
    alone goes through (after the fork). Close it (or use it as a context manager) at the end."""

    def __init__(self, config: AnalysisConfig, messages: Iterable[contract.SampleMessage]) -> None:
        self.enabled = DerivedBeats(config).enabled
        context = multiprocessing.get_context("fork")
        self._conn, child = context.Pipe(duplex=False)
        self._proc = context.Process(
            target=_derive, args=(config, messages, child), name="rekindle-ppg-beats", daemon=True
        )
        self._proc.start()
        child.close()
        self._finished = False

    def _next(self) -> list[AnalyzerInput]:
        try:
            batches: list[AnalyzerInput] = self._conn.recv()
        except EOFError:
            self._proc.join()
            raise BeatsProcessError(self._proc.exitcode) from None
        return batches

    def inputs(self, item: AnalyzerInput) -> list[AnalyzerInput]:
        """``item`` and the intervals its PPG completed, as ``DerivedBeats.inputs``."""
        return [item, *self._next()]

    def finish(self) -> list[AnalyzerInput]:
        batches = self._next()
        self._finished = True
        return batches

    @property
    def running(self) -> bool:
        """Whether the child is still running."""
        return self._proc.is_alive()

    def close(self) -> None:
        """Wait for the child; stop it first when the pipeline did not take all its beats
        (an error, or a session without samples)."""
        if not self._finished:
            self._proc.terminate()
        self._proc.join()
        self._conn.close()

    def __enter__(self) -> BeatsProcess:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
