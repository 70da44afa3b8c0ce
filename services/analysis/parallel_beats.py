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
beats itself (:func:`available`).

The live service never uses this: there the PPG arrives message by message.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
from collections.abc import Iterable, Iterator, Sequence
from multiprocessing.connection import Connection

from rekindle import contract
from rekindle.analysis.core import AnalysisConfig, AnalyzerInput, SampleBatch
from rekindle.analysis.errors import AnalysisError
from rekindle.analysis.pipeline import to_input
from rekindle.analysis.ppg import DerivedBeats
from rekindle.ingest.coalesce import coalesce
from rekindle.ingest.sources.base import Chunk


class BeatsProcessError(AnalysisError):
    """The process deriving the PPG beats ended before sending them all (``exitcode``)."""

    def __init__(self, exitcode: int | None) -> None:
        super().__init__(f"the PPG beat process ended early (exit code {exitcode})")
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


def ppg_messages(chunks: Sequence[Chunk], message_s: float) -> Iterator[contract.SampleMessage]:
    """The PPG messages that :func:`~rekindle.ingest.coalesce.coalesce` makes of ``chunks``
    (in time order) with the other streams, made from the PPG chunks alone (lazily: for the
    child). The same: a run of one stream's chunks ends where they leave a ``message_s`` cell
    (every run is flushed when the data enters a new cell, and in time order that happens
    between two PPG chunks exactly when their cells differ) or at its own limits; neither
    depends on the other streams (tests/test_parallel_beats.py). ``seq`` is not kept (the
    analysis does not read it)."""
    ppg = coalesce((c for c in chunks if c.stream == "ppg"), message_s)
    return ppg_inputs(c.to_message("", "", 0, None) for c in ppg)


def in_time_order(chunks: Sequence[Chunk]) -> bool:
    """Whether each chunk starts no earlier than the one before (what every source yields)."""
    return all(a.start <= b.start for a, b in itertools.pairwise(chunks))


def _derive(
    config: AnalysisConfig, messages: Iterable[contract.SampleMessage], out: Connection
) -> None:
    # (Ctrl-C reaches the whole process group: the parent handles it and stops this child)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    beats = DerivedBeats(config)
    for msg in messages:
        item = to_input(msg)
        assert isinstance(item, SampleBatch)
        out.send(beats.inputs(item)[1:])  # (inputs gives the item first, then what it derived)
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
