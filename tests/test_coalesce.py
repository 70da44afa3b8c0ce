"""Longer messages for a replay at ``--speed max`` (rekindle.ingest.coalesce): the same samples
at the same nanoseconds in fewer valid messages, and the same analysis as 1-s messages, because
the analyzer widens its lateness allowance by the span it sees (docs/method.md, section 1)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from rekindle import contract
from rekindle.analysis.batch import write_results
from rekindle.analysis.core import Episode, FeatureRow
from rekindle.analysis.offline import add_metrics, run_pipeline
from rekindle.analysis.params import apply
from rekindle.analysis.pipeline import SessionPipeline, sample_times_ns
from rekindle.ingest.coalesce import MAX_SPEED_MESSAGE_S, coalesce
from rekindle.ingest.sources.base import Chunk, open_source, regular_chunks
from rekindle.ingest.sources.e4 import read_e4_folder
from tests.conftest import S02, fixture_path

#: The first quarter hour of S02 (EDA, BVP -> derived beats, IBI, HR, ACC, TEMP, a tag).
PART_S = 900.0


def s02_part() -> list[Chunk]:
    chunks = list(read_e4_folder(fixture_path(S02)))
    t0 = min(c.start for c in chunks if c.stream != "marker")
    return [c for c in chunks if c.start < t0 + PART_S]


def messages(chunks: Iterable[Chunk]) -> Iterator[contract.Message]:
    for seq, chunk in enumerate(chunks):
        yield chunk.to_message("s", "p", seq, None)


def samples_by_stream(chunks: Iterable[Chunk]) -> dict[tuple[str, str], list[tuple[int, object]]]:
    out: dict[tuple[str, str], list[tuple[int, object]]] = {}
    for msg in messages(chunks):
        if isinstance(msg, contract.SampleMessage):
            ns = sample_times_ns(msg).tolist()
            out.setdefault((msg.device, msg.stream), []).extend(zip(ns, msg.values, strict=True))
    return out


def analyse(chunks: Iterable[Chunk]) -> tuple[list[FeatureRow], list[Episode], int]:
    pipeline = SessionPipeline("s", "p", store_lines=False)
    events = []
    for msg in messages(chunks):
        events.extend(pipeline.handle(msg).events)
    late = pipeline.analyzer.late_samples
    events.extend(pipeline.finish().events)
    rows = [e for e in events if isinstance(e, FeatureRow)]
    return rows, [e for e in events if isinstance(e, Episode)], late


def test_every_sample_at_the_same_nanosecond_in_fewer_valid_messages() -> None:
    chunks = s02_part()
    joined = list(coalesce(chunks, 30.0))
    assert len(joined) < len(chunks) / 10
    assert samples_by_stream(joined) == samples_by_stream(chunks)
    starts = [c.start for c in joined]
    assert starts == sorted(starts), "a message starts before one sent earlier"
    assert [c for c in joined if c.stream == "marker"] == [
        c for c in chunks if c.stream == "marker"
    ]
    for msg in messages(joined):
        topic, payload = contract.encode(msg)
        assert len(payload) <= contract.MAX_PAYLOAD_BYTES
        contract.decode(topic, payload, now=msg.end if hasattr(msg, "end") else 2e9)
        if isinstance(msg, contract.SampleMessage):
            assert len(msg) <= contract.MAX_VALUES


def test_regular_runs_split_where_joined_times_would_differ() -> None:
    """At 100 Hz ``t0 + i / fs`` of a joined message is not always the nanosecond of the
    chunk's own message: the run starts again there, so no sample moves."""
    values = [1.0] * 6000
    chunks = list(regular_chunks("ecg", "h", 1_700_000_000.3, 100.0, values))
    joined = list(coalesce(chunks, 30.0))
    assert samples_by_stream(joined) == samples_by_stream(chunks)
    assert len(joined) <= len(chunks)


def test_span_of_one_second_or_less_changes_nothing() -> None:
    chunks = s02_part()[:50]
    assert list(coalesce(chunks, 1.0)) == chunks


@pytest.mark.parametrize("span_s", [10.0, 60.0])
def test_analysis_of_longer_messages_equals_one_second_messages(span_s: float) -> None:
    chunks = s02_part()
    rows, episodes, late = analyse(chunks)
    joined_rows, joined_episodes, joined_late = analyse(coalesce(chunks, span_s))
    assert late == joined_late == 0
    assert len(rows) > 800
    assert joined_rows == rows
    assert joined_episodes == episodes


def test_a_regular_chunk_off_by_a_microsecond_starts_a_new_run() -> None:
    """At 64 Hz (a whole number of ns per sample) a chunk continues a run only at exactly the
    nanosecond the run puts its first sample at; a microsecond off, the run starts again."""
    chunks = list(regular_chunks("ppg", "h", 1_700_000_000.25, 64.0, [1.0] * 640))
    assert len(list(coalesce(chunks, 30.0))) == 1
    moved = chunks[4]
    assert moved.t0 is not None
    chunks[4] = Chunk(moved.stream, moved.device, moved.values, moved.t0 + 1e-6, moved.fs)
    joined = list(coalesce(chunks, 30.0))
    assert samples_by_stream(joined) == samples_by_stream(chunks)
    assert [len(c.values) for c in joined] == [256, 64, 320]


@pytest.mark.parametrize("params", [{}, {"enter_index": 45, "min_episode_s": 20}])
def test_rekindle_analyze_of_s02_equals_one_second_messages_bit_for_bit(
    tmp_path: Path, params: dict[str, float]
) -> None:
    """``rekindle analyze`` (and ``rekindle.analyze``, both through ``run_pipeline``) feeds the
    pipeline the 30-s messages of ``replay --speed max``: every file it writes equals the one
    written from 1-s messages, byte for byte, on the whole of S02 (with NeuroKit2's metrics and
    segments; with parameters that give a release episode too)."""
    config = apply(params)
    written = {}
    for message_s in (1.0, MAX_SPEED_MESSAGE_S):
        chunks = open_source(fixture_path(S02))
        result = run_pipeline(chunks, "S02", config=config, keep=("eda", "rr"), message_s=message_s)
        add_metrics(result, config)
        folder = write_results(result, tmp_path / f"{message_s:g}", plots=False)
        written[message_s] = {p.name: p.read_bytes() for p in sorted(folder.iterdir())}
    assert {"episodes.csv", "features.csv", "segments.csv", "summary.json"} <= set(written[1.0])
    assert written[MAX_SPEED_MESSAGE_S] == written[1.0]
    if params:
        assert b"release" in written[1.0]["episodes.csv"]
