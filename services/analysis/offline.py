"""``rekindle analyze``: recordings through the live pipeline offline, no servers.

The chunks of a source become the same wire messages a replay would publish and go through the
same :class:`SessionPipeline`, so the episodes equal those of the live service for that replay.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from services.analysis.core import AnalysisConfig, Episode, Event, FeatureRow
from services.analysis.params import changed
from services.analysis.pipeline import SessionPipeline
from services.ingest.sources.base import Chunk

QUALITY_ORDER = {"lost": 0, "degraded": 1, "good": 2}
EPISODE_COLUMNS = (
    "kind",
    "onset",
    "peak",
    "offset",
    "peak_index",
    "duration_s",
    "signals",
    "recovery_depth",
    "recovery_latency_s",
)
FEATURE_COLUMNS = ("time", "hr", "rmssd", "eda_tonic", "scr_rate", "arousal_index", "quality")


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


def run_pipeline(
    chunks: Iterable[Chunk],
    name: str,
    *,
    site: str = "offline",
    session: str = "offline",
    config: AnalysisConfig | None = None,
) -> AnalysisResult:
    pipeline = SessionPipeline(site, session, config, store_lines=False)
    result = AnalysisResult(name, params=changed(config) if config is not None else {})
    events: list[Event] = []
    for seq, chunk in enumerate(chunks):
        msg = chunk.to_message(site, session, seq, None)
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
    return result


def _num(value: float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return repr(float(value))


def overall_quality(row: FeatureRow) -> str:
    if not row.quality:
        return ""
    return min(row.quality.values(), key=lambda s: QUALITY_ORDER.get(s, 0))


def write_outputs(result: AnalysisResult, out_dir: Path) -> Path:
    """Write ``episodes.csv``, ``features.csv`` and ``summary.json`` under ``out_dir/name``."""
    target = out_dir / result.name
    target.mkdir(parents=True, exist_ok=True)
    with (target / "episodes.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(EPISODE_COLUMNS)
        for ep in result.episodes:
            writer.writerow(
                [
                    ep.kind,
                    _num(ep.onset),
                    _num(ep.peak),
                    _num(ep.offset),
                    _num(ep.peak_index),
                    _num(ep.offset - ep.onset),
                    ",".join(ep.signals),
                    _num(ep.recovery_depth),
                    _num(ep.recovery_latency),
                ]
            )
    with (target / "features.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(FEATURE_COLUMNS)
        for row in result.features:
            writer.writerow(
                [
                    _num(row.time),
                    _num(row.hr),
                    _num(row.rmssd),
                    _num(row.eda_tonic),
                    _num(row.scr_rate),
                    _num(row.arousal_index),
                    overall_quality(row),
                ]
            )
    (target / "summary.json").write_text(json.dumps(summary(result), indent=2) + "\n")
    return target


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
        "params_changed": result.params,
    }
