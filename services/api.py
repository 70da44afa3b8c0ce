"""The researchers' Python API: :func:`read`, :func:`analyze` and :func:`write`.

``analyze`` runs exactly the detectors of ``rekindle analyze`` and of the live service (the same
:class:`~rekindle.analysis.pipeline.SessionPipeline` fed the same wire messages), so its
DataFrames hold the values of ``features.csv`` and ``episodes.csv`` to the last bit. It takes a
:class:`Recording` (from :func:`read`), the path of any supported recording, or DataFrames per
stream. ``docs/api.md`` is the guide (its examples run in the test suite).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import pandas as pd

from rekindle import __version__, contract
from rekindle.analysis import schema
from rekindle.analysis.batch import write_results
from rekindle.analysis.core import AnalysisConfig
from rekindle.analysis.core.analyzer import ANALYSED
from rekindle.analysis.core.errors import ConfigError
from rekindle.analysis.core.extensions import registered
from rekindle.analysis.offline import (
    AnalysisResult,
    add_metrics,
    run_pipeline,
    seconds_by_quality,
    segment_table,
    summary,
)
from rekindle.analysis.params import apply
from rekindle.analysis.ppg import DERIVED_STREAM
from rekindle.contract import SampleStream
from rekindle.ingest.errors import IngestError
from rekindle.ingest.sources import units as unit_table
from rekindle.ingest.sources.base import Chunk, ReadOptions
from rekindle.ingest.sources.read import MARKER_COLUMNS, Recording, read

__all__ = ["FrameError", "Recording", "analyze", "read", "recording_from_frames", "write"]

F64Array: TypeAlias = npt.NDArray[np.float64]
#: What :func:`analyze` takes: a recording, its path, or DataFrames per stream.
Data: TypeAlias = Recording | str | os.PathLike[str] | Mapping[str, pd.DataFrame]
#: Markers: a DataFrame (``time``, ``text``) or ``(time, text)`` pairs.
Markers: TypeAlias = pd.DataFrame | Iterable[tuple[float, str]]
#: Phases: a DataFrame (``label`` or ``phase``, ``start``, ``end``) or ``(label, start, end)``.
Phases: TypeAlias = pd.DataFrame | Iterable[tuple[str, float, float]]

#: Device name of streams and markers given as DataFrames without one.
DEVICE = "dataframe"
#: A stream lost for more than this fraction of the feature seconds gets a warning.
LOST_WARNING = 0.5


class FrameError(IngestError, ValueError):
    """A DataFrame (or markers, phases) given to :func:`analyze` cannot be used; ``where`` names
    the stream key and column."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


def _columns_of(stream: str) -> tuple[str, ...]:
    return ("time", "x", "y", "z") if stream == "acc" else ("time", "value")


def _expected() -> str:
    return ", ".join(f"{s} [{contract.UNITS[s]}]" for s in contract.SAMPLE_STREAMS)


