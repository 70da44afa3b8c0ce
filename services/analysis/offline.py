"""``rekindle analyze``: recordings through the live pipeline offline, no servers.

The chunks of a source become the same wire messages a replay would publish and go through the
same :class:`SessionPipeline`, so the episodes equal those of the live service for that replay.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

from rekindle.analysis.core import AnalysisConfig, Episode, Event, FeatureRow
from rekindle.analysis.errors import OutputError
from rekindle.analysis.intervals import Segment, Series, metric_columns
from rekindle.analysis.params import changed
from rekindle.analysis.pipeline import SessionPipeline
from rekindle.ingest.sources.base import Chunk

QUALITY_ORDER = {"lost": 0, "degraded": 1, "good": 2}
#: Streams in the order their per-stream columns appear; other keys follow alphabetically.
STREAM_ORDER = ("eda", "hr", "rr", "acc", "ppg", "ecg", "temp")
#: Mapping fields of :class:`FeatureRow` and the prefix their keys get as columns
#: (``quality_eda``, ``contrib_eda``, ...).
MAPPING_PREFIX = {"quality": "quality", "contributions": "contrib"}
#: Keys of those mappings that always get a column (so every recording's CSV has the same
#: columns); keys the core adds appear too.
MAPPING_KEYS = {"quality": ("eda", "hr", "rr", "acc"), "contributions": ("eda", "hr", "rmssd")}
#: Episode fields whose column name differs from the field name (units in the name).
EPISODE_RENAME = {"recovery_latency": "recovery_latency_s"}
#: Output formats of ``rekindle analyze --format``; CSV is always written.
FORMATS = ("csv", "parquet")

Cell: TypeAlias = float | str | None


@dataclass(slots=True)
class AnalysisResult:
    name: str
    episodes: list[Episode] = field(default_factory=list)
    features: list[FeatureRow] = field(default_factory=list)
    samples: int = 0
    markers: list[tuple[float, str]] = field(default_factory=list)
    start: float | None = None
    end: float | None = None
    #: Analysis parameters that differ from the defaults (reproducibility).
    params: dict[str, float | int] = field(default_factory=dict)
    #: Raw samples kept for the batch metrics (``run_pipeline(keep=...)``), per stream.
    signals: dict[str, Series] = field(default_factory=dict)
    #: NeuroKit2 metrics per episode (same order as ``episodes``; empty when not computed).
    episode_metrics: list[dict[str, float | str]] = field(default_factory=list)
    #: Segments between markers and labelled phases, with their NeuroKit2 metrics.
    segments: list[Segment] = field(default_factory=list)


def run_pipeline(
    chunks: Iterable[Chunk],
    name: str,
    *,
    site: str = "offline",
    session: str = "offline",
    config: AnalysisConfig | None = None,
    keep: Iterable[str] = (),
) -> AnalysisResult:
    """The session's events, markers and extent; with ``keep`` (stream names, e.g. ``("eda",
    "rr")``) also those streams' raw samples (of the device with most samples) for the batch
    metrics of :mod:`rekindle.analysis.intervals`."""
    pipeline = SessionPipeline(site, session, config, store_lines=False)
    result = AnalysisResult(name, params=changed(config) if config is not None else {})
    events: list[Event] = []
    kept = frozenset(keep)
    raw: dict[tuple[str, str], list[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]]] = {}
    for seq, chunk in enumerate(chunks):
        msg = chunk.to_message(site, session, seq, None)
        if chunk.stream in kept:
            raw.setdefault((chunk.stream, chunk.device), []).append(_samples(chunk))
        if chunk.stream == "marker":
            result.markers.extend(zip(chunk.t or (), (str(v) for v in chunk.values), strict=True))
        else:
            result.start = chunk.start if result.start is None else min(result.start, chunk.start)
            result.end = chunk.end if result.end is None else max(result.end, chunk.end)
        events.extend(pipeline.handle(msg).events)
    events.extend(pipeline.finish().events)
    result.samples = pipeline.samples
    result.episodes = [e for e in events if isinstance(e, Episode)]
    result.features = [e for e in events if isinstance(e, FeatureRow)]
    for stream in sorted(kept):
        parts = max(
            (v for (s, _d), v in raw.items() if s == stream),
            key=lambda ps: sum(len(p[0]) for p in ps),
            default=None,
        )
        if parts:
            times = np.concatenate([p[0] for p in parts])
            values = np.concatenate([p[1] for p in parts])
            order = np.argsort(times, kind="stable")
            result.signals[stream] = Series(times[order], values[order])
    return result


def _samples(chunk: Chunk) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    values = np.asarray(chunk.values, dtype=np.float64)
    if chunk.t is not None:
        return np.asarray(chunk.t, dtype=np.float64), values
    assert chunk.t0 is not None
    assert chunk.fs is not None
    return chunk.t0 + np.arange(len(values), dtype=np.float64) / chunk.fs, values


def add_metrics(
    result: AnalysisResult,
    config: AnalysisConfig | None = None,
    phases: Iterable[tuple[str, float, float]] = (),
) -> AnalysisResult:
    """NeuroKit2's interval-related metrics (:mod:`rekindle.analysis.intervals`) for each
    episode, each segment between markers and each labelled phase ``(label, start, end)``, from
    the raw EDA and RR that ``run_pipeline(keep=("eda", "rr"))`` kept."""
    from rekindle.analysis import intervals  # noqa: PLC0415 (NeuroKit2 is heavy; batch only)

    cfg = config or AnalysisConfig()
    eda, rr = result.signals.get("eda"), result.signals.get("rr")
    result.episode_metrics = intervals.episode_metrics(result.episodes, eda, rr, cfg)
    segments = intervals.marker_segments(result.markers, result.start, result.end)
    segments += intervals.phase_segments(phases)
    result.segments = intervals.segment_metrics(segments, eda, rr, cfg)
    return result


def _num(value: float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return repr(float(value))


def overall_quality(row: FeatureRow) -> str:
    if not row.quality:
        return ""
    return min(row.quality.values(), key=lambda s: QUALITY_ORDER.get(s, 0))


def _key_order(key: str) -> tuple[int, str]:
    return (STREAM_ORDER.index(key) if key in STREAM_ORDER else len(STREAM_ORDER), key)


def _cell(value: object) -> Cell:
    """One value as a table cell: numbers as float, tuples joined by commas, None kept."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


