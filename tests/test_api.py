"""The researchers' API (``rekindle.read`` / ``analyze`` / ``write``): the same values as
``rekindle analyze`` to the last bit, DataFrames equal to files, and our errors for bad input."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import rekindle
from rekindle import contract
from rekindle.analysis.core.errors import ConfigError
from rekindle.api import FrameError
from rekindle.ingest.sources.recording import RecordingWriter
from rekindle.ingest.sources.simulator import SimulationScript, simulate
from tests.conftest import S02, fixture_path
from tests.test_formats import T0, write_documented_csv, write_emotibit_folder
from tests.xdf_writer import XdfStream, write_xdf

REPO = Path(__file__).resolve().parent.parent
PARAMS = {"enter_index": 45, "min_episode_s": "20"}


def _csv(frame: pd.DataFrame) -> bytes:
    """A DataFrame as ``rekindle analyze`` writes its CSVs (csv module: CRLF line ends)."""
    return frame.to_csv(index=False, lineterminator="\r\n").encode()


def _plain(frames: Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Fresh DataFrames with the same numbers and none of read()'s attrs (t0, fs, device)."""
    return {k: pd.DataFrame({c: f[c].to_numpy() for c in f.columns}) for k, f in frames.items()}


@pytest.fixture(scope="module")
def s02() -> rekindle.Recording:
    return rekindle.read(fixture_path(S02))


def test_read_analyze_equals_the_command_line_bit_for_bit(
    tmp_path: Path, s02: rekindle.Recording
) -> None:
    cli_out = tmp_path / "cli"
    params = [a for k, v in PARAMS.items() for a in ("--param", f"{k}={v}")]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "rekindle.cli",
            "analyze",
            str(fixture_path(S02)),
            "--out",
            str(cli_out),
            "--metrics",
            "--no-plots",
            *params,
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    features, episodes, info = rekindle.analyze(s02, params=PARAMS, metrics=True)
    cli = cli_out / "S02"
    assert len(episodes) >= 2  # (the comparison below compares real episodes)
    assert (episodes["kind"] == "release").any()
    assert _csv(features) == (cli / "features.csv").read_bytes()
    assert _csv(episodes) == (cli / "episodes.csv").read_bytes()
    assert info["segments"] is not None
    assert _csv(info["segments"]) == (cli / "segments.csv").read_bytes()
    assert info["params_changed"] == {"enter_index": 45.0, "min_episode_s": 20.0}
    assert info["version"] == rekindle.__version__
    assert info["format"] == "E4"
    assert set(info["quality"]) == {"eda", "hr", "rr", "acc", "rr_ppg"}  # (RR from S02's BVP)
    # write() writes what the command line writes, file for file
    api_dir = rekindle.write(info, tmp_path / "api", plots=False)
    written = sorted(p.name for p in api_dir.iterdir())
    assert written == sorted(p.name for p in cli.iterdir())
    for name in written:
        assert (api_dir / name).read_bytes() == (cli / name).read_bytes(), name


def test_read_gives_metadata_for_every_format(tmp_path: Path) -> None:
    """Name, format, devices, units and the rate of every regular stream, whatever the format
    (E4 states its rates; CSV, EmotiBit and XDF rates come from the sample times)."""
    xdf = write_xdf(
        tmp_path / "lab.xdf",
        [XdfStream("w", "EDA", "double64", [T0 + i / 4 for i in range(80)], [[0.3]] * 80, 4.0)],
    )
    cases = {
        write_documented_csv(tmp_path / "s.csv"): ("s", "CSV", {"eda": 4.0, "ppg": 4.0}),
        write_emotibit_folder(tmp_path / "emo", seconds=120): ("emo", "EmotiBit", {}),
        xdf: ("lab", "XDF", {"eda": 4.0}),
        fixture_path(S02): ("S02", "E4", {"eda": 4.0, "hr": 1.0, "ppg": 64.0}),
    }
    for path, (name, fmt, some_rates) in cases.items():
        rec = rekindle.read(path)
        meta = rec.metadata
        assert (meta["name"], meta["format"], meta["source"]) == (name, fmt, str(path))
        assert set(meta["devices"]) == set(meta["units"]) == set(rec.streams)
        assert some_rates.items() <= meta["rates"].items(), (fmt, meta["rates"])
        assert "rr" not in meta["rates"]
        assert list(rec.markers.columns) == ["time", "text", "device"]
    emo = rekindle.read(tmp_path / "emo").metadata["rates"]
    assert emo["eda"] > 0
    assert set(emo) >= {"eda", "temp", "acc"}