def _unix_seconds(where: str, raw: pd.Series | pd.Index) -> F64Array:
    """Times as float unix seconds: numbers as they are, date-times (UTC when naive) converted."""
    if isinstance(raw.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(raw.dtype):
        stamps = pd.DatetimeIndex(raw)
        if stamps.tz is not None:
            stamps = stamps.tz_convert("UTC").tz_localize(None)
        if stamps.hasnans:
            raise FrameError(where, "has missing times (NaT)")
        ns = stamps.as_unit("ns").asi8
        return ns.astype(np.float64) / 1e9
    if not pd.api.types.is_numeric_dtype(raw.dtype) or pd.api.types.is_bool_dtype(raw.dtype):
        raise FrameError(
            where, f"must be unix seconds (numbers) or date-times, not {raw.dtype} values"
        )
    times = np.asarray(raw, dtype=np.float64)
    if not np.isfinite(times).all():
        raise FrameError(where, "has missing or infinite times")
    return times


def _series(values: list[Any]) -> pd.Series:
    """Python numbers or date-times as a Series of their type (float64 when empty)."""
    return pd.Series(values) if values else pd.Series([], dtype=np.float64)


def _numbers(where: str, raw: pd.Series) -> F64Array:
    if not pd.api.types.is_numeric_dtype(raw.dtype) or pd.api.types.is_bool_dtype(raw.dtype):
        numbers = pd.to_numeric(raw, errors="coerce")
        bad = raw.notna() & numbers.isna()
        if bad.any() or pd.api.types.is_bool_dtype(raw.dtype):
            first = raw[bad].iloc[0] if bad.any() else raw.iloc[0]
            raise FrameError(where, f"must hold numbers, found {first!r} ({raw.dtype})")
        raw = numbers
    values = np.asarray(raw, dtype=np.float64)
    if np.isinf(values).any():
        raise FrameError(where, "holds infinite values")
    return values


def _stream_frame(
    key: str, frame: object, unit: str | None
) -> tuple[SampleStream, str, F64Array, F64Array, dict[str, Any]]:
    stream, _, device = key.partition("@")
    if stream not in contract.SAMPLE_STREAMS:
        raise FrameError(
            repr(key), f"not a stream; name each DataFrame by its stream: {_expected()}"
        )
    if not isinstance(frame, pd.DataFrame):
        raise FrameError(repr(key), f"must be a pandas DataFrame, not {type(frame).__name__}")
    wanted = _columns_of(stream)
    found = [str(c) for c in frame.columns]
    missing = [c for c in wanted[1:] if c not in frame.columns]
    has_time = "time" in frame.columns or isinstance(frame.index, pd.DatetimeIndex)
    if missing or not has_time:
        lacking = ([] if has_time else ["time"]) + missing
        raise FrameError(
            f"{key!r}",
            f"missing column {', '.join(repr(c) for c in lacking)}; {stream} needs "
            f"columns {', '.join(wanted)} (time in unix seconds or date-times, values in "
            f"{contract.UNITS[stream]}); found {', '.join(found) or 'none'}",
        )
    times = _unix_seconds(
        f"{key!r} column 'time'", frame["time"] if "time" in frame.columns else frame.index
    )
    parts = [_numbers(f"{key!r} column {c!r}", frame[c]) for c in wanted[1:]]
    values = np.column_stack(parts) if stream == "acc" else parts[0]
    unit = unit if unit is not None else frame.attrs.get("unit")
    if unit is not None and unit != contract.UNITS[stream]:
        converted = unit_table.convert(stream, str(unit), values)
        if converted is None:
            raise FrameError(
                f"{key!r}",
                f"unit {unit!r} is not one of {unit_table.accepted(stream)} "
                f"(the analysis works in {contract.UNITS[stream]})",
            )
        values = converted
    missing_value = np.isnan(values) if values.ndim == 1 else np.isnan(values).any(axis=1)
    keep = ~missing_value
    dropped = not keep.all()
    times, values = times[keep], values[keep]
    bad = np.flatnonzero(~(np.diff(times) > 0))
    if len(bad):
        row = frame.index[np.flatnonzero(keep)[bad[0] + 1]]
        raise FrameError(
            f"{key!r} column 'time'",
            f"times must increase; row {row!r} is not after the one before it "
            "(sort with frame.sort_values('time') and drop duplicate times)",
        )
    attrs: dict[str, Any] = {}
    if not dropped and "fs" in frame.attrs and "t0" in frame.attrs and len(times):
        t0, fs = float(frame.attrs["t0"]), float(frame.attrs["fs"])
        if np.array_equal(times, t0 + np.arange(len(times)) / fs):
            attrs.update(t0=t0, fs=fs)  # a regular stream from read(): sent as the file is
    if frame.attrs.get("grouping") is not None and not dropped:
        attrs["grouping"] = frame.attrs["grouping"]
    return stream, device or str(frame.attrs.get("device") or DEVICE), times, values, attrs


def _marker_frame(markers: Markers, device: str = DEVICE) -> pd.DataFrame:
    if isinstance(markers, pd.DataFrame):
        lacking = [c for c in ("time", "text") if c not in markers.columns]
        if lacking:
            raise FrameError(
                "markers",
                f"missing column {', '.join(repr(c) for c in lacking)}; markers have columns "
                f"time (unix seconds or date-times) and text; found "
                f"{', '.join(str(c) for c in markers.columns) or 'none'}",
            )
        times = _unix_seconds("markers column 'time'", markers["time"])
        texts = [str(t) for t in markers["text"]]
        devices = (
            [str(d) for d in markers["device"]]
            if "device" in markers.columns
            else [device] * len(texts)
        )
    else:
        pairs = list(markers)
        for i, pair in enumerate(pairs):
            if not isinstance(pair, tuple | list) or len(pair) != 2:
                raise FrameError(f"markers[{i}]", f"must be a (time, text) pair, not {pair!r}")
        times = _unix_seconds("markers time", _series([p[0] for p in pairs]))
        texts = [str(p[1]) for p in pairs]
        devices = [device] * len(texts)
    return pd.DataFrame({"time": times, "text": texts, "device": devices})


def recording_from_frames(
    frames: Mapping[str, pd.DataFrame],
    *,
    markers: Markers | None = None,
    units: Mapping[str, str] | None = None,
) -> Recording:
    """DataFrames per stream as a :class:`Recording`, checked (errors: :class:`FrameError`).

    Keys are stream names (``eda``, ``hr``, ``rr``, ``acc``, ``ppg``, ``ecg``, ``temp``; or
    ``stream@device``). Each DataFrame has a ``time`` column (unix seconds, or date-times; a
    DatetimeIndex also serves) and ``value`` (``x``, ``y``, ``z`` for ``acc``) in the wire
    contract's units (EDA µS, HR bpm, RR ms, temperature °C, acceleration g, ECG mV), or in the
    unit ``units[stream]`` names (e.g. ``{"eda": "nS"}``). Rows whose value is NaN are no sample.
    RR rows are beats: ``time`` the beat, ``value`` the interval before it.
    """
    rec = Recording()
    for key, frame in frames.items():
        if not isinstance(key, str):
            raise FrameError(repr(key), f"not a stream; name each DataFrame: {_expected()}")
        unit = (units or {}).get(key.partition("@")[0])
        stream, device, times, values, attrs = _stream_frame(key, frame, unit)
        out = (
            pd.DataFrame({"time": times, "x": values[:, 0], "y": values[:, 1], "z": values[:, 2]})
            if stream == "acc"
            else pd.DataFrame({"time": times, "value": values})
        )
        out.attrs.update(stream=stream, unit=contract.UNITS[stream], device=device, **attrs)
        rec.streams[key] = out
    if not rec.streams:
        raise FrameError("frames", f"no streams given; expected DataFrames for {_expected()}")
    rec.markers = (
        _marker_frame(markers) if markers is not None else pd.DataFrame(columns=MARKER_COLUMNS)
    )
    rec.metadata.update(
        source="DataFrames",
        format="DataFrames",
        devices={k: f.attrs["device"] for k, f in rec.streams.items()},
        units={k: f.attrs["unit"] for k, f in rec.streams.items()},
        rates={k: f.attrs["fs"] for k, f in rec.streams.items() if "fs" in f.attrs},
    )
    return rec


def _with_markers(rec: Recording, markers: Markers) -> Recording:
    extra = _marker_frame(markers)
    if extra.empty:
        return rec
    both = extra if rec.markers.empty else pd.concat([rec.markers, extra], ignore_index=True)
    both = both.sort_values("time", kind="stable", ignore_index=True)
    return Recording(dict(rec.streams), both, dict(rec.metadata))


def _phases(phases: Phases | None) -> list[tuple[str, float, float]]:
    if phases is None:
        return []
    if isinstance(phases, pd.DataFrame):
        label = "label" if "label" in phases.columns else "phase"
        lacking = [c for c in (label, "start", "end") if c not in phases.columns]
        if lacking:
            raise FrameError(
                "phases",
                f"missing column {', '.join(repr(c) for c in lacking)}; phases have columns "
                f"label (or phase), start, end (unix seconds or date-times)",
            )
        starts = _unix_seconds("phases column 'start'", phases["start"])
        ends = _unix_seconds("phases column 'end'", phases["end"])
        rows = list(zip((str(x) for x in phases[label]), starts, ends, strict=True))
    else:
        rows = []
        for i, row in enumerate(phases):
            if not isinstance(row, tuple | list) or len(row) != 3:
                raise FrameError(f"phases[{i}]", f"must be (label, start, end), not {row!r}")
            start = _unix_seconds(f"phases[{i}] start", _series([row[1]]))
            end = _unix_seconds(f"phases[{i}] end", _series([row[2]]))
            rows.append((str(row[0]), float(start[0]), float(end[0])))
    out = []
    for label, start, end in rows:
        if not end > start:
            raise FrameError(f"phase {label!r}", f"ends ({end}) before it starts ({start})")
        out.append((label, float(start), float(end)))
    return out


def _counted(chunks: Iterator[Chunk], counts: dict[str, int]) -> Iterator[Chunk]:
    for c in chunks:
        if c.stream != "marker":
            counts[c.stream] = counts.get(c.stream, 0) + len(c.values)
        yield c


def _warnings(rec: Recording, result: AnalysisResult, sent: Mapping[str, int]) -> list[str]:
    out: list[str] = []
    streams = {str(f.attrs["stream"]) for f in rec.streams.values()}
    # (the core's streams as a recording holds them: PPG when its beats are derived, not the
    # derived ``rr_ppg`` itself)
    core = [s for s in ANALYSED if s != DERIVED_STREAM]
    if result.params.get("ppg_beats", AnalysisConfig().ppg_beats) > 0:
        core.append("ppg")
    used = [*core, *(s for spec in registered() for s in spec.streams if s not in core)]
    unused = sorted(streams - set(used))
    if unused:
        out.append(f"not analysed: {', '.join(unused)} (the detectors use {', '.join(used)})")
    given: dict[str, int] = {}
    for f in rec.streams.values():
        given[str(f.attrs["stream"])] = given.get(str(f.attrs["stream"]), 0) + len(f)
    for stream in sorted(given):
        dropped = given[stream] - sent.get(stream, 0)
        if dropped > 0:
            low, high = contract.PHYSICAL_RANGE[stream]  # type: ignore[index]
            out.append(
                f"{stream}: {dropped} of {given[stream]} samples dropped, outside the physical "
                f"range [{low}, {high}] {contract.UNITS[stream]}"  # type: ignore[index]
            )
    seconds = len(result.features)
    for stream, states in seconds_by_quality(result).items():
        lost = states.get("lost", 0)
        if seconds and lost > LOST_WARNING * seconds:
            out.append(f"{stream}: lost for {lost} of {seconds} s ({100 * lost / seconds:.0f} %)")
    if result.features and all(r.arousal_index is None for r in result.features):
        out.append(
            "no arousal index: the recording is shorter than the baseline period, or EDA and "
            "HR were lost throughout (docs/method.md)"
        )
    if not result.features:
        out.append("no feature seconds: no EDA, HR, RR or ACC samples were analysed")
    return out


def _config(values: Mapping[str, object]) -> AnalysisConfig:
    """``params`` by the names of ``--param`` (``enter_index``, ``section.name``)."""
    for name in values:
        if not isinstance(name, str):
            raise ConfigError(repr(name), "parameter names are strings, as --param NAME=VALUE")
    return apply(values)


def analyze(
    data: Data,
    params: Mapping[str, object] | AnalysisConfig | None = None,
    *,
    markers: Markers | None = None,
    phases: Phases | None = None,
    metrics: bool = False,
    name: str | None = None,
    units: Mapping[str, str] | None = None,
    options: ReadOptions | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Run the live detectors over a recording: ``(features, episodes, info)``.

    ``data`` is a :class:`Recording`, the path of any supported recording (read with
    ``options``), or a mapping of DataFrames per stream (see :func:`recording_from_frames`,
    which ``units`` goes to). ``params`` maps parameter names (those of ``--param``) to values,
    or is an :class:`~rekindle.analysis.core.AnalysisConfig`; bad names or values raise
    :class:`~rekindle.analysis.core.errors.ConfigError`. ``markers`` are added to the
    recording's own; ``phases`` (``(label, start, end)``) get NeuroKit2 metrics and imply
    ``metrics``; ``metrics=True`` adds NeuroKit2's interval metrics per episode (``nk_*``
    columns) and per segment between markers (``info["segments"]``).

    ``features`` and ``episodes`` have the columns of ``features.csv`` and ``episodes.csv``;
    ``info`` holds the summary (quality seconds per stream, changed parameters, version,
    warnings, markers, segments) and the ``result`` that :func:`write` writes.
    """
    if isinstance(data, Recording):
        rec = data
    elif isinstance(data, str | os.PathLike):
        rec = read(Path(data), options)
    elif isinstance(data, Mapping):
        rec = recording_from_frames(data, units=units)
    else:
        raise FrameError(
            "data",
            f"expected a Recording, a path or a mapping of DataFrames per stream, not "
            f"{type(data).__name__}",
        )
    if markers is not None:
        rec = _with_markers(rec, markers)
    config = params if isinstance(params, AnalysisConfig) else _config(params or {})
    phase_rows = _phases(phases)
    metrics = metrics or bool(phase_rows)
    source = str(rec.metadata.get("source", "DataFrames"))
    if name is None:
        name = str(rec.metadata.get("name") or "recording")
    sent: dict[str, int] = {}
    result = run_pipeline(
        _counted(rec.chunks(), sent), name, config=config, keep=("eda", "rr") if metrics else ()
    )
    if metrics:
        add_metrics(result, config, phase_rows)
    features = schema.features_frame(result.features)
    episodes = schema.episodes_frame(result.episodes, result.episode_metrics)
    summ = summary(result)
    info: dict[str, Any] = {
        "name": name,
        "source": source,
        "format": rec.metadata.get("format"),
        "version": __version__,
        "start": result.start,
        "end": result.end,
        "duration_s": summ["duration_s"],
        "samples": result.samples,
        "episodes": summ["episodes"],
        "arousal_index": summ["arousal_index"],
        "quality": seconds_by_quality(result),
        "params_changed": dict(result.params),
        "params": asdict(config),
        "warnings": _warnings(rec, result, sent),
        "markers": schema.markers_frame(result.markers),
        "segments": schema.frame(segment_table(result.segments)) if metrics else None,
        "summary": summ,
        "result": result,
    }
    return features, episodes, info


def write(
    info: Mapping[str, Any],
    out: str | os.PathLike[str],
    *,
    formats: Sequence[str] = ("csv",),
    plots: bool = True,
) -> Path:
    """Write what ``rekindle analyze`` writes for the recording that :func:`analyze` gave
    ``info`` for, under ``out/<name>``: ``episodes.csv``, ``features.csv`` (``segments.csv``
    with metrics), ``summary.json``, ``report.md``, ``report.html`` and, with ``plots``,
    ``session.png``; Parquet too with ``formats=("csv", "parquet")``. Returns that folder."""
    result = info.get("result")
    if not isinstance(result, AnalysisResult):
        raise FrameError("info", "write() takes the info dict that analyze() returned")
    return write_results(result, Path(out), formats=("csv", *formats), plots=plots)
