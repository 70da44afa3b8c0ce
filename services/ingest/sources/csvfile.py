"""Generic CSV: a header row, a time column and one column per stream, units in the header.

Layout (one row per time; empty cells where a stream has no sample at that time)::

    time,eda_uS,hr_bpm,rr_ms,ppg,temp_degC,acc_x_g,acc_y_g,acc_z_g,marker
    1700000000.00,0.41,72,,512.0,33.1,0.01,0.02,0.98,
    1700000000.25,0.42,,830,515.5,,,,,dose given

* time: a column named ``time``, ``timestamp``, ``unix_time``, ``t`` or ``datetime`` (unit
  ``_s`` / ``_ms`` or ``[s]`` / ``[ms]``): unix seconds (or ms), ISO 8601 date-times (UTC unless
  they say otherwise), or seconds since the start when ``--start UNIX`` is given.
* streams: ``eda``, ``hr``, ``rr``, ``ppg`` (also ``bvp``), ``temp``, ``ecg``, ``acc_x`` /
  ``acc_y`` / ``acc_z`` (all three), each with its unit as ``NAME_UNIT``, ``NAME [UNIT]`` or
  ``NAME (UNIT)`` (see :mod:`rekindle.ingest.sources.units`; ``ppg`` needs none).
* ``marker`` / ``event``: text; each non-empty cell becomes a marker.
* ``--column NAME=STREAM:UNIT`` (or ``=time``, ``=time:ms``, ``=marker``, ``=ignore``) maps
  columns named otherwise. Any other column is an error that names it.

A stream whose times are regular becomes the regular form (``t0``, ``fs``), else 1-s irregular
chunks. Parsing is pandas' C reader (no per-row Python).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd

from rekindle import contract
from rekindle.contract import SampleStream
from rekindle.ingest.errors import SourceError
from rekindle.ingest.sources import units
from rekindle.ingest.sources.base import Chunk, ReadOptions
from rekindle.ingest.sources.tables import F64Array, SeriesSet, TimedSeries

DEVICE = "csv"
STREAM_NAMES: Final[dict[str, str]] = {
    "eda": "eda",
    "gsr": "eda",
    "hr": "hr",
    "heart_rate": "hr",
    "rr": "rr",
    "ibi": "rr",
    "ppg": "ppg",
    "bvp": "ppg",
    "temp": "temp",
    "temperature": "temp",
    "ecg": "ecg",
    "acc_x": "acc_x",
    "acc_y": "acc_y",
    "acc_z": "acc_z",
}
TIME_NAMES: Final = frozenset({"time", "timestamp", "unix_time", "t", "datetime", "date_time"})
MARKER_NAMES: Final = frozenset({"marker", "markers", "event", "events", "annotation"})
NEEDS = (
    "a .csv whose header names a time column (time, timestamp, ...) and stream columns with "
    "units (eda_uS, hr_bpm, rr_ms, ppg, temp_degC, acc_x_g, ...)"
)
_BRACKETED = re.compile(r"(.+?)\s*[\[(]\s*(.+?)\s*[\])]")


@dataclass(frozen=True, slots=True)
class Column:
    role: str  # a key of STREAM_NAMES' values, "time", "marker" or "ignore"
    unit: str | None


def parse_column(name: str) -> Column | None:
    """What a header names: ``eda_uS`` -> eda in uS, ``time [ms]`` -> time in ms, ..."""
    low = name.strip().lower()
    match = _BRACKETED.fullmatch(low)
    base, unit = (match.group(1), match.group(2)) if match else (low, None)
    base = re.sub(r"[\s-]+", "_", base)
    for key, role in (
        *((k, v) for k, v in STREAM_NAMES.items()),
        *((t, "time") for t in TIME_NAMES),
    ):
        if base == key:
            return Column(role, unit)
    if base in MARKER_NAMES:
        return Column("marker", None)
    if unit is None and "_" in base:
        head, _, tail = base.rpartition("_")
        head_role = STREAM_NAMES.get(head) or ("time" if head in TIME_NAMES else None)
        if head_role is not None:
            return Column(head_role, tail)
    return None


def _flag_column(name: str, text: str) -> Column:
    role, _, unit = text.partition(":")
    role = role.strip().lower()
    if role in {"time", "marker", "ignore"} or role in STREAM_NAMES.values():
        return Column(role, unit.strip() or None)
    streams = ", ".join(sorted(set(STREAM_NAMES.values())))
    raise SourceError(
        Path(name),
        f"--column {name}={text}: {role!r} is not one of {streams}, time, marker, ignore",
    )


def looks_like(path: Path) -> str | None:
    """None when ``path`` is a CSV with a header row, else what it lacks."""
    if path.suffix.lower() not in {".csv", ".tsv", ".txt"} and not path.name.lower().endswith(
        (".csv.gz", ".tsv.gz")
    ):
        return "the name does not end in .csv, .tsv or .txt"
    return None


def _read_frame(path: Path) -> pd.DataFrame:
    sep = "\t" if ".tsv" in path.name.lower() else ","
    try:
        return pd.read_csv(path, sep=sep, float_precision="round_trip", skipinitialspace=True)
    except (OSError, UnicodeDecodeError, EOFError, ValueError, pd.errors.ParserError) as exc:
        raise SourceError(path, f"cannot read as CSV: {exc}") from exc


def _times(path: Path, name: str, col: Column, raw: pd.Series, options: ReadOptions) -> F64Array:
    if raw.isna().any():
        line = int(np.flatnonzero(raw.isna().to_numpy())[0]) + 2
        raise SourceError(path, f"time column {name!r} is empty", line)
    if pd.api.types.is_numeric_dtype(raw):
        times = raw.to_numpy(dtype=np.float64)
        if col.unit not in (None, "s", "ms"):
            raise SourceError(path, f"time column {name!r}: unit {col.unit!r} is not s or ms")
        if col.unit == "ms":
            times = times / 1000.0
        if options.start is not None:
            times = options.start + times
        elif len(times) and times[0] < contract.MIN_TIME_S:
            raise SourceError(
                path,
                f"time column {name!r} starts at {times[0]:g}: that is not a unix time; for "
                "seconds since the start, give the start's unix time with --start",
            )
    else:
        try:
            stamps = pd.to_datetime(raw, utc=True, format="ISO8601")
        except (ValueError, TypeError) as exc:
            raise SourceError(
                path, f"time column {name!r} is neither numbers nor ISO 8601 date-times: {exc}"
            ) from exc
        times = (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(np.float64)
    bad = np.flatnonzero(~(np.diff(times) > 0))
    if len(bad):
        raise SourceError(path, f"time column {name!r} does not increase", int(bad[0]) + 3)
    return times


def _values(path: Path, name: str, raw: pd.Series) -> F64Array:
    if pd.api.types.is_numeric_dtype(raw):
        return raw.to_numpy(dtype=np.float64)
    numbers = pd.to_numeric(raw, errors="coerce")
    bad = raw.notna() & numbers.isna()
    line = int(np.flatnonzero(bad.to_numpy())[0]) + 2
    raise SourceError(path, f"column {name!r}: not a number: {raw[bad].iloc[0]!r}", line)


def load_csv(path: Path, options: ReadOptions | None = None) -> SeriesSet:
    options = options or ReadOptions()
    frame = _read_frame(path)
    roles: dict[str, Column] = {}
    for name in frame.columns:
        text = str(name)
        col = (
            _flag_column(text, options.columns[text])
            if text in options.columns
            else parse_column(text)
        )
        if col is None:
            raise SourceError(
                path,
                f"column {text!r} is not a stream: name it with its unit (eda_uS, hr_bpm, "
                f"rr_ms, ppg, temp_degC, acc_x_g, ...) or map it with --column "
                f"'{text}=STREAM:UNIT' (or '{text}=ignore')",
            )
        roles[text] = col
    time_cols = [n for n, c in roles.items() if c.role == "time"]
    if len(time_cols) != 1:
        found = ", ".join(time_cols) if time_cols else "none"
        raise SourceError(
            path,
            f"needs exactly one time column (time, timestamp, unix_time, t, datetime; or "
            f"--column NAME=time); found {found}",
        )
    times = _times(path, time_cols[0], roles[time_cols[0]], frame[time_cols[0]], options)
    out = SeriesSet(marker_device=DEVICE)
    axes: dict[str, F64Array] = {}
    for name, col in roles.items():
        if col.role in {"time", "ignore"}:
            continue
        raw = frame[name]
        if col.role == "marker":
            keep = raw.notna().to_numpy() & (raw.astype(str).str.strip() != "").to_numpy()
            out.marker_times.extend(times[keep].tolist())
            out.marker_texts.extend(raw[keep].astype(str).str.strip().tolist())
            continue
        stream: SampleStream = "acc" if col.role.startswith("acc_") else col.role  # type: ignore[assignment]
        if col.unit is None and stream not in units.UNITLESS:
            raise SourceError(
                path,
                f"column {name!r}: no unit; name it {col.role}_UNIT or '{col.role} [UNIT]' "
                f"with UNIT one of {units.accepted(stream)}, or pass --column "
                f"'{name}={col.role}:UNIT'",
            )
        values = _values(path, name, raw)
        converted = units.convert(stream, col.unit or "au", values)
        if converted is None:
            raise SourceError(
                path,
                f"column {name!r}: unit {col.unit!r} is not one of {units.accepted(stream)}",
            )
        if stream == "acc":
            if col.role in axes:
                raise SourceError(path, f"column {name!r}: a second {col.role} column")
            axes[col.role] = converted
            continue
        if any(s.stream == stream for s in out.series):
            raise SourceError(path, f"column {name!r}: a second {stream} column")
        keep = ~np.isnan(converted)
        out.series.append(TimedSeries(stream, DEVICE, times[keep], converted[keep]))
    if axes:
        missing = [a for a in ("acc_x", "acc_y", "acc_z") if a not in axes]
        if missing:
            raise SourceError(path, f"acceleration needs acc_x, acc_y and acc_z; missing {missing}")
        acc = np.column_stack([axes["acc_x"], axes["acc_y"], axes["acc_z"]])
        keep = ~np.asarray(np.isnan(acc).any(axis=1))
        out.series.append(TimedSeries("acc", DEVICE, times[keep], acc[keep]))
    if not out.series:
        raise SourceError(path, f"no stream columns; {NEEDS}")
    return out


def read_csv(path: Path, options: ReadOptions | None = None) -> Iterator[Chunk]:
    return load_csv(path, options).chunks()