def test_a_rekindle_recording_equals_the_command_line(tmp_path: Path) -> None:
    """A Rekindle recording's Recording rebuilds its chunks per second (its own message
    boundaries are not kept): the analysis is still the command line's, bit for bit."""
    path = tmp_path / "sim2.jsonl"
    writer = RecordingWriter(path, "clinic", "s1")
    for seq, chunk in enumerate(simulate(SimulationScript(), seed=2, start_time=1.7e9)):
        _topic, body = contract.encode(chunk.to_message("clinic", "s1", seq, None))
        writer.write(chunk.stream, body)
    writer.close()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "rekindle.cli",
            "analyze",
            str(path),
            "--out",
            str(tmp_path),
            "--no-plots",
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    features, episodes, info = rekindle.analyze(rekindle.read(path))
    assert info["format"] == "rekindle"
    assert len(episodes) >= 2
    assert _csv(features) == (tmp_path / "sim2" / "features.csv").read_bytes()
    assert _csv(episodes) == (tmp_path / "sim2" / "episodes.csv").read_bytes()


def test_dtypes_follow_the_table_schema(s02: rekindle.Recording) -> None:
    features, episodes, info = rekindle.analyze({"eda": s02.streams["eda"]})
    assert features["time"].dtype == np.float64
    assert features["arousal_index"].dtype == np.float64
    assert features["quality_eda"].dtype == object
    assert episodes["kind"].dtype == object
    assert info["segments"] is None
    # a stream never given is an empty column of the same type, as is a table without rows
    assert features["quality_hr"].dtype == object
    assert features["quality_hr"].isna().all()
    short, none, _ = rekindle.analyze({"eda": s02.streams["eda"].iloc[:400]})
    assert none.empty
    assert list(none.columns) == list(episodes.columns)
    assert (none.dtypes == episodes.dtypes).all()
    assert (short.dtypes == features.dtypes).all()


def test_dataframes_equal_the_file_they_came_from(s02: rekindle.Recording) -> None:
    """Plain DataFrames (none of read()'s attrs) give the E4 folder's analysis exactly."""
    file_features, file_episodes, _ = rekindle.analyze(fixture_path(S02))
    assert len(file_episodes) >= 1
    frames = _plain(s02.streams)
    markers = s02.markers[["time", "text"]]
    features, episodes, info = rekindle.analyze(frames, markers=markers)
    pd.testing.assert_frame_equal(features, file_features, check_exact=True)
    pd.testing.assert_frame_equal(episodes, file_episodes, check_exact=True)
    assert info["markers"]["time"].tolist() == s02.markers["time"].tolist()


def _s02_csv(path: Path, rec: rekindle.Recording, seconds: float) -> dict[str, pd.DataFrame]:
    """The first ``seconds`` of S02's EDA, HR and RR as a generic CSV (docs/formats.md: one
    time column, a column per stream with its unit, empty cells) and as DataFrames."""
    start = float(rec.streams["eda"]["time"].iloc[0])
    frames = {
        k: f[f["time"] < start + seconds].reset_index(drop=True)
        for k, f in _plain(rec.streams).items()
        if k in {"eda", "hr", "rr"}
    }
    wide = pd.concat(
        [
            f.set_index("time")["value"].rename(f"{k}_{unit}")
            for (k, f), unit in zip(frames.items(), ("uS", "bpm", "ms"), strict=True)
        ],
        axis=1,
    ).sort_index()
    wide.index.name = "time"
    wide.to_csv(path, float_format=None)
    return frames


