"""E4 exports in every shape labs have them: plain folder, ``.csv.gz`` files (as in the
Stress-Predict development set), E4 Connect zip; values exact against a per-row parse."""

from __future__ import annotations

import gzip
import itertools
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from rekindle.cli import main
from rekindle.ingest.errors import SourceError
from rekindle.ingest.sources.base import open_source, regular_chunks
from rekindle.ingest.sources.e4 import load_e4, read_e4_folder, read_e4_zip
from tests.conftest import S02, fixture_path


def gz_copy(src: Path, dst: Path) -> Path:
    """Every CSV of ``src`` gzip-compressed (``info.txt`` kept plain), like the dev set."""
    dst.mkdir()
    for path in src.iterdir():
        if path.suffix == ".csv":
            (dst / (path.name + ".gz")).write_bytes(gzip.compress(path.read_bytes()))
        else:
            shutil.copy(path, dst / path.name)
    return dst


def zip_copy(src: Path, dst: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(src.iterdir()):
            archive.write(path, prefix + path.name)
    return dst


def test_gzipped_export_gives_the_same_chunks_as_the_plain_one(tmp_path: Path) -> None:
    plain = fixture_path(S02)
    packed = gz_copy(plain, tmp_path / "S02")
    assert not list(packed.glob("*.csv"))
    assert (packed / "tags_S02.csv.gz").is_file()
    chunks = list(read_e4_folder(packed))
    assert chunks == list(read_e4_folder(plain))
    tags = (plain / "tags_S02.csv").read_text().split()
    assert sum(1 for c in chunks if c.stream == "marker") == len(tags) > 0  # gzipped tags read


def test_values_equal_a_per_row_parse_of_the_files() -> None:
    folder = fixture_path(S02)
    export = load_e4(folder)
    by_stream = {s.stream: s for s in export.regular}
    for stem, stream, scale in (("EDA", "eda", 1.0), ("BVP", "ppg", 1.0), ("ACC", "acc", 64.0)):
        lines = (folder / f"{stem}.csv").read_text().splitlines()
        rows = [[float(x) for x in ln.split(",")] for ln in lines[2:] if ln.strip()]
        series = by_stream[stream]  # type: ignore[index]
        assert series.t0 == float(lines[0].split(",")[0])
        assert series.fs == float(lines[1].split(",")[0])
        expected = np.array(rows)[:, 0] if stream != "acc" else np.array(rows) / scale
        assert np.array_equal(series.values, expected)
    ibi = (folder / "IBI.csv").read_text().splitlines()
    t0 = float(ibi[0].split(",")[0])
    offsets = [float(ln.split(",")[0]) for ln in ibi[1:]]
    intervals = [float(ln.split(",")[1]) * 1000.0 for ln in ibi[1:]]
    assert export.beat_times.tolist() == [t0 + o for o in offsets]
    assert export.rr_ms.tolist() == intervals


def _in_body(text: str, edit: Callable[[str], str]) -> str:
    """``edit`` applied to the rows after a signal file's two header rows."""
    first, second, body = text.split("\n", 2)
    return f"{first}\n{second}\n{edit(body)}"


@pytest.mark.parametrize(
    ("name", "edit"),
    [
        ("crlf", lambda text: text.replace("\n", "\r\n")),
        ("blank rows", lambda text: _in_body(text, lambda body: body.replace("\n", "\n\n", 40))),
        (
            "whitespace-only row",
            lambda text: _in_body(text, lambda body: body.replace("\n", "\n   \n", 5)),
        ),
        ("cr only", lambda text: text.replace("\n", "\r")),
        ("headers only", lambda text: "\n".join(text.splitlines()[:2]) + "\n"),
    ],
)
def test_line_endings_and_blank_rows_read_as_the_row_parse(
    tmp_path: Path, name: str, edit: object
) -> None:
    """The whole-text parse of a signal file (its fast path) and the line-by-line one (its
    fallback for rows it cannot take) give the values a per-row parse gives."""
    assert callable(edit)
    folder = tmp_path / name.replace(" ", "-")
    folder.mkdir()
    text = edit((fixture_path(S02) / "EDA.csv").read_text())
    (folder / "EDA.csv").write_text(text, newline="")
    lines = text.splitlines()
    rows = [float(ln.split(",")[0]) for ln in lines[2:] if ln.strip()]
    (series,) = load_e4(folder).regular
    assert series.t0 == float(lines[0].split(",")[0])
    assert series.fs == float(lines[1].split(",")[0])
    assert series.values.tolist() == rows
    if name == "headers only":
        assert rows == []


def test_chunks_keep_the_contract_rules_of_the_row_reader() -> None:
    """Out-of-range samples leave an irregular chunk; in-range seconds stay regular."""
    values = [0.1, 0.2, -5.0, 0.3, 0.4, 0.5, 0.6, 0.7, float("nan"), float("nan")]
    chunks = list(regular_chunks("eda", "d", 100.0, 4.0, np.array(values)))
    assert [c.t0 for c in chunks] == [None, 101.0]
    assert chunks[0].values == (0.1, 0.2, 0.3)
    assert chunks[0].t == (100.0, 100.25, 100.75)
    assert chunks[1].values == (0.4, 0.5, 0.6, 0.7)
    assert len(chunks) == 2  # the all-NaN last second is dropped
    acc = np.array([[0.0, 0.1, 1.0], [0.0, 99.0, 1.0], [0.1, 0.1, 0.9]])
    (only,) = regular_chunks("acc", "d", 5.0, 4.0, acc)
    assert only.values == ((0.0, 0.1, 1.0), (0.1, 0.1, 0.9))
    assert only.t == (5.0, 5.5)


@pytest.mark.parametrize("prefix", ["", "1644227574_A01A3A/"])
def test_e4_connect_zip_equals_the_folder(tmp_path: Path, prefix: str) -> None:
    plain = fixture_path(S02)
    archive = zip_copy(plain, tmp_path / "export.zip", prefix)
    a, b = load_e4(archive), load_e4(plain)
    assert [(s.stream, s.t0, s.fs) for s in a.regular] == [
        (s.stream, s.t0, s.fs) for s in b.regular
    ]
    assert all(
        np.array_equal(x.values, y.values) for x, y in zip(a.regular, b.regular, strict=True)
    )
    assert np.array_equal(a.rr_ms, b.rr_ms)
    assert np.array_equal(a.beat_times, b.beat_times)
    assert np.array_equal(a.tags, b.tags)
    assert len(a.tags) > 0
    head = list(itertools.islice(read_e4_zip(archive), 500))
    assert head == list(itertools.islice(open_source(plain), 500))


def test_zip_and_gz_errors_are_clear(tmp_path: Path) -> None:
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("notes.txt", "hello")
    with pytest.raises(SourceError, match=r"other.zip: no E4 files .* in the zip: notes.txt"):
        list(open_source(other))
    two = tmp_path / "two.zip"
    with zipfile.ZipFile(two, "w") as archive:
        archive.writestr("a/EDA.csv", "1\n4\n0.1\n")
        archive.writestr("b/EDA.csv", "1\n4\n0.1\n")
    with pytest.raises(SourceError, match="holds 2 E4 sessions"):
        list(open_source(two))
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(SourceError, match=r"broken.zip: not a zip file"):
        list(open_source(broken))
    folder = tmp_path / "gz"
    folder.mkdir()
    (folder / "EDA.csv.gz").write_bytes(b"\x1f\x8b\x08 truncated")
    with pytest.raises(SourceError, match=r"EDA.csv.gz: cannot read"):
        list(read_e4_folder(folder))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "ACC.csv").write_text("1.0,1.0,1.0\n32,32,32\n1,2,3\n4,5\n")
    with pytest.raises(SourceError, match=r"ACC.csv:4: expected 3 columns, got 2"):
        list(read_e4_folder(bad))
    (bad / "ACC.csv").write_text("x\n32\n")
    with pytest.raises(SourceError, match=r"ACC.csv:1: not a number .*start time"):
        list(read_e4_folder(bad))


def test_analyze_reads_a_zip_export_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sample = fixture_path("empatica_e4_flirt_sample")
    archive = zip_copy(sample, tmp_path / "flirt.zip")
    assert main(["analyze", str(archive), "--out", str(tmp_path / "out"), "--no-plots"]) == 0
    assert "flirt" in capsys.readouterr().out
    assert (tmp_path / "out" / "flirt" / "features.csv").read_text().count("\n") > 100
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"\x00" * 64)
    assert main(["analyze", str(junk), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "junk.zip" in err
    assert "Traceback" not in err
