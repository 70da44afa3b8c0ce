"""Every format besides E4 (tests/test_e4_formats.py): generic CSV, EmotiBit parsed CSVs, XDF,
format detection and the error for what no format takes; on real files (the EmotiBit fixture)
and files written here in each format's documented layout."""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from rekindle.cli import main
from rekindle.ingest.errors import SourceError
from rekindle.ingest.sources.base import Chunk, ReadOptions, open_source
from rekindle.ingest.sources.formats import FORMATS, detect
from tests.conftest import fixture_path
from tests.xdf_writer import XdfStream, write_xdf

EMOTIBIT = "emotibit_hr_vs_ecg"
T0 = 1_700_000_000.0


def by_stream(chunks: list[Chunk]) -> dict[str, tuple[list[float], list[object]]]:
    """Every stream's sample times and values, in order (times from t0/fs or t)."""
    out: dict[str, tuple[list[float], list[object]]] = defaultdict(lambda: ([], []))
    for c in chunks:
        times = (
            list(c.t) if c.t is not None else [c.t0 + i / c.fs for i in range(len(c.values))]  # type: ignore[operator]
        )
        out[c.stream][0].extend(times)
        out[c.stream][1].extend(c.values)
    return dict(out)


# --- generic CSV --------------------------------------------------------------------------


