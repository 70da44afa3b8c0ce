"""``rekindle analyze``: recordings through the live pipeline offline, no servers.

The chunks of a source become the same wire messages a replay would publish and go through the
same :class:`SessionPipeline`, so the episodes equal those of the live service for that replay.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from rekindle.analysis import parallel_beats as parallel
from rekindle.analysis.core import AnalysisConfig, Episode, Event, FeatureRow
from rekindle.analysis.errors import OutputError
from rekindle.analysis.intervals import Segment, Series, metric_columns
from rekindle.analysis.params import changed
from rekindle.analysis.pipeline import SessionPipeline
from rekindle.analysis.schema import (
    SEGMENT_FIELDS,
    Cell,
    Table,
    cell,
    episode_table,
    feature_table,
    key_order,
    overall_quality,
    text_column,
)
from rekindle.ingest.coalesce import MAX_SPEED_MESSAGE_S, coalesce
from rekindle.ingest.sources.base import Chunk

#: Output formats of ``rekindle analyze --format``; CSV is always written.
FORMATS = ("csv", "parquet")


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
    #: Unrepaired gaps per stream, (count, seconds missing), as the live service recorded them
    #: (``AnalysisService.gap_summary``: seq gaps it gave up, publishers' gap records); empty
    #: for a file analysed offline, which holds no gap records.
    gaps: dict[str, tuple[int, float]] = field(default_factory=dict)


def run_pipeline(
    chunks: Iterable[Chunk],
    name: str,
    *,
    site: str = "offline",
    session: str = "offline",
    config: AnalysisConfig | None = None,
    keep: Iterable[str] = (),
    message_s: float = MAX_SPEED_MESSAGE_S,
    parallel_beats: bool = False,
    beats: parallel.BeatsProcess | None = None,
) -> AnalysisResult:
    """The session's events, markers and extent; with ``keep`` (stream names, e.g. ``("eda",
    "rr")``) also those streams' raw samples (of the device with most samples) for the batch
    metrics of :mod:`rekindle.analysis.intervals`.

    The pipeline gets the messages of ``rekindle replay --speed max``: each stream's chunks
    joined into messages of up to ``message_s`` of data (:func:`rekindle.ingest.coalesce`,
    every sample at its own nanosecond). The analysis does not depend on how the samples are
    batched (the core widens its lateness allowance by the longest message span, docs/method.md
    section 1): the outputs equal those of 1-s messages (``message_s=1``) bit for bit
    (tests/test_coalesce.py), at a fraction of the per-message cost.

    ``parallel_beats``: derive the beats from PPG in a second process
    (:mod:`rekindle.analysis.parallel_beats`; the same outputs, less wall time on a machine with
    a free core) when it is available, the beats are on and the chunks are in time order; the
    chunks are then all read before the analysis starts. Only for a process whose other threads
    do not matter to a ``fork`` (the command line; not a batch's worker beside others).
    ``beats``: such a process already started for these chunks by the caller, who closes it
    (:func:`~rekindle.analysis.parallel_beats.start_before_reading`)."""
    cfg = config or AnalysisConfig()
    result = AnalysisResult(name, params=changed(config) if config is not None else {})
    events: list[Event] = []
    kept = frozenset(keep)
    raw: dict[tuple[str, str], list[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]]] = {}

    def tapped() -> Iterator[Chunk]:
        # markers, extent and kept samples from the source's own chunks (their float times
        # as the source gave them)
        for chunk in chunks:
            if chunk.stream in kept:
                raw.setdefault((chunk.stream, chunk.device), []).append(_samples(chunk))
            if chunk.stream == "marker":
                result.markers.extend(
                    zip(chunk.t or (), (str(v) for v in chunk.values), strict=True)
                )
            else:
                start, end = chunk.start, chunk.end
                result.start = start if result.start is None else min(result.start, start)
                result.end = end if result.end is None else max(result.end, end)
            yield chunk

    with ExitStack() as stack:
        if beats is None and parallel_beats and cfg.ppg_beats > 0 and parallel.available():
            chunks = list(chunks)  # (read before the fork: a file is never read by both)
            if parallel.in_time_order(chunks) and any(c.stream == "ppg" for c in chunks):
                ppg = parallel.ppg_messages(chunks, message_s)
                beats = stack.enter_context(parallel.BeatsProcess(cfg, ppg))
        pipeline = SessionPipeline(
            site, session, config, store_lines=False, beats=beats, decomposition=False
        )
        for seq, chunk in enumerate(coalesce(tapped(), message_s)):
            events.extend(pipeline.handle(chunk.to_message(site, session, seq, None)).events)
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


SEGMENT_COLUMNS = tuple(f.name for f in SEGMENT_FIELDS)


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
            *(cell(seg.metrics.get(c)) for c in extra),
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
    text columns (:func:`~rekindle.analysis.schema.text_column`) strings (null where the CSV is
    empty)."""
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
        if text_column(table.columns[i], values):
            arrays.append(pa.array([None if v is None else str(v) for v in values], pa.string()))
        else:
            arrays.append(
                pa.array([math.nan if v is None else float(v) for v in values], pa.float64())
            )
    pq.write_table(pa.Table.from_arrays(arrays, names=table.columns), path)
    return path


def write_outputs(
    result: AnalysisResult,
    out_dir: Path,
    formats: Iterable[str] = ("csv",),
    *,
    info: dict[str, object] | None = None,
) -> Path:
    """Write ``episodes.csv``, ``features.csv`` and ``summary.json`` under ``out_dir/name``, and
    ``episodes.parquet``/``features.parquet`` beside them when ``"parquet"`` is in ``formats``
    (``info``: :func:`summary` of ``result`` when the caller has it already)."""
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
    (target / "summary.json").write_text(
        json.dumps(summary(result) if info is None else info, indent=2) + "\n"
    )
    return target


def seconds_by_quality(result: AnalysisResult) -> dict[str, dict[str, int]]:
    """Per stream, the number of feature seconds in each quality state."""
    out: dict[str, dict[str, int]] = {}
    for row in result.features:
        for stream, state in row.quality.items():
            counts = out.setdefault(stream, {})
            counts[state] = counts.get(state, 0) + 1
    return {k: out[k] for k in sorted(out, key=key_order)}


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
        "gaps": {
            stream: {"count": count, "seconds": seconds}
            for stream, (count, seconds) in sorted(result.gaps.items(), key=lambda kv: kv[0])
        },
        "params_changed": result.params,
    }