@dataclass(slots=True)
class Table:
    """Named columns and their rows: one schema for the CSV, the Parquet and the reports."""

    columns: list[str]
    rows: list[list[Cell]]

    def column(self, name: str) -> list[Cell]:
        i = self.columns.index(name)
        return [r[i] for r in self.rows]


def feature_table(rows: list[FeatureRow]) -> Table:
    """``features.csv``: every scalar field of :class:`FeatureRow` (in field order), ``quality``
    (the worst stream), then one column per key of each mapping field: ``quality_<stream>``
    (``good``/``degraded``/``lost``, empty before the stream is first seen) and
    ``contrib_<input>`` (index points; empty when that input did not contribute).

    Generic over the row's fields, so a field added to the core appears without change here.
    """
    scalars: list[str] = []
    mappings: dict[str, list[str]] = {}
    for f in fields(FeatureRow):
        if f.name in MAPPING_PREFIX or any(isinstance(getattr(r, f.name), Mapping) for r in rows):
            keys: set[str] = set(MAPPING_KEYS.get(f.name, ()))
            for r in rows:
                keys.update(getattr(r, f.name))
            mappings[f.name] = sorted(keys, key=_key_order)
        else:
            scalars.append(f.name)
    columns = [*scalars, "quality"]
    # quality first among the mapping fields (it is what a reader checks before the numbers)
    ordered = sorted(mappings, key=lambda n: (n != "quality", n))
    for name in ordered:
        prefix = MAPPING_PREFIX.get(name, name)
        columns += [f"{prefix}_{k}" for k in mappings[name]]
    out: list[list[Cell]] = []
    for r in rows:
        cells: list[Cell] = [_cell(getattr(r, n)) for n in scalars]
        cells.append(overall_quality(r) or None)
        for name in ordered:
            values: Mapping[str, object] = getattr(r, name)
            cells += [_cell(values.get(k)) for k in mappings[name]]
        out.append(cells)
    return Table(columns, out)


def episode_table(
    episodes: list[Episode], metrics: list[dict[str, float | str]] | None = None
) -> Table:
    """``episodes.csv``: every field of :class:`Episode` in field order (``signals`` joined by
    commas, ``recovery_latency`` as ``recovery_latency_s``) with ``duration_s`` after
    ``peak_index``, then the episode's NeuroKit2 metrics (``nk_*``) when computed."""
    names = [f.name for f in fields(Episode)]
    columns: list[str] = []
    for n in names:
        columns.append(EPISODE_RENAME.get(n, n))
        if n == "peak_index":
            columns.append("duration_s")
    if "duration_s" not in columns:
        columns.append("duration_s")
    at = columns.index("duration_s")
    out: list[list[Cell]] = []
    extra = metric_columns(metrics or [])
    columns += extra
    for i, ep in enumerate(episodes):
        cells = [_cell(getattr(ep, n)) for n in names]
        cells.insert(at, float(ep.offset - ep.onset))
        m = metrics[i] if metrics else {}
        cells += [_cell(m.get(c)) for c in extra]
        out.append(cells)
    return Table(columns, out)