def test_dataframes_equal_a_generic_csv(tmp_path: Path, s02: rekindle.Recording) -> None:
    frames = _s02_csv(tmp_path / "s02.csv", s02, 900.0)
    assert list(frames) == ["eda", "hr", "rr"]
    from_file = rekindle.analyze(tmp_path / "s02.csv")
    from_frames = rekindle.analyze(frames)
    assert from_file[2]["format"] == "CSV"
    assert len(from_file[1]) >= 1
    pd.testing.assert_frame_equal(from_frames[0], from_file[0], check_exact=True)
    pd.testing.assert_frame_equal(from_frames[1], from_file[1], check_exact=True)
    # times as UTC date-times (and as a DatetimeIndex) give the same
    dated = {
        k: f.assign(time=pd.to_datetime(f["time"], unit="s", utc=True)) for k, f in frames.items()
    }
    dated["hr"] = dated["hr"].set_index("time")
    from_dates = rekindle.analyze(dated)
    pd.testing.assert_frame_equal(from_dates[0], from_file[0], check_exact=True)
    pd.testing.assert_frame_equal(from_dates[1], from_file[1], check_exact=True)


def test_units_markers_and_phases(s02: rekindle.Recording) -> None:
    eda = _plain({"eda": s02.streams["eda"]})["eda"]
    start = float(eda["time"].iloc[0])
    base, _, _ = rekindle.analyze({"eda": eda})
    nano = eda.assign(value=eda["value"] * 1000.0)
    features, _, info = rekindle.analyze({"eda": nano}, units={"eda": "nS"})
    np.testing.assert_allclose(
        features["eda_tonic"].to_numpy(), base["eda_tonic"].to_numpy(), rtol=1e-9
    )
    assert info["warnings"] == []
    marks = [(start + 300.0, "tears"), (start + 600.0, "music changed")]
    phases = pd.DataFrame({"label": ["talk"], "start": [start + 100.0], "end": [start + 400.0]})
    _, _, info = rekindle.analyze({"eda": eda}, markers=marks, phases=phases)
    assert info["markers"]["text"].tolist() == ["tears", "music changed"]
    segments = info["segments"]
    assert segments["kind"].tolist() == ["segment", "segment", "segment", "phase"]
    assert segments["label"].tolist() == ["start", "tears", "music changed", "talk"]
    assert segments.loc[3, "duration_s"] == 300.0
    assert segments.loc[3, "nk_SCR_Peaks_N"] >= 0


def test_warnings_say_what_was_not_analysed(s02: rekindle.Recording) -> None:
    temp = s02.streams["temp"]
    eda = s02.streams["eda"]
    short = {"eda": eda.iloc[:200], "temp": temp.iloc[:200]}
    _, _, info = rekindle.analyze(short)
    assert info["warnings"][0] == "not analysed: temp (the detectors use eda, hr, rr, acc, ppg)"
    assert any(w.startswith("no arousal index") for w in info["warnings"])
    wild = eda.iloc[:400].assign(value=np.r_[np.full(10, 500.0), eda["value"].iloc[10:400]])
    _, _, info = rekindle.analyze({"eda": wild})
    assert any(w.startswith("eda: 10 of 400 samples dropped") for w in info["warnings"])


def test_a_registered_detector_reaches_the_dataframe_and_takes_its_params(
    s02: rekindle.Recording,
) -> None:
    """tests/extra_detector.py (docs/extending.md): its fields are columns of ``features``, its
    section's parameters go by ``section.name`` as with ``--param``, and temp is analysed."""
    from rekindle.analysis.core.extensions import register, unregister  # noqa: PLC0415

    module = importlib.import_module("tests.extra_detector")
    register(module.SPEC)
    try:
        stretch = {k: s02.streams[k].iloc[: 4 * 600] for k in ("eda", "temp")}
        features, _, info = rekindle.analyze(stretch, params={"skin_temp.window_s": 5})
        with pytest.raises(ConfigError, match=r"skin_temp: refused by the detector: window_s must"):
            rekindle.analyze(stretch, params={"skin_temp.window_s": -1})
    finally:
        unregister(module.SPEC.name)
        sys.modules.pop("tests.extra_detector", None)
    at = list(features.columns).index("arousal_index")
    assert list(features.columns[at + 1 : at + 3]) == ["skin_temp_c", "hr_above"]
    temp = stretch["temp"]
    t = float(features["time"].iloc[100])
    inside = temp[(temp["time"] >= t - 5) & (temp["time"] < t)]["value"]
    assert features["skin_temp_c"].iloc[100] == pytest.approx(inside.mean(), rel=1e-12)
    assert info["params_changed"] == {"skin_temp.window_s": 5.0}
    assert not any(w.startswith("not analysed") for w in info["warnings"])


