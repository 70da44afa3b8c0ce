"""Empatica E4 exports: a folder or an E4 Connect ``.zip`` holding ``EDA.csv``, ``HR.csv``,
``IBI.csv``, ``BVP.csv``, ``TEMP.csv``, ``ACC.csv``, ``tags*.csv`` (each may also be ``.csv.gz``).

Format (Empatica's ``info.txt``): row 1 is the start as a UTC unix time, row 2 the rate in Hz,
then one sample per row (ACC: three columns in 1/64 g). ``IBI.csv`` starts with ``t0, IBI`` and
then ``seconds since t0, interval in s`` rows. ``tags*.csv`` holds one unix time per line
(event-button presses), which become markers with the text ``e4_tag``.

Files are parsed whole with numpy (no per-row Python); a file that does not parse is then
scanned line by line only to name the line that is wrong.
"""

from __future__ import annotations

import gzip
import io
import zipfile
import zlib
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from rekindle.contract import SampleStream
from rekindle.ingest.coalesce import coalesced_regular
from rekindle.ingest.errors import SourceError
from rekindle.ingest.sources.base import Chunk, irregular_chunks, merge_in_time

#: E4 file stem -> (contract stream, scale to contract units)
REGULAR_FILES: dict[str, tuple[SampleStream, float]] = {
    "EDA": ("eda", 1.0),
    "HR": ("hr", 1.0),
    "BVP": ("ppg", 1.0),
    "TEMP": ("temp", 1.0),
    "ACC": ("acc", 1.0 / 64.0),
}
STEMS = (*REGULAR_FILES, "IBI")
DEVICE = "e4"
TAG_TEXT = "e4_tag"
F64Array = npt.NDArray[np.float64]
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class RegularSeries:
    """One regular E4 stream in contract units: ``values`` is ``(n,)``, or ``(n, 3)`` for acc."""

    stream: SampleStream
    t0: float
    fs: float
    values: F64Array


@dataclass(frozen=True, slots=True)
class E4Export:
    """Everything an E4 export holds, as arrays (times in unix s, RR in ms)."""

    regular: list[RegularSeries]
    beat_times: F64Array
    rr_ms: F64Array
    tags: F64Array

    def chunks(self, message_s: float = 1.0) -> Iterator[Chunk]:
        """The export's chunks in time order: 1 s of data each (as a live publisher sends), or,
        with ``message_s`` > 1, each regular series in the chunks that
        :func:`~rekindle.ingest.coalesce.coalesce` would make of its 1-s chunks
        (:func:`~rekindle.ingest.coalesce.coalesced_regular`; RR and tags stay in 1-s chunks):
        what ``rekindle analyze`` reads, the same messages once coalesced."""
        streams: list[Iterator[Chunk]] = [
            coalesced_regular(s.stream, DEVICE, s.t0, s.fs, s.values, message_s)
            for s in self.regular
        ]
        if len(self.beat_times):
            streams.append(
                irregular_chunks("rr", DEVICE, self.beat_times.tolist(), self.rr_ms.tolist())
            )
        if len(self.tags):
            tags = self.tags.tolist()
            streams.append(
                irregular_chunks("marker", DEVICE, tags, [TAG_TEXT] * len(tags), seconds=1e-9)
            )
        return merge_in_time(streams)


# --- where the files are: a folder or a zip ---------------------------------------------------


