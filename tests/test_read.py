"""``read(path) -> Recording``: DataFrames per stream, markers and metadata for every format,
and ``Recording.chunks()`` equal to what ``rekindle analyze`` reads from the same file."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from rekindle import contract
from rekindle.ingest.sources.base import ReadOptions, open_source
from rekindle.ingest.sources.read import read
from rekindle.ingest.sources.recording import RecordingWriter
from rekindle.ingest.sources.simulator import SimulationScript, simulate
from tests.conftest import S02, fixture_path
from tests.test_formats import (
    T0,
    by_stream,
    write_documented_csv,
    write_emotibit_folder,
)
from tests.xdf_writer import XdfStream, write_xdf


def test_e4_frames_hold_every_sample_and_round_trip() -> None:
    folder = fixture_path(S02)
    rec = read(folder)
    assert rec.metadata["format"] == "E4"
    assert rec.metadata["rates"] == {"eda": 4.0, "hr": 1.0, "ppg": 64.0, "temp": 4.0, "acc": 32.0}
    assert rec.metadata["units"]["eda"] == "uS"
    lines = (folder / "EDA.csv").read_text().splitlines()
    eda = rec.streams["eda"]
    assert eda["value"].tolist() == [float(x) for x in lines[2:] if x.strip()]
    assert eda["time"].iloc[0] == float(lines[0])
    assert eda["time"].iloc[4] == float(lines[0]) + 1.0
    acc = rec.streams["acc"]
    assert list(acc.columns) == ["time", "x", "y", "z"]
    assert (acc.iloc[0]["x"], acc.iloc[0]["y"], acc.iloc[0]["z"]) == (2 / 64, 10 / 64, 63 / 64)
    assert rec.markers["text"].tolist() == ["e4_tag"] * len(
        (folder / "tags_S02.csv").read_text().split()
    )
    assert list(rec.chunks()) == list(open_source(folder))


def test_zip_round_trip(tmp_path: Path) -> None:
    src = fixture_path("empatica_e4_flirt_sample")
    archive = tmp_path / "flirt.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in src.iterdir():
            zf.write(p, p.name)
    rec = read(archive)
    assert rec.metadata["format"] == "zip"
    assert list(rec.chunks()) == list(open_source(archive))


def test_csv_emotibit_xdf_round_trip(tmp_path: Path) -> None:
    csv = write_documented_csv(tmp_path / "s.csv")
    emotibit = write_emotibit_folder(tmp_path / "emotibit", seconds=120)
    xdf = write_xdf(
        tmp_path / "s.xdf",
        [
            XdfStream("w", "EDA", "double64", [T0 + i / 4 for i in range(80)], [[0.3]] * 80, 4.0),
            XdfStream("m", "Markers", "string", [T0 + 3.0], [["tears"]]),
        ],
    )
    for path, fmt in ((csv, "CSV"), (emotibit, "EmotiBit"), (xdf, "XDF")):
        rec = read(path)
        assert rec.metadata["format"] == fmt
        expected = list(open_source(path))
        assert list(rec.chunks()) == expected, fmt
        samples = by_stream(expected)
        for stream, frame in rec.streams.items():
            # the file's own times; regular streams are sent as t0 + i/fs (within 1 us here)
            assert frame["time"].tolist() == pytest.approx(samples[stream][0], abs=1e-6, rel=0)
    emo = read(emotibit)
    assert sorted(emo.streams) == ["acc", "eda", "hr", "ppg", "rr", "temp"]
    assert emo.markers.to_dict("records") == [
        {"time": T0 + 300.0, "text": "dose given", "device": "emotibit"}
    ]
    assert read(csv).streams["eda"]["value"].iloc[0] == pytest.approx(0.4)


def test_options_reach_the_reader(tmp_path: Path) -> None:
    rel = tmp_path / "relative.csv"
    rel.write_text("t,EDA\n0,0.5\n0.5,0.6\n1.0,0.7\n")
    rec = read(rel, ReadOptions({"EDA": "eda:uS"}, start=T0))
    assert rec.streams["eda"]["time"].tolist() == [T0, T0 + 0.5, T0 + 1.0]


def test_rekindle_recording_frames(tmp_path: Path) -> None:
    chunks = list(simulate(SimulationScript(duration=120.0, episodes=()), seed=3))
    path = tmp_path / "s.jsonl"
    writer = RecordingWriter(path, "clinic", "s1")
    for seq, chunk in enumerate(chunks):
        _topic, body = contract.encode(chunk.to_message("clinic", "s1", seq, None))
        writer.write(chunk.stream, body)
    writer.close()
    rec = read(path)
    assert rec.metadata["format"] == "rekindle"
    samples = by_stream(chunks)
    for stream, frame in rec.streams.items():
        assert np.array_equal(frame["time"].to_numpy(), np.asarray(samples[stream][0]))
        assert frame["value"].tolist() == samples[stream][1]
    rechunked = by_stream(list(rec.chunks()))
    assert {k: v[1] for k, v in rechunked.items()} == {k: v[1] for k, v in samples.items()}