BAD_FRAMES: list[tuple[Any, str]] = [
    ({"gsr": pd.DataFrame({"time": [0.0], "value": [1.0]})}, r"'gsr': not a stream; .*eda \[uS\]"),
    ({"eda": pd.DataFrame({"t": [0.0], "value": [1.0]})}, r"'eda': missing column 'time'.*found t"),
    ({"acc": pd.DataFrame({"time": [0.0], "x": [0.0]})}, r"missing column 'y', 'z'"),
    ({"eda": [1.0, 2.0]}, r"'eda': must be a pandas DataFrame, not list"),
    ({"eda": pd.DataFrame({"time": [0.0, 1.0], "value": ["0.4", "high"]})}, r"'value'.*'high'"),
    ({"eda": pd.DataFrame({"time": ["a", "b"], "value": [1.0, 2.0]})}, r"'time'.*unix seconds"),
    ({"eda": pd.DataFrame({"time": [2.0, 1.0], "value": [1.0, 1.0]})}, r"must increase; row 1"),
    ({"eda": pd.DataFrame({"time": [0.0, np.nan], "value": [1.0, 1.0]})}, r"missing or infinite"),
    ({}, r"no streams given"),
    (42, r"expected a Recording, a path or a mapping"),
]


@pytest.mark.parametrize(("data", "match"), BAD_FRAMES)
def test_bad_frames_are_our_errors(data: Any, match: str) -> None:
    with pytest.raises(FrameError, match=match) as caught:
        rekindle.analyze(data)
    assert isinstance(caught.value, rekindle.RekindleError)


def test_bad_units_markers_phases_params_and_paths(tmp_path: Path) -> None:
    eda = pd.DataFrame({"time": 1.7e9 + np.arange(400) / 4.0, "value": np.full(400, 0.5)})
    with pytest.raises(FrameError, match=r"unit 'mV' is not one of us, µs"):
        rekindle.analyze({"eda": eda}, units={"eda": "mV"})
    with pytest.raises(FrameError, match=r"markers: missing column 'text'"):
        rekindle.analyze({"eda": eda}, markers=pd.DataFrame({"time": [1.7e9]}))
    with pytest.raises(FrameError, match=r"markers\[0\]: must be a \(time, text\) pair"):
        rekindle.analyze({"eda": eda}, markers=[1.7e9])  # type: ignore[list-item]
    with pytest.raises(FrameError, match=r"phase 'x': ends \(1.0\) before it starts \(2.0\)"):
        rekindle.analyze({"eda": eda}, phases=[("x", 2.0, 1.0)])
    with pytest.raises(ConfigError, match=r"enter_indx: no such .*did you mean 'enter_index'"):
        rekindle.analyze({"eda": eda}, params={"enter_indx": 40})
    with pytest.raises(ConfigError, match=r"enter_index: must be a number, got 'high'"):
        rekindle.analyze({"eda": eda}, params={"enter_index": "high"})
    with pytest.raises(rekindle.RekindleError, match=r"not a supported recording"):
        rekindle.analyze(tmp_path)
    with pytest.raises(FrameError, match=r"write\(\) takes the info dict"):
        rekindle.write({}, tmp_path)


def test_import_rekindle_stays_light() -> None:
    """``import rekindle`` loads neither pandas nor the analysis until the API is used."""
    code = (
        "import sys, rekindle\n"
        "heavy = [m for m in ('pandas', 'numpy', 'rekindle.api') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert callable(rekindle.analyze) and 'pandas' in sys.modules\n"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