class _Files:
    """The files of one export, by name (``EDA.csv``, ``tags_S02.csv.gz``, ...)."""

    def __init__(self, where: Path, blobs: dict[str, Path | tuple[zipfile.ZipFile, str]]) -> None:
        self.where = where
        self.blobs = blobs

    def label(self, name: str) -> Path:
        return self.where / name

    def find(self, stem: str) -> str | None:
        for name in (f"{stem}.csv", f"{stem}.csv.gz"):
            if name in self.blobs:
                return name
        return None

    def tag_files(self) -> list[str]:
        return sorted(
            n for n in self.blobs if n.startswith("tags") and n.endswith((".csv", ".csv.gz"))
        )

    def text(self, name: str) -> str:
        blob = self.blobs[name]
        try:
            if isinstance(blob, Path):
                data = blob.read_bytes()
            else:
                archive, member = blob
                data = archive.read(member)
            if name.endswith(".gz"):
                data = gzip.decompress(data)
            return data.decode("utf-8")
        except (OSError, UnicodeDecodeError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise SourceError(self.label(name), f"cannot read: {exc}") from exc


def _folder_files(folder: Path) -> _Files:
    return _Files(folder, {p.name: p for p in folder.iterdir() if p.is_file()})


def _zip_files(path: Path, archive: zipfile.ZipFile) -> _Files:
    """E4 Connect puts the CSVs at the top of the zip; one sub-folder level is accepted too."""
    by_dir: dict[str, dict[str, Path | tuple[zipfile.ZipFile, str]]] = {}
    for info in archive.infolist():
        if info.is_dir():
            continue
        member = PurePosixPath(info.filename)
        by_dir.setdefault(str(member.parent), {})[member.name] = (archive, info.filename)
    with_e4 = {
        d: files
        for d, files in by_dir.items()
        if any(f"{stem}.csv" in files or f"{stem}.csv.gz" in files for stem in STEMS)
    }
    if not with_e4:
        names = ", ".join(sorted(archive.namelist())[:5]) or "nothing"
        raise SourceError(path, f"no E4 files (EDA.csv, HR.csv, IBI.csv, ...) in the zip: {names}")
    if len(with_e4) > 1:
        raise SourceError(
            path,
            f"the zip holds {len(with_e4)} E4 sessions ({', '.join(sorted(with_e4))}); "
            "extract it and analyse each folder",
        )
    ((folder, files),) = with_e4.items()
    return _Files(path if folder == "." else path / folder, files)


# --- parsing ----------------------------------------------------------------------------------


def _bad_line(where: Path, lines: list[str], first_line_no: int, width: int) -> SourceError:
    """The first line of ``lines`` that is not ``width`` numbers, as an error naming it."""
    for i, text in enumerate(lines, start=first_line_no):
        if not text.strip():
            continue
        parts = [p.strip() for p in text.split(",")]
        if len(parts) < width:
            return SourceError(where, f"expected {width} columns, got {len(parts)}", i)
        try:
            [float(p) for p in parts[:width]]
        except ValueError:
            return SourceError(where, f"not a number in {text!r}", i)
    return SourceError(where, "rows of unequal width; expected one sample per row")


def _table(where: Path, lines: list[str], first_line_no: int, width: int) -> F64Array:
    """``lines`` as an ``(n, width)`` float array (blank lines skipped), parsed in C."""
    body = [ln for ln in lines if ln.strip()]
    if not body:
        return np.empty((0, width), dtype=np.float64)
    try:
        table = np.loadtxt(
            io.StringIO("\n".join(body)),
            delimiter=",",
            usecols=range(width),
            ndmin=2,
            dtype=np.float64,
            comments=None,
        )
    except ValueError as exc:
        raise _bad_line(where, lines, first_line_no, width) from exc
    return table


def _header_value(where: Path, lines: list[str], index: int, what: str) -> float:
    text = lines[index].split(",")[0].strip()
    try:
        return float(text)
    except ValueError as exc:
        raise SourceError(where, f"not a number in {lines[index]!r} ({what})", index + 1) from exc


def _fast_table(text: str, head: int, width: int) -> tuple[list[str], F64Array] | None:
    """The first ``head`` lines and the rest as a table, parsed from the text as it is (no list
    of lines: ~2x cheaper on BVP's 228k rows), when its lines end in ``\n`` or ``\r\n`` and
    every row parses; None otherwise (then :func:`_table` parses the lines, and names the bad
    one)."""
    parts = text.split("\n", head)
    if len(parts) <= head:
        return None
    lines = [p.removesuffix("\r") for p in parts[:head]]
    if any(len(line.splitlines()) > 1 for line in lines):
        return None  # (other line breaks: the general path splits them as str.splitlines)
    if not parts[head] or parts[head].isspace():
        return lines, np.empty((0, width), dtype=np.float64)
    try:
        table = np.loadtxt(
            io.StringIO(parts[head]),
            delimiter=",",
            usecols=range(width),
            ndmin=2,
            dtype=np.float64,
            comments=None,
        )
    except ValueError:
        return None  # (a bad row, or a row of blanks, which the general path skips)
    return lines, table


def _regular(where: Path, text: str, stream: SampleStream, scale: float) -> RegularSeries:
    width = 3 if stream == "acc" else 1
    fast = _fast_table(text, 2, width)
    lines = text.splitlines() if fast is None else fast[0]
    if len(lines) < 2:
        raise SourceError(where, "needs a start-time row and a sample-rate row")
    t0 = _header_value(where, lines, 0, "start time")
    fs = _header_value(where, lines, 1, "sample rate")
    if not fs > 0:
        raise SourceError(where, f"sample rate {fs} must be positive", 2)
    table = _table(where, lines[2:], 3, width) if fast is None else fast[1]
    values = table * scale if scale != 1.0 else table
    return RegularSeries(stream, t0, fs, values if width == 3 else values[:, 0])


def _ibi(where: Path, text: str) -> tuple[F64Array, F64Array]:
    lines = text.splitlines()
    if not lines:
        return np.empty(0), np.empty(0)
    t0 = _header_value(where, lines, 0, "start time")
    table = _table(where, lines[1:], 2, 2)
    return t0 + table[:, 0], table[:, 1] * 1000.0


def _read_regular(files: _Files, streams: Collection[SampleStream]) -> list[RegularSeries]:
    """The regular series of ``streams`` that the export has a file of, in REGULAR_FILES'
    order."""
    regular = []
    for stem, (stream, scale) in REGULAR_FILES.items():
        name = files.find(stem) if stream in streams else None
        if name is not None:
            regular.append(_regular(files.label(name), files.text(name), stream, scale))
    return regular


def _read(files: _Files) -> E4Export:
    regular = _read_regular(files, [s for s, _scale in REGULAR_FILES.values()])
    beat_times, rr = np.empty(0), np.empty(0)
    ibi = files.find("IBI")
    if ibi is not None:
        beat_times, rr = _ibi(files.label(ibi), files.text(ibi))
    tag_parts = [
        _table(files.label(n), files.text(n).splitlines(), 1, 1)[:, 0] for n in files.tag_files()
    ]
    tags = np.sort(np.concatenate(tag_parts)) if tag_parts else np.empty(0)
    if not regular and ibi is None and not tag_parts:
        raise SourceError(files.where, "no E4 files (EDA.csv, HR.csv, IBI.csv, ...) found")
    if not regular and ibi is None:
        raise SourceError(files.where, "only tags, no E4 signal files (EDA.csv, HR.csv, ...)")
    return E4Export(regular, beat_times, rr, tags)


def _load(path: Path, read: Callable[[_Files], _T]) -> _T:
    """``read`` of the files of an E4 export folder or E4 Connect zip."""
    if path.is_dir():
        return read(_folder_files(path))
    try:
        with zipfile.ZipFile(path) as archive:
            return read(_zip_files(path, archive))
    except zipfile.BadZipFile as exc:
        raise SourceError(path, f"not a zip file: {exc}") from exc
    except OSError as exc:
        raise SourceError(path, f"cannot read: {exc}") from exc


def load_e4(path: Path) -> E4Export:
    """An E4 export folder or E4 Connect zip as arrays."""
    return _load(path, _read)


def read_e4_stream(path: Path, stream: SampleStream, message_s: float = 1.0) -> Iterator[Chunk]:
    """One regular stream of an E4 export folder or zip (``ppg``, ``eda``, ...), its file alone
    read: the chunks of that stream that :func:`read_e4_folder` / :func:`read_e4_zip` give, in
    the same order (their merge keeps each stream's own order), for less than the whole read.
    Nothing when the export has no file of that stream."""
    for series in _load(path, lambda files: _read_regular(files, (stream,))):
        yield from coalesced_regular(
            series.stream, DEVICE, series.t0, series.fs, series.values, message_s
        )


def read_e4_folder(folder: Path, message_s: float = 1.0) -> Iterator[Chunk]:
    """All streams of an E4 export folder as one time-ordered chunk iterator
    (:meth:`E4Export.chunks`)."""
    if not folder.is_dir():
        raise SourceError(folder, "not a folder")
    return load_e4(folder).chunks(message_s)


def read_e4_zip(path: Path, message_s: float = 1.0) -> Iterator[Chunk]:
    """All streams of an E4 Connect zip export as one time-ordered chunk iterator
    (:meth:`E4Export.chunks`)."""
    return load_e4(path).chunks(message_s)
