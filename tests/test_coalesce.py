"""Longer messages for a replay at ``--speed max`` (rekindle.ingest.coalesce): the same samples
at the same nanoseconds in fewer valid messages, and the same analysis as 1-s messages, because
the analyzer widens its lateness allowance by the span it sees (docs/method.md, section 1)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest

from rekindle import contract
from rekindle.analysis.batch import write_results
from rekindle.analysis.core import Episode, FeatureRow
from rekindle.analysis.offline import add_metrics, run_pipeline
from rekindle.analysis.params import apply
from rekindle.analysis.pipeline import SessionPipeline
from rekindle.analysis.points import sample_times_ns
from rekindle.ingest.coalesce import MAX_SPEED_MESSAGE_S, coalesce, coalesced_regular
from rekindle.ingest.sources.base import Chunk, open_source, regular_chunks
from rekindle.ingest.sources.e4 import load_e4, read_e4_folder
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
    # (read in 1-s chunks, and as ``rekindle analyze`` reads: already in the 30-s messages)
    arms = [(1.0, 1.0), (1.0, MAX_SPEED_MESSAGE_S), (MAX_SPEED_MESSAGE_S, MAX_SPEED_MESSAGE_S)]
    for read_s, message_s in arms:
        chunks = open_source(fixture_path(S02), message_s=read_s)
        result = run_pipeline(chunks, "S02", config=config, keep=("eda", "rr"), message_s=message_s)
        add_metrics(result, config)
        folder = write_results(result, tmp_path / f"{read_s:g}-{message_s:g}", plots=False)
        written[read_s, message_s] = {p.name: p.read_bytes() for p in sorted(folder.iterdir())}
    one = written[1.0, 1.0]
    assert {"episodes.csv", "features.csv", "segments.csv", "summary.json"} <= set(one)
    assert written[1.0, MAX_SPEED_MESSAGE_S] == one
    assert written[MAX_SPEED_MESSAGE_S, MAX_SPEED_MESSAGE_S] == one
    if params:
        assert b"release" in one["episodes.csv"]


def _series(stream: str, n: int, seed: int) -> np.ndarray:
    """A series with the defects a recording has: NaN samples and stretches, samples outside
    the contract's range (single, and a whole second), for ``acc`` as ``(n, 3)``."""
    rng = np.random.default_rng(seed)
    low, high = contract.PHYSICAL_RANGE[stream]  # type: ignore[index]
    span = min(high, 50.0) - max(low, -50.0)
    x = max(low, -50.0) + span * (0.25 + 0.5 * rng.random((n, 3) if stream == "acc" else n))
    singles = max(2, n // 400)  # (at most one in a few seconds: most seconds stay whole)
    x[rng.integers(0, n, size=singles)] = np.nan
    x[n // 3 : n // 3 + n // 20] = np.nan
    x[rng.integers(0, n, size=singles)] = high + 1.0
    x[n // 2 : n // 2 + n // 50] = low - 1.0
    return x


@pytest.mark.parametrize(
    ("stream", "fs", "t0", "seconds"),
    [
        ("ppg", 64.0, 1_700_000_000.25, 400),
        ("acc", 32.0, 1_700_000_000.0, 400),
        ("eda", 4.0, 1_700_000_000.7, 900),
        ("hr", 1.0, 1_700_000_003.0, 600),
        ("ecg", 100.0, 1_700_000_000.3, 130),
        ("eda", 7.3, 1_700_000_000.123, 300),
        ("temp", 0.5, 1_700_000_001.0, 900),
        ("ecg", 1000.0, 1_700_000_000.001, 40),
    ],
)
@pytest.mark.parametrize("span_s", [1.0, 10.0, MAX_SPEED_MESSAGE_S])
def test_coalesced_regular_is_coalesce_of_the_one_second_chunks(
    stream: contract.SampleStream, fs: float, t0: float, seconds: int, span_s: float
) -> None:
    """The chunks a reader hands ``rekindle analyze`` directly are those ``coalesce`` makes of
    the series' 1-s chunks: the same values, times, kinds and splits (cells, the contract's
    limits, a rate whose joined times would move, gaps and rejected samples)."""
    values = _series(stream, int(seconds * fs), seed=int(fs * 10))
    expected = list(coalesce(regular_chunks(stream, "d", t0, fs, values), span_s))
    got = list(coalesced_regular(stream, "d", t0, fs, values, span_s))
    assert len(expected) > 1
    assert any(c.t is None for c in expected)
    if fs >= 2:  # (at 1 Hz or less a second holds one sample: a bad one is simply dropped)
        assert any(c.t is not None for c in expected), "no second with a rejected sample"
    assert got == expected


def test_e4_chunks_for_analyze_are_the_messages_coalesce_makes_on_s02() -> None:
    """The E4 reader's chunks for ``rekindle analyze`` (regular series already in 30-s
    messages), once through ``coalesce`` as the pipeline does, are the messages of the 1-s
    chunks of a replay: same order, same samples, same seq."""
    export = load_e4(fixture_path(S02))
    one = list(messages(coalesce(export.chunks(), MAX_SPEED_MESSAGE_S)))
    direct = list(messages(coalesce(export.chunks(MAX_SPEED_MESSAGE_S), MAX_SPEED_MESSAGE_S)))
    assert len(one) > 500
    assert direct == one
    assert list(export.chunks(1.0)) == list(read_e4_folder(fixture_path(S02)))
