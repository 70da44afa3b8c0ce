"""Offline, the beats derived from PPG in a second process (rekindle.analysis.parallel_beats):
the pipeline gets them at the points where it would have derived them itself, so everything it
produces is the same to the last bit; a child that dies is our error, not a hang."""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from rekindle import contract
from rekindle.analysis.batch import analyze_file
from rekindle.analysis.core import AnalysisConfig, Event
from rekindle.analysis.parallel_beats import (
    BeatsProcess,
    BeatsProcessError,
    available,
    in_time_order,
    ppg_inputs,
    ppg_messages,
    start_before_reading,
)
from rekindle.analysis.pipeline import SessionPipeline
from rekindle.ingest.coalesce import coalesce
from rekindle.ingest.sources.e4 import read_e4_folder, read_e4_stream, read_e4_zip
from tests.conftest import S02, fixture_path

pytestmark = pytest.mark.skipif(not available(), reason="needs fork and two CPUs")

CFG = AnalysisConfig()


def s02_messages(span_s: float) -> list[contract.Message]:
    chunks = coalesce(read_e4_folder(fixture_path(S02)), span_s)
    return [c.to_message("s", "p", seq, None) for seq, c in enumerate(chunks)]


def analyse(messages: list[contract.Message], beats: BeatsProcess | None) -> list[Event]:
    pipeline = SessionPipeline("s", "p", CFG, store_lines=False, beats=beats)
    events: list[Event] = []
    for msg in messages:
        events.extend(pipeline.handle(msg).events)
    events.extend(pipeline.finish().events)
    return events


@pytest.mark.parametrize("span_s", [1.0, 30.0])
def test_the_pipeline_gets_the_same_beats_at_the_same_points(span_s: float) -> None:
    messages = s02_messages(span_s)
    with BeatsProcess(CFG, ppg_inputs(messages)) as beats:
        parallel = analyse(messages, beats)
    alone = analyse(messages, None)
    assert len(alone) > 3000
    # (pickled: every event, its arrays included, to the last bit)
    assert [pickle.dumps(e) for e in parallel] == [pickle.dumps(e) for e in alone]


@pytest.mark.parametrize("span_s", [1.0, 10.0, 30.0, 60.0])
def test_the_ppg_messages_made_from_the_ppg_alone_are_the_pipelines(span_s: float) -> None:
    """What the child makes of the PPG chunks alone equals the PPG messages that coalescing
    every stream gives the pipeline (the same samples at the same times, message for message)."""
    chunks = list(read_e4_folder(fixture_path(S02)))
    assert in_time_order(chunks)
    assert not in_time_order([chunks[-1], chunks[0]])

    def key(m: contract.SampleMessage) -> tuple[object, ...]:
        return (m.stream, m.device, m.values, m.t0, m.fs, m.t)

    expected = [key(m) for m in ppg_inputs(s02_messages(span_s))]
    assert len(expected) > 2962 / max(span_s, 1.0) / 2
    assert [key(m) for m in ppg_messages(chunks, span_s)] == expected


def test_rekindle_analyze_writes_the_same_files(tmp_path: Path) -> None:
    written = {}
    for parallel in (False, True):
        result = analyze_file(
            str(fixture_path(S02)),
            tmp_path / str(parallel),
            None,
            plots=False,
            metrics=True,
            parallel_beats=parallel,
        )
        assert result.target is not None, result.error
        written[parallel] = {p.name: p.read_bytes() for p in sorted(result.target.iterdir())}
    assert "segments.csv" in written[True]
    assert written[True] == written[False]


def test_a_child_that_fails_is_an_analysis_error() -> None:
    bad = contract.SampleMessage("s", "p", "ppg", "d", 0, ("x",), t0=1.7e9, fs=64.0)  # type: ignore[arg-type]
    with BeatsProcess(CFG, [bad]) as beats, pytest.raises(BeatsProcessError, match="exit code 1"):
        beats.finish()


def test_a_pipeline_that_stops_early_stops_the_child() -> None:
    messages = ppg_inputs(s02_messages(30.0))
    with BeatsProcess(CFG, messages) as beats:
        beats.inputs(None)  # type: ignore[arg-type]
    assert not beats.running


@pytest.mark.parametrize("span_s", [1.0, 30.0])
def test_the_ppg_read_alone_is_the_ppg_of_the_whole_read(tmp_path: Path, span_s: float) -> None:
    """What the child reads before the parent reads anything (BVP.csv alone) is, chunk for
    chunk, the PPG of the whole export, from a folder and from a zip of it."""
    folder = fixture_path(S02)
    whole = [c for c in read_e4_folder(folder, span_s) if c.stream == "ppg"]
    assert len(whole) > 2962 / span_s / 2
    assert list(read_e4_stream(folder, "ppg", span_s)) == whole
    archive = tmp_path / "S02.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, f.name)
    assert [c for c in read_e4_zip(archive, span_s) if c.stream == "ppg"] == whole
    assert list(read_e4_stream(archive, "ppg", span_s)) == whole
    (tmp_path / "noppg").mkdir()
    shutil.copy(folder / "EDA.csv", tmp_path / "noppg" / "EDA.csv")
    assert list(read_e4_stream(tmp_path / "noppg", "ppg", span_s)) == []


def test_only_an_e4_export_starts_its_child_before_reading(tmp_path: Path) -> None:
    beats = start_before_reading(str(fixture_path(S02)), None, 30.0)
    assert beats is not None
    messages = s02_messages(30.0)
    with beats:
        early = analyse(messages, beats)
    assert [pickle.dumps(e) for e in early] == [pickle.dumps(e) for e in analyse(messages, None)]
    assert start_before_reading(str(fixture_path(S02)), AnalysisConfig(ppg_beats=0), 30.0) is None
    other = tmp_path / "session.csv"
    other.write_text("time,eda_uS\n1700000000,1.0\n1700000001,1.1\n")
    assert start_before_reading(str(other), None, 30.0) is None
    assert start_before_reading(str(tmp_path / "missing"), None, 30.0) is None


def test_a_ppg_file_that_does_not_parse_is_the_readers_error(tmp_path: Path) -> None:
    """The child reads BVP.csv too, but only the parent's reader reports it: one clear error
    naming the file and line, no traceback from the child."""
    folder = tmp_path / "S02"
    shutil.copytree(fixture_path(S02), folder)
    lines = (folder / "BVP.csv").read_text().splitlines()
    lines[1000] = "oops"
    (folder / "BVP.csv").write_text("\n".join(lines) + "\n")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "rekindle.cli",
            "analyze",
            str(folder),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode != 0
    assert "BVP.csv:1001: not a number" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
