"""The recording formats Rekindle reads, how each is recognised, and the one entry point
:func:`open_recording` that tries them in order.

A path that no format takes gets one error listing every format tried and what it needed.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rekindle.contract import SampleStream
from rekindle.ingest.errors import SourceError
from rekindle.ingest.sources.base import Chunk, ReadOptions


@dataclass(frozen=True, slots=True)
class Format:
    name: str
    #: What a path of this format is, for ``rekindle read --list-formats`` and errors.
    needs: str
    #: None when ``path`` is of this format, else why not (shown when no format fits).
    check: Callable[[Path], str | None]
    #: The recording's chunks: ``(path, options, message_s)``; ``message_s`` > 1 lets a reader
    #: hand out its regular series already in the chunks ``coalesce(..., message_s)`` makes
    #: (the E4 reader does; the others give 1-s chunks and leave that to ``coalesce``).
    open: Callable[[Path, ReadOptions, float], Iterator[Chunk]]
    #: One regular stream's chunks alone, ``(path, stream, message_s)``, for less than the
    #: whole read: the chunks of that stream that ``open`` gives, in its order (``open`` being
    #: in time order). None where the format has no cheaper way than reading everything.
    open_stream: Callable[[Path, SampleStream, float], Iterator[Chunk]] | None = None


E4_STEMS = ("EDA", "HR", "IBI", "BVP", "TEMP", "ACC")


def _check_e4(path: Path) -> str | None:
    if not path.is_dir():
        return "not a folder"
    names = {p.name for p in path.iterdir()}
    if any(f"{s}.csv" in names or f"{s}.csv.gz" in names for s in E4_STEMS):
        return None
    return "the folder has none of EDA.csv, HR.csv, IBI.csv, BVP.csv, TEMP.csv, ACC.csv"


def _check_zip(path: Path) -> str | None:
    if not path.is_file():
        return "not a file"
    if path.suffix.lower() == ".zip" or zipfile.is_zipfile(path):
        return None  # (a damaged .zip then gets the zip reader's own error)
    return "not a zip file"


def _check_csv(path: Path) -> str | None:
    from rekindle.ingest.sources import csvfile, emotibit  # noqa: PLC0415

    if not path.is_file():
        return "not a file"
    if emotibit.is_emotibit_csv(path):
        return "it is an EmotiBit file"
    return csvfile.looks_like(path)


def _check_emotibit(path: Path) -> str | None:
    from rekindle.ingest.sources import emotibit  # noqa: PLC0415

    if emotibit.emotibit_files(path):
        return None
    return "no file with the EmotiBit header (LocalTimestamp,EmotiBitTimestamp,...,TypeTag,...)"


def _check_xdf(path: Path) -> str | None:
    if not path.is_file():
        return "not a file"
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        return f"cannot read: {exc}"
    return None if magic == b"XDF:" else "does not start with the XDF magic 'XDF:'"


def _check_rekindle(path: Path) -> str | None:
    from rekindle.ingest.sources import recording  # noqa: PLC0415

    if not path.is_file():
        return "not a file"
    try:
        recording.read_header(path)
    except SourceError as exc:
        return exc.reason
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        return f"first line is not a JSON header ({type(exc).__name__})"
    return None


def _open_e4(path: Path, _options: ReadOptions, message_s: float) -> Iterator[Chunk]:
    from rekindle.ingest.sources import e4  # noqa: PLC0415

    return e4.read_e4_folder(path, message_s)


def _open_e4_stream(path: Path, stream: SampleStream, message_s: float) -> Iterator[Chunk]:
    from rekindle.ingest.sources import e4  # noqa: PLC0415

    return e4.read_e4_stream(path, stream, message_s)


def _open_zip(path: Path, _options: ReadOptions, message_s: float) -> Iterator[Chunk]:
    from rekindle.ingest.sources import e4  # noqa: PLC0415

    return e4.read_e4_zip(path, message_s)


def _open_csv(path: Path, options: ReadOptions, _message_s: float) -> Iterator[Chunk]:
    from rekindle.ingest.sources import csvfile  # noqa: PLC0415

    return csvfile.read_csv(path, options)


def _open_emotibit(path: Path, _options: ReadOptions, _message_s: float) -> Iterator[Chunk]:
    from rekindle.ingest.sources import emotibit  # noqa: PLC0415

    return emotibit.read_emotibit(path)


def _open_xdf(path: Path, options: ReadOptions, _message_s: float) -> Iterator[Chunk]:
    from rekindle.ingest.sources import xdf  # noqa: PLC0415

    return xdf.read_xdf(path, options)


def _open_rekindle(path: Path, _options: ReadOptions, _message_s: float) -> Iterator[Chunk]:
    from rekindle.ingest.sources import recording  # noqa: PLC0415

    return recording.read_recording(path)


FORMATS: tuple[Format, ...] = (
    Format(
        "E4",
        "an Empatica E4 export folder: EDA.csv, HR.csv, IBI.csv, BVP.csv, TEMP.csv, ACC.csv, "
        "tags*.csv (each may be .csv.gz)",
        _check_e4,
        _open_e4,
        _open_e4_stream,
    ),
    Format(
        "zip",
        "an E4 Connect .zip export holding those files",
        _check_zip,
        _open_zip,
        _open_e4_stream,
    ),
    Format(
        "CSV",
        "a .csv with a header: a time column (time, timestamp, ...: unix s/ms or ISO 8601) and "
        "stream columns with units (eda_uS, hr_bpm, rr_ms, ppg, temp_degC, acc_x_g, ...), "
        "optional marker column; --column NAME=STREAM:UNIT and --start for the rest",
        _check_csv,
        _open_csv,
    ),
    Format(
        "EmotiBit",
        "EmotiBit parsed CSVs (a folder of *_EA.csv, *_HR.csv, *_BI.csv, *_PG.csv, *_T1.csv, "
        "*_AX/AY/AZ.csv, *_UN.csv, or one such file)",
        _check_emotibit,
        _open_emotibit,
    ),
    Format(
        "XDF",
        "a .xdf file (Lab Streaming Layer) with EDA, HR, RR, PPG, ECG, TEMP, ACC or marker streams",
        _check_xdf,
        _open_xdf,
    ),
    Format(
        "rekindle",
        'a Rekindle recording (.jsonl or .jsonl.gz, first line {"format": '
        '"rekindle-recording", ...}) written by rekindle record',
        _check_rekindle,
        _open_rekindle,
    ),
)


def detect(path: Path) -> Format:
    """The format of ``path``, or an error listing every format tried and what it needed."""
    if not path.exists():
        raise SourceError(path, "no such file or folder")
    reasons = []
    for fmt in FORMATS:
        why = fmt.check(path)
        if why is None:
            return fmt
        reasons.append(f"  {fmt.name}: {why}; needs {fmt.needs}")
    tried = ", ".join(f.name for f in FORMATS)
    raise SourceError(path, f"not a supported recording: tried {tried}\n" + "\n".join(reasons))


def open_recording(
    path: Path, options: ReadOptions | None = None, *, message_s: float = 1.0
) -> Iterator[Chunk]:
    """Chunks of a recording in any supported format (see :data:`FORMATS`), 1 s of data each;
    ``message_s`` > 1: chunks that ``coalesce(..., message_s)`` leaves as they are, where the
    reader can make them directly (E4), for an analysis that coalesces them anyway."""
    return detect(path).open(path, options or ReadOptions(), message_s)


def stream_reader(
    path: Path, stream: SampleStream, message_s: float = 1.0
) -> Callable[[], Iterator[Chunk]] | None:
    """A reader of ``stream`` alone from the recording at ``path`` (called later, possibly in
    another process): the chunks of that stream that :func:`open_recording` (with this
    ``message_s``) gives, in its order; None when the format has no such reader, or ``path`` is
    no recording (then :func:`open_recording` says why)."""
    try:
        fmt = detect(path)
    except SourceError:
        return None
    opener = fmt.open_stream
    if opener is None:
        return None
    return lambda: opener(path, stream, message_s)


def list_formats() -> str:
    return "\n".join(f"{f.name:<9} {f.needs}" for f in FORMATS)
