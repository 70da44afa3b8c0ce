"""Empatica E4 export folders (``EDA.csv``, ``HR.csv``, ``IBI.csv``, ``BVP.csv``, ``TEMP.csv``,
``ACC.csv``, ``tags*.csv``; each may also be ``.csv.gz``).

Format (Empatica's ``info.txt``): row 1 is the start as a UTC unix time, row 2 the rate in Hz,
then one sample per row (ACC: three columns in 1/64 g). ``IBI.csv`` starts with ``t0, IBI`` and
then ``seconds since t0, interval in s`` rows. ``tags*.csv`` holds one unix time per line
(event-button presses), which become markers with the text ``e4_tag``.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Iterator
from pathlib import Path

from services.contract import SampleStream
from services.ingest.errors import SourceError
from services.ingest.sources.base import Chunk, irregular_chunks, merge_in_time, regular_chunks

log = logging.getLogger(__name__)

#: E4 file stem -> (contract stream, scale to contract units)
REGULAR_FILES: dict[str, tuple[SampleStream, float]] = {
    "EDA": ("eda", 1.0),
    "HR": ("hr", 1.0),
    "BVP": ("ppg", 1.0),
    "TEMP": ("temp", 1.0),
    "ACC": ("acc", 1.0 / 64.0),
}
DEVICE = "e4"
TAG_TEXT = "e4_tag"


def _find(folder: Path, stem: str) -> Path | None:
    for name in (f"{stem}.csv", f"{stem}.csv.gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _lines(path: Path) -> list[str]:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                return fh.read().splitlines()
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise SourceError(path, f"cannot read: {exc}") from exc


def _floats(path: Path, line_no: int, text: str, width: int) -> list[float]:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) < width:
        raise SourceError(path, f"expected {width} columns, got {len(parts)}", line_no)
    try:
        return [float(p) for p in parts[:width]]
    except ValueError as exc:
        raise SourceError(path, f"not a number in {text!r}", line_no) from exc


def _read_regular(
    path: Path, stream: SampleStream, scale: float
) -> tuple[float, float, list[float] | list[tuple[float, float, float]]]:
    lines = [ln for ln in _lines(path)]
    width = 3 if stream == "acc" else 1
    if len(lines) < 2:
        raise SourceError(path, "needs a start-time row and a sample-rate row")
    t0 = _floats(path, 1, lines[0], 1)[0]
    fs = _floats(path, 2, lines[1], 1)[0]
    if fs <= 0:
        raise SourceError(path, f"sample rate {fs} must be positive", 2)
    rows = [(_floats(path, i + 3, ln, width)) for i, ln in enumerate(lines[2:]) if ln.strip()]
    if stream == "acc":
        return t0, fs, [(r[0] * scale, r[1] * scale, r[2] * scale) for r in rows]
    return t0, fs, [r[0] * scale for r in rows]


def read_ibi(path: Path) -> tuple[list[float], list[float]]:
    """Beat times (unix s) and RR intervals (ms) from an E4 ``IBI.csv``."""
    lines = _lines(path)
    if not lines:
        return [], []
    t0 = _floats(path, 1, lines[0].split(",")[0], 1)[0]
    times: list[float] = []
    rr: list[float] = []
    for i, ln in enumerate(lines[1:], start=2):
        if not ln.strip():
            continue
        offset, interval = _floats(path, i, ln, 2)
        times.append(t0 + offset)
        rr.append(interval * 1000.0)
    return times, rr


def read_tags(folder: Path) -> list[float]:
    times: list[float] = []
    for path in sorted([*folder.glob("tags*.csv"), *folder.glob("tags*.csv.gz")]):
        for i, ln in enumerate(_lines(path), start=1):
            if ln.strip():
                times.append(_floats(path, i, ln, 1)[0])
    return sorted(times)


def read_e4_folder(folder: Path) -> Iterator[Chunk]:
    """All streams of an E4 export as one time-ordered chunk iterator."""
    if not folder.is_dir():
        raise SourceError(folder, "not a folder")
    streams: list[Iterator[Chunk]] = []
    for stem, (stream, scale) in REGULAR_FILES.items():
        path = _find(folder, stem)
        if path is None:
            continue
        t0, fs, values = _read_regular(path, stream, scale)
        streams.append(regular_chunks(stream, DEVICE, t0, fs, values))
    ibi = _find(folder, "IBI")
    if ibi is not None:
        times, rr = read_ibi(ibi)
        streams.append(irregular_chunks("rr", DEVICE, times, rr))
    tags = read_tags(folder)
    if tags:
        streams.append(
            irregular_chunks("marker", DEVICE, tags, [TAG_TEXT] * len(tags), seconds=1e-9)
        )
    if not streams:
        raise SourceError(folder, "no E4 files (EDA.csv, HR.csv, IBI.csv, ...) found")
    return merge_in_time(streams)