def write_documented_csv(path: Path) -> Path:
    """The layout of services/ingest/sources/csvfile.py: 4-Hz rows, HR every second, RR at
    beats, ACC in m/s^2, EDA in nS, a marker."""
    lines = ["time,eda_nS,hr_bpm,rr_ms,ppg,temp [degC],acc_x (m/s^2),acc_y_m/s2,acc_z_g,Event"]
    for i in range(40):
        t = T0 + i / 4
        hr = "70" if i % 4 == 0 else ""
        rr = "850" if i % 3 == 1 else ""
        marker = "dose given" if i == 10 else ""
        lines.append(f"{t!r},{400 + i},{hr},{rr},{500 + i * 0.5},33.5,0.0,9.80665,1.0,{marker}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_documented_layout(tmp_path: Path) -> None:
    path = write_documented_csv(tmp_path / "session.csv")
    assert detect(path).name == "CSV"
    chunks = list(open_source(path))
    assert [c.start for c in chunks] == sorted(c.start for c in chunks)
    eda = [c for c in chunks if c.stream == "eda"]
    assert {c.fs for c in eda} == {4.0}  # regular times give the regular form
    assert eda[0].t0 == T0
    s = by_stream(chunks)
    assert s["eda"][1] == [(400 + i) * 1e-3 for i in range(40)]  # nS -> uS
    assert s["hr"][0] == [T0 + i for i in range(10)]
    assert s["hr"][1] == [70.0] * 10
    assert s["rr"][0] == [T0 + i / 4 for i in range(40) if i % 3 == 1]
    assert all(c.t is not None for c in chunks if c.stream == "rr")  # RR stays irregular
    assert s["ppg"][1] == [500 + i * 0.5 for i in range(40)]
    assert s["temp"][1] == [33.5] * 40
    assert s["acc"][1][0] == (0.0, 1.0, 1.0)  # m/s^2 -> g
    assert s["marker"] == ([T0 + 2.5], ["dose given"])


def test_csv_time_forms(tmp_path: Path) -> None:
    ms = tmp_path / "ms.csv"
    ms.write_text("timestamp_ms,eda_uS\n1700000000000,0.5\n1700000000250,0.6\n1700000000500,0.7\n")
    assert by_stream(list(open_source(ms)))["eda"] == ([T0, T0 + 0.25, T0 + 0.5], [0.5, 0.6, 0.7])
    iso = tmp_path / "iso.csv"
    iso.write_text(
        "datetime,hr [bpm]\n2023-11-14T22:13:20Z,60\n2023-11-14T22:13:21Z,61\n"
        "2023-11-14T23:13:22+01:00,62\n"
    )
    assert by_stream(list(open_source(iso)))["hr"][0] == [T0, T0 + 1, T0 + 2]
    rel = tmp_path / "relative.csv"
    rel.write_text("t,eda_uS\n0,0.5\n0.5,0.6\n1.0,0.7\n")
    with pytest.raises(SourceError, match=r"not a unix time.*--start"):
        list(open_source(rel))
    chunks = list(open_source(rel, ReadOptions(start=T0)))
    assert by_stream(chunks)["eda"][0] == [T0, T0 + 0.5, T0 + 1.0]


def test_csv_columns_mapped_by_flags_on_a_real_file() -> None:
    """EmotiBit's ECG-derived HR file (``,Timestamp,HR``): the index column and HR's unit come
    from --column; without them the error names the column."""
    path = fixture_path(EMOTIBIT) / "ecgHR6.csv"
    with pytest.raises(SourceError, match=r"column 'Unnamed: 0' is not a stream.*--column"):
        list(open_source(path))
    with pytest.raises(SourceError, match=r"column 'HR': no unit.*hr_UNIT.*bpm"):
        list(open_source(path, ReadOptions({"Unnamed: 0": "ignore"})))
    options = ReadOptions({"Unnamed: 0": "ignore", "HR": "hr:bpm"})
    hr = by_stream(list(open_source(path, options)))["hr"]
    rows = [ln.split(",") for ln in path.read_text().splitlines()[1:]]
    expected = [(float(r[1]), float(r[2])) for r in rows if 20 <= float(r[2]) <= 300]
    assert list(zip(*hr, strict=True)) == expected
    assert len(expected) == len(rows)  # every row is in the contract's range


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("time,eda_uS,mood\n1700000000,0.1,ok\n", r"column 'mood' is not a stream"),
        ("time,eda\n1700000000,0.1\n", r"column 'eda': no unit.*eda_UNIT.*us"),
        ("time,eda_furlongs\n1700000000,0.1\n", r"unit 'furlongs' is not one of us"),
        ("eda_uS,hr_bpm\n0.1,60\n", r"needs exactly one time column.*found none"),
        ("time,eda_uS\n1700000000,0.1\n1700000001,abc\n", r"csv:3: column 'eda_uS': not a num"),
        ("time,eda_uS\n1700000001,0.1\n1700000000,0.2\n", r"csv:3: time column 'time' does not"),
        ("time,acc_x_g,acc_y_g\n1700000000,0.1,0.2\n", r"missing \['acc_z'\]"),
        ("time,marker\n1700000000,x\n", r"no stream columns"),
    ],
)
def test_csv_errors_name_the_column(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(SourceError, match=error):
        list(open_source(path))


# --- EmotiBit -----------------------------------------------------------------------------


def test_emotibit_real_hr_file() -> None:
    path = fixture_path(EMOTIBIT) / "ebhr6_HR_trim.csv"
    assert detect(path).name == "EmotiBit"
    chunks = list(open_source(path))
    assert {c.device for c in chunks} == {"emotibit"}
    hr = by_stream(chunks)["hr"]
    rows = [ln.split(",") for ln in path.read_text().splitlines()[1:]]
    assert hr == ([float(r[0]) for r in rows], [float(r[7]) for r in rows])


EMOTIBIT_HEADER = (
    "LocalTimestamp,EmotiBitTimestamp,PacketNumber,DataLength,TypeTag,ProtocolVersion,"
    "DataReliability"
)


def write_emotibit_folder(folder: Path, seconds: int = 900) -> Path:
    """EmotiBit DataParser output for a session: one file per type tag (documented layout)."""
    folder.mkdir()
    base = "2023-11-14_22-13-20-000000"
    rng = np.random.default_rng(4)

    def write(tag: str, fs: float, values: list[str]) -> None:
        rows = [EMOTIBIT_HEADER + f",{tag}"]
        for i, v in enumerate(values):
            t = T0 + i / fs
            rows.append(f"{t!r},{int(i * 1000 / fs)},{i // 4},1,{tag},1,100,{v}")
        (folder / f"{base}_{tag}.csv").write_text("\n".join(rows) + "\n")

    n_eda = seconds * 15
    eda = 0.3 + 0.01 * np.sin(np.arange(n_eda) / 50) + rng.normal(0, 0.001, n_eda)
    write("EA", 15.0, [f"{v:.6f}" for v in eda])
    write("HR", 1.0, [str(70 + (i % 5)) for i in range(seconds)])
    write("BI", 1.0, [str(850 + (i % 7) * 5) for i in range(seconds)])
    write("PG", 25.0, [str(1000 + (i % 25)) for i in range(seconds * 25)])
    write("T1", 7.5, ["33.2"] * int(seconds * 7.5))
    for axis, v in (("AX", "0.01"), ("AY", "-0.02"), ("AZ", "0.99")):
        write(axis, 25.0, [v] * (seconds * 25))
    write("EL", 15.0, ["1"] * 30)  # a tag Rekindle does not use: skipped
    rows = [EMOTIBIT_HEADER + ",UN", f"{T0 + 300.0!r},300000,1,1,UN,1,100,dose given"]
    (folder / f"{base}_UN.csv").write_text("\n".join(rows) + "\n")
    (folder / f"{base}_info.json").write_text("{}")
    return folder


def test_emotibit_folder_documented_layout(tmp_path: Path) -> None:
    folder = write_emotibit_folder(tmp_path / "emotibit", seconds=60)
    assert detect(folder).name == "EmotiBit"
    chunks = list(open_source(folder))
    s = by_stream(chunks)
    assert sorted(s) == ["acc", "eda", "hr", "marker", "ppg", "rr", "temp"]
    assert len(s["eda"][1]) == 60 * 15
    eda = next(c for c in chunks if c.stream == "eda")
    assert eda.fs == 15.0
    assert eda.t0 == T0
    assert s["rr"][1][:2] == [850.0, 855.0]
    assert s["acc"][1][0] == (0.01, -0.02, 0.99)
    assert len(s["acc"][1]) == 60 * 25
    assert s["marker"] == ([T0 + 300.0], ["dose given"])


def test_emotibit_folder_through_analyze(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_emotibit_folder(tmp_path / "emotibit")
    assert main(["analyze", str(folder), "--out", str(tmp_path / "out"), "--no-plots"]) == 0
    summary = json.loads((tmp_path / "out" / "emotibit" / "summary.json").read_text())
    assert summary["duration_s"] == pytest.approx(900, abs=1)
    assert summary["markers"] == [{"time": T0 + 300.0, "text": "dose given"}]
    assert "emotibit" in capsys.readouterr().out


def test_emotibit_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "x_EA.csv"
    path.write_text(EMOTIBIT_HEADER + ",EA\n1700000000.0,1,1,1,EA,1,100,abc\n")
    with pytest.raises(SourceError, match=r"x_EA.csv:2: EA: not a number: 'abc'"):
        list(open_source(path))


# --- XDF ------------------------------------------------------------------------------------


def test_xdf_written_here(tmp_path: Path) -> None:
    lsl0 = 5000.0  # LSL clock: seconds since some boot, not unix time
    eda_t = [lsl0 + i / 4 for i in range(400)]
    streams = [
        XdfStream(
            "wrist", "EDA", "double64", eda_t, [[400.0 + i] for i in range(400)], 4.0, ["nS"]
        ),
        XdfStream("strap", "HR", "float32", [lsl0 + i for i in range(100)], [[60.0]] * 100),
        XdfStream("eeg", "EEG", "float32", eda_t, [[1.0, 2.0]] * 400, 4.0),
        XdfStream("notes", "Markers", "string", [lsl0 + 10.0], [["dose given"]]),
    ]
    path = write_xdf(tmp_path / "session.xdf", streams, datetime="2023-11-14T22:13:20+00:00")
    assert detect(path).name == "XDF"
    s = by_stream(list(open_source(path)))
    assert sorted(s) == ["eda", "hr", "marker"]  # the EEG stream is skipped
    assert s["eda"][0] == pytest.approx([T0 + i / 4 for i in range(400)], abs=1e-6)
    assert s["eda"][1] == pytest.approx([(400.0 + i) * 1e-3 for i in range(400)])  # nS -> uS
    assert s["hr"][1] == [60.0] * 100
    assert s["marker"][1] == ["dose given"]
    assert s["marker"][0][0] == pytest.approx(T0 + 10.0, abs=1e-6)
    later = by_stream(list(open_source(path, ReadOptions(start=T0 + 3600))))
    assert later["hr"][0][0] == pytest.approx(T0 + 3600, abs=1e-6)
    no_date = write_xdf(tmp_path / "nodate.xdf", streams[1:2])
    with pytest.raises(SourceError, match=r"no datetime; give .* --start"):
        list(open_source(no_date))
    broken = tmp_path / "broken.xdf"
    broken.write_bytes(b"XDF:" + gzip.compress(b"junk"))
    with pytest.raises(SourceError, match=r"broken\.xdf"):
        list(open_source(broken))


# --- detection and the error for everything else ------------------------------------------


def test_unsupported_file_lists_every_format_and_its_need(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "notes.bin"
    path.write_bytes(b"\x00\x01 hello")
    with pytest.raises(SourceError) as info:
        detect(path)
    text = str(info.value)
    assert "not a supported recording: tried E4, zip, CSV, EmotiBit, XDF, rekindle" in text
    for fmt in FORMATS:
        assert f"\n  {fmt.name}: " in text
        assert fmt.needs in text
    assert main(["analyze", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "not a supported recording: tried E4, zip, CSV, EmotiBit, XDF, rekindle" in err
    assert "Traceback" not in err


def test_read_lists_formats_and_describes_a_recording(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["read", "--list-formats"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in listed] == ["E4", "zip", "CSV", "EmotiBit", "XDF", "rekindle"]
    path = write_documented_csv(tmp_path / "session.csv")
    assert main(["read", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: CSV\n")
    assert "eda     csv               40 samples" in out
    assert main(["read", str(tmp_path / "nothing")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_analyze_csv_with_column_flags_and_clear_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "lab.csv"
    rows = ["Zeit,EDA,mood"] + [f"{i / 4},{0.3 + 0.001 * i},calm" for i in range(4 * 600)]
    path.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    assert main(["analyze", str(path), "--out", str(out), "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert "column 'Zeit' is not a stream" in err
    assert "Traceback" not in err
    flags = ["--column", "Zeit=time", "--column", "EDA=eda:uS", "--column", "mood=ignore"]
    assert main(["analyze", str(path), "--out", str(out), "--no-plots", *flags]) == 2
    assert "--start" in capsys.readouterr().err  # relative times need the start
    argv = ["analyze", str(path), "--out", str(out), "--no-plots", *flags, "--start", str(T0)]
    assert main(argv) == 0
    summary = json.loads((out / "lab" / "summary.json").read_text())
    assert summary["start"] == T0
    assert summary["samples"] == 4 * 600
    assert main(["read", str(path), *flags, "--start", str(T0)]) == 0
    assert "eda     csv             2400 samples" in capsys.readouterr().out
