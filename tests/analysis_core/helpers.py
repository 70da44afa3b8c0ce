"""Helpers shared by the analysis-core tests: run an analyzer, compare event sequences."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from rekindle.analysis.core import (
    AnalysisConfig,
    EdaDecomposition,
    Episode,
    Event,
    FeatureRow,
    GapInput,
    MarkerInput,
    SampleBatch,
    SessionAnalyzer,
)


def run(
    items: Iterable[SampleBatch | MarkerInput | GapInput],
    config: AnalysisConfig | None = None,
    analyzer: SessionAnalyzer | None = None,
) -> list[Event]:
    """Every event of ``items`` fed to ``analyzer`` (a new one by default) and then finished."""
    analyzer = analyzer or SessionAnalyzer(config)
    out: list[Event] = []
    for item in items:
        out.extend(analyzer.update(item))
    out.extend(analyzer.finish())
    return out


def comparable(events: Sequence[Event]) -> list[object]:
    """Events as plain, exactly comparable values (arrays become tuples of floats)."""
    out: list[object] = []
    for e in events:
        if isinstance(e, EdaDecomposition):
            out.append(("eda", e.device, tuple(e.times), tuple(e.tonic), tuple(e.phasic)))
        elif isinstance(e, FeatureRow):
            out.append(
                (
                    e.time,
                    e.hr,
                    e.rmssd,
                    e.eda_tonic,
                    e.eda_phasic,
                    e.scr_rate,
                    e.arousal_index,
                    tuple(sorted(e.contributions.items())),
                    tuple(sorted(e.quality.items())),
                )
            )
        else:
            out.append(e)
    return out


def episodes(events: Sequence[Event], kind: str = "arousal") -> list[Episode]:
    return [e for e in events if isinstance(e, Episode) and e.kind == kind]


def rows(events: Sequence[Event]) -> list[FeatureRow]:
    return [e for e in events if isinstance(e, FeatureRow)]


def split(
    stream: str,
    device: str,
    times: np.ndarray,
    values: np.ndarray,
    sizes: Sequence[int],
) -> list[SampleBatch]:
    """Cut one stream into consecutive batches of the given sizes (cycled)."""
    out = []
    i = 0
    j = 0
    while i < len(times):
        n = max(1, sizes[j % len(sizes)])
        out.append(SampleBatch(stream, device, times[i : i + n], values[i : i + n]))  # type: ignore[arg-type]
        i += n
        j += 1
    return out


def merge(batches: Iterable[SampleBatch]) -> list[SampleBatch]:
    """Batches of several streams merged by their first sample time (stable)."""
    return sorted(batches, key=lambda b: float(b.times[0]))
