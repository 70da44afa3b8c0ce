"""EmotiBit parsed data: the per-type CSVs that EmotiBit's DataParser writes, e.g.
``2024-03-20_17-38-35-123456_EA.csv``, one file per type tag, all with the header::

    LocalTimestamp,EmotiBitTimestamp,PacketNumber,DataLength,TypeTag,ProtocolVersion,DataReliability,<TAG>

``LocalTimestamp`` is unix seconds (one row per sample); the last column holds the value.
Read: ``EA`` -> eda (µS), ``HR`` -> hr (bpm), ``BI`` -> rr (ms), ``PG`` -> ppg (green; ``PI``
infrared when there is no green), ``T1`` (else ``TH``) -> temp (°C), ``AX``/``AY``/``AZ`` -> acc
(g, rows matched by time), ``UN`` (user notes) -> markers. Other tags are not streams Rekindle
uses and are skipped. A path is a folder of such files or one file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd

from rekindle.contract import SampleStream
from rekindle.ingest.errors import SourceError
from rekindle.ingest.sources.base import Chunk
from rekindle.ingest.sources.tables import F64Array, SeriesSet, TimedSeries

DEVICE = "emotibit"
HEADER: Final = (
    "LocalTimestamp",
    "EmotiBitTimestamp",
    "PacketNumber",
    "DataLength",
    "TypeTag",
    "ProtocolVersion",
    "DataReliability",
)
#: type tag -> stream, in order of preference for each stream
TAGS: Final[dict[str, SampleStream]] = {
    "EA": "eda",
    "HR": "hr",
    "BI": "rr",
    "PG": "ppg",
    "PI": "ppg",
    "T1": "temp",
    "TH": "temp",
}
NEEDS = (
    "EmotiBit parsed CSVs (header LocalTimestamp,EmotiBitTimestamp,PacketNumber,DataLength,"
    "TypeTag,...; files such as *_EA.csv, *_HR.csv)"
)


def is_emotibit_csv(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            first = fh.readline(4096).decode("utf-8", errors="replace")
    except OSError:
        return False
    return tuple(p.strip() for p in first.split(",")[: len(HEADER)]) == HEADER


def emotibit_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.glob("*.csv") if is_emotibit_csv(p))
    return [path] if path.is_file() and is_emotibit_csv(path) else []


def _read(path: Path) -> tuple[str, pd.DataFrame]:
    try:
        frame = pd.read_csv(path, float_precision="round_trip")
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as exc:
        raise SourceError(path, f"cannot read as EmotiBit CSV: {exc}") from exc
    if len(frame.columns) != len(HEADER) + 1:
        raise SourceError(path, f"expected {len(HEADER) + 1} columns, got {len(frame.columns)}")
    tags = frame["TypeTag"].dropna().astype(str).unique().tolist()
    if len(tags) != 1:
        raise SourceError(path, f"expected one TypeTag per file, found {tags or 'none'}")
    return tags[0], frame


def _numbers(path: Path, frame: pd.DataFrame, column: str) -> F64Array:
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = frame[column].notna() & values.isna()
    if bad.any():
        line = int(np.flatnonzero(bad.to_numpy())[0]) + 2
        raise SourceError(path, f"{column}: not a number: {frame[column][bad].iloc[0]!r}", line)
    return values.to_numpy(np.float64)


def _timed(path: Path, frame: pd.DataFrame) -> tuple[F64Array, F64Array]:
    times = _numbers(path, frame, "LocalTimestamp")
    values = _numbers(path, frame, frame.columns[-1])
    keep = ~(np.isnan(times) | np.isnan(values))
    times, values = times[keep], values[keep]
    order = np.argsort(times, kind="stable")
    times, values = times[order], values[order]
    dup = np.concatenate([[False], np.diff(times) <= 0])  # repeated timestamps: keep the first
    return times[~dup], values[~dup]


def load_emotibit(path: Path) -> SeriesSet:
    files = emotibit_files(path)
    if not files:
        raise SourceError(path, f"no {NEEDS}")
    by_tag: dict[str, tuple[Path, pd.DataFrame]] = {}
    for file in files:
        tag, frame = _read(file)
        if tag in by_tag:
            raise SourceError(file, f"a second {tag} file beside {by_tag[tag][0].name}")
        by_tag[tag] = (file, frame)
    out = SeriesSet(marker_device=DEVICE)
    taken: set[str] = set()
    for tag, stream in TAGS.items():
        if tag not in by_tag or stream in taken:
            continue
        file, frame = by_tag[tag]
        times, values = _timed(file, frame)
        out.series.append(TimedSeries(stream, DEVICE, times, values))
        taken.add(stream)
    axes = [by_tag.get(a) for a in ("AX", "AY", "AZ")]
    if all(axes):
        timed = [_timed(f, fr) for f, fr in axes]  # type: ignore[misc]
        common = timed[0][0]
        for t, _ in timed[1:]:
            common = np.intersect1d(common, t)
        acc = np.column_stack([v[np.searchsorted(t, common)] for t, v in timed])
        out.series.append(TimedSeries("acc", DEVICE, common, acc))
    if "UN" in by_tag:
        file, frame = by_tag["UN"]
        times = _numbers(file, frame, "LocalTimestamp")
        notes = frame[frame.columns[-1]]
        texts = notes.astype(str).str.strip()
        keep = ~np.isnan(times) & notes.notna().to_numpy() & (texts != "").to_numpy()
        out.marker_times = times[keep].tolist()
        out.marker_texts = texts[keep].tolist()
    if not out.series:
        found = ", ".join(sorted(by_tag))
        raise SourceError(
            path, f"no EmotiBit stream Rekindle reads (EA, HR, BI, PG, ...); found {found}"
        )
    return out


def read_emotibit(path: Path) -> Iterator[Chunk]:
    return load_emotibit(path).chunks()