SEGMENT_COLUMNS = ("kind", "label", "start", "end", "duration_s")


def segment_table(segments: list[Segment]) -> Table:
    """``segments.csv``: each segment between markers (``kind`` = ``segment``, labelled by the
    marker that opens it) and each labelled phase (``phase``), with its NeuroKit2 metrics."""
    extra = metric_columns(s.metrics for s in segments)
    rows: list[list[Cell]] = [
        [
            seg.kind,
            seg.label,
            seg.start,
            seg.end,
            seg.end - seg.start,
            *(_cell(seg.metrics.get(c)) for c in extra),
        ]
        for seg in segments
    ]
    return Table([*SEGMENT_COLUMNS, *extra], rows)


def _csv_cell(value: Cell) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return _num(value)


def write_csv(table: Table, path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(table.columns)
        writer.writerows([_csv_cell(c) for c in row] for row in table.rows)
    return path


def write_parquet(table: Table, path: Path) -> Path:
    """The table as Parquet (pyarrow): numeric columns float64 (NaN where the CSV is empty),
    text columns strings (null where the CSV is empty)."""
    try:
        import pyarrow as pa  # noqa: PLC0415 (only when Parquet is asked for)
        import pyarrow.parquet as pq  # noqa: PLC0415
    except ImportError as exc:
        raise OutputError(
            str(path), "Parquet output needs pyarrow: pip install pyarrow (or use --format csv)"
        ) from exc
    arrays = []
    for i in range(len(table.columns)):
        values = [r[i] for r in table.rows]
        if any(isinstance(v, str) for v in values):
            arrays.append(pa.array([None if v is None else str(v) for v in values], pa.string()))
        else:
            arrays.append(
                pa.array([math.nan if v is None else float(v) for v in values], pa.float64())
            )
    pq.write_table(pa.Table.from_arrays(arrays, names=table.columns), path)
    return path


def write_outputs(result: AnalysisResult, out_dir: Path, formats: Iterable[str] = ("csv",)) -> Path:
    """Write ``episodes.csv``, ``features.csv`` and ``summary.json`` under ``out_dir/name``, and
    ``episodes.parquet``/``features.parquet`` beside them when ``"parquet"`` is in ``formats``."""
    wanted = set(formats)
    unknown = wanted - set(FORMATS)
    if unknown:
        raise OutputError(
            ", ".join(sorted(unknown)), f"unknown output format; use one of {', '.join(FORMATS)}"
        )
    target = out_dir / result.name
    target.mkdir(parents=True, exist_ok=True)
    tables = {
        "episodes": episode_table(result.episodes, result.episode_metrics),
        "features": feature_table(result.features),
    }
    if result.segments:
        tables["segments"] = segment_table(result.segments)
    for name, table in tables.items():
        write_csv(table, target / f"{name}.csv")
        if "parquet" in wanted:
            write_parquet(table, target / f"{name}.parquet")
    (target / "summary.json").write_text(json.dumps(summary(result), indent=2) + "\n")
    return target


def seconds_by_quality(result: AnalysisResult) -> dict[str, dict[str, int]]:
    """Per stream, the number of feature seconds in each quality state."""
    out: dict[str, dict[str, int]] = {}
    for row in result.features:
        for stream, state in row.quality.items():
            counts = out.setdefault(stream, {})
            counts[state] = counts.get(state, 0) + 1
    return {k: out[k] for k in sorted(out, key=_key_order)}


def summary(result: AnalysisResult) -> dict[str, object]:
    duration = (result.end - result.start) if result.start is not None and result.end else 0.0
    index = [r.arousal_index for r in result.features if r.arousal_index is not None]
    counts = {k: sum(1 for e in result.episodes if e.kind == k) for k in ("arousal", "release")}
    states: dict[str, int] = {}
    for row in result.features:
        q = overall_quality(row)
        if q:
            states[q] = states.get(q, 0) + 1
    return {
        "source": result.name,
        "start": result.start,
        "end": result.end,
        "duration_s": duration,
        "samples": result.samples,
        "markers": [{"time": t, "text": s} for t, s in result.markers],
        "episodes": counts,
        "arousal_index": {
            "mean": sum(index) / len(index) if index else None,
            "max": max(index) if index else None,
        },
        "seconds_by_quality": states,
        "seconds_by_quality_per_stream": seconds_by_quality(result),
        "params_changed": result.params,
    }
