"""Longer messages for a replay at ``--speed max`` (rekindle.ingest.coalesce): the same samples
at the same nanoseconds in fewer valid messages, and the same analysis as 1-s messages, because
the analyzer widens its lateness allowance by the span it sees (docs/method.md, section 1)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pytest

from rekindle import contract
from rekindle.analysis.core import Episode, FeatureRow
from rekindle.analysis.pipeline import SessionPipeline, sample_times_ns
from rekindle.ingest.coalesce import coalesce
from rekindle.ingest.sources.base import Chunk, regular_chunks
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
