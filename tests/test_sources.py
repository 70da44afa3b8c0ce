"""Ingest sources: E4 export folders, Rekindle recordings, the simulated wearable."""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from rekindle import contract
from rekindle.ingest.errors import SourceError
from rekindle.ingest.sources.base import Chunk, open_source
from rekindle.ingest.sources.e4 import read_e4_folder
from rekindle.ingest.sources.recording import RecordingWriter, read_recording
from rekindle.ingest.sources.simulator import SimulationScript, simulate, simulate_arrays
from tests.conftest import S02, fixture_path


def data_rows(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines()[2:] if line.strip())


def test_e4_folder_yields_every_sample_once_in_time_order() -> None:
    folder = fixture_path(S02)
    counts: Counter[str] = Counter()
    starts = []
    for chunk in read_e4_folder(folder):
        counts[chunk.stream] += len(chunk.values)
        starts.append(chunk.start)
        if chunk.t0 is not None and chunk.fs is not None:
            assert len(chunk.values) <= chunk.fs  # at most one second per message
    assert starts == sorted(starts)
    assert counts["eda"] == data_rows(folder / "EDA.csv")
    assert counts["hr"] == data_rows(folder / "HR.csv")
    assert counts["ppg"] == data_rows(folder / "BVP.csv")
    assert counts["acc"] == data_rows(folder / "ACC.csv")
    assert counts["rr"] == len((folder / "IBI.csv").read_text().splitlines()) - 1
    assert counts["marker"] == len((folder / "tags_S02.csv").read_text().split())


def test_e4_units_and_times() -> None:
    chunks = list(read_e4_folder(fixture_path(S02)))
    acc = next(c for c in chunks if c.stream == "acc")
    assert acc.values[0] == (2 / 64, 10 / 64, 63 / 64)  # first ACC row is 2,10,63 (1/64 g)
    rr = next(c for c in chunks if c.stream == "rr")
    assert rr.t is not None
    assert rr.t[0] == 1644227574.0 + 604.0
    assert rr.values[0] == 687.5
    marker = next(c for c in chunks if c.stream == "marker")
    assert marker.t == (1644228196.0,)
    assert marker.values == ("e4_tag",)


def test_e4_gzip_and_empty_tags(tmp_path: Path) -> None:
    src = fixture_path("empatica_e4_flirt_sample")
    for name in ("EDA.csv", "HR.csv", "IBI.csv", "tags.csv"):
        data = (src / name).read_bytes()
        if name == "EDA.csv":
            (tmp_path / "EDA.csv.gz").write_bytes(gzip.compress(data))
        else:
            (tmp_path / name).write_bytes(data)
    chunks = list(read_e4_folder(tmp_path))
    counts = Counter(c.stream for c in chunks for _ in c.values)
    assert counts["eda"] == data_rows(src / "EDA.csv")
    assert counts["rr"] == len((src / "IBI.csv").read_text().splitlines()) - 1
    assert "marker" not in counts  # the real tags.csv is empty


def test_e4_errors_name_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "EDA.csv").write_text("1644227574.0\n4.0\n0.1\nabc\n")
    with pytest.raises(SourceError, match=r"EDA.csv:4: not a number") as info:
        list(read_e4_folder(tmp_path))
    assert info.value.line == 4
    with pytest.raises(SourceError, match="no such file"):
        open_source(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="no E4 files"):
        list(read_e4_folder(empty))


def test_out_of_range_samples_are_dropped_not_the_message(tmp_path: Path) -> None:
    (tmp_path / "EDA.csv").write_text("1644227574.0\n4.0\n0.1\n0.2\n-5\n0.3\n")
    chunks = list(read_e4_folder(tmp_path))
    assert len(chunks) == 1
    assert chunks[0].values == (0.1, 0.2, 0.3)
    assert chunks[0].t == (1644227574.0, 1644227574.25, 1644227574.75)


def test_recording_round_trip_is_bit_exact(tmp_path: Path) -> None:
    original = list(simulate(SimulationScript(duration=120.0, episodes=()), seed=3))
    path = tmp_path / "session.jsonl.gz"
    writer = RecordingWriter(path, "clinic", "s1")
    for seq, chunk in enumerate(original):
        msg = chunk.to_message("clinic", "s1", seq, "run1")
        _topic, body = contract.encode(msg)
        assert writer.write(msg.stream, body)
    writer.close()
    replayed = list(read_recording(path))
    assert replayed == original
    assert list(open_source(path)) == original


def test_recording_rejects_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(
        '{"format": "rekindle-recording", "version": 1, "site": "c", "session": "s"}\n'
        '{"stream": "eda", "payload": {"v": 1}}\n'
    )
    with pytest.raises(SourceError, match=r"bad.jsonl:2: device"):
        list(read_recording(path))
    other = tmp_path / "other.jsonl"
    other.write_text("{}\n")
    with pytest.raises(SourceError, match="not a rekindle-recording"):
        list(read_recording(other))


def test_simulator_is_seeded_and_plausible() -> None:
    script = SimulationScript()
    a = simulate_arrays(script, seed=5)
    b = simulate_arrays(script, seed=5)
    c = simulate_arrays(script, seed=6)
    assert all(np.array_equal(a[k][1], b[k][1]) for k in a)
    assert not np.array_equal(a["eda"][1], c["eda"][1])
    hr_t, hr = a["hr"]
    calm = hr[(hr_t > 60) & (hr_t < 400)]
    aroused = hr[(hr_t > 560) & (hr_t < 640)]
    assert 55 < calm.mean() < 80
    assert aroused.mean() > calm.mean() + 20
    _, rr = a["rr"]
    assert rr.min() >= 300
    assert rr.max() <= 2000
    eda_t, eda = a["eda"]
    assert (
        eda[(eda_t > 560) & (eda_t < 640)].mean() > eda[(eda_t > 60) & (eda_t < 400)].mean() + 0.5
    )
    # every chunk is a valid wire message
    for seq, chunk in enumerate(simulate(script, seed=5)):
        topic, body = contract.encode(chunk.to_message("c", "s", seq, None))
        contract.decode(topic, body, now=2e9)


def test_chunk_message_round_trip() -> None:
    chunk = Chunk("marker", "nurse", ("dose given",), t=(1.7e9,))
    msg = chunk.to_message("c", "s", 0, None)
    assert isinstance(msg, contract.MarkerMessage)
    assert Chunk.from_message(msg) == chunk
