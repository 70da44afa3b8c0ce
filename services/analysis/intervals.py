"""NeuroKit2's interval-related analyses on whole stretches of a session (batch, not causal).

The streaming core (``services/analysis/core``) decides *when* something happened, second by
second. Once a stretch is closed (an episode, a segment between two markers, a labelled phase)
NeuroKit2's validated batch methods describe it:

* EDA: ``nk.eda_process`` on the stretch's raw EDA, then ``nk.eda_intervalrelated`` (SCR count and
  mean amplitude, tonic SD, and EDA_Sympathetic / EDA_Autocorrelation when the stretch is long
  enough for them: > 64 s / > 30 s);
* HRV: ``nk.hrv_time`` on the stretch's clean RR intervals when it has at least
  :data:`MIN_BEATS` of them, and ``nk.hrv_frequency`` when they add up to at least
  :data:`MIN_FREQUENCY_S` (2 min).

"Clean" RR intervals are those inside the analysis' plausible range (``rr_min_ms`` to
``rr_max_ms``). Every metric is stored as ``nk_<NeuroKit2 name>`` (e.g. ``nk_HRV_RMSSD``,
``nk_SCR_Peaks_N``). Warnings NeuroKit2 raises on a stretch (e.g. for 4-Hz wrist EDA: "sampled
at very low frequency, skipping filtering") are kept in ``nk_notes`` rather than printed. No I/O.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from rekindle.analysis.core import AnalysisConfig, Episode

#: Fewest clean beats for the time-domain HRV of a stretch.
MIN_BEATS = 20
#: Least total duration of clean beats (s) for the frequency-domain HRV (NeuroKit2 and the Task
#: Force recommend >= 2 min for LF/HF).
MIN_FREQUENCY_S = 120.0
#: Least EDA (s) for ``eda_intervalrelated`` (NeuroKit2: "typically > 10 seconds").
MIN_EDA_S = 10.0

F64 = npt.NDArray[np.float64]


@dataclass(slots=True)
class Series:
    """Raw samples of one stream (the device with most samples), in time order."""

    times: F64
    values: F64

    def between(self, start: float, end: float) -> tuple[F64, F64]:
        i, j = np.searchsorted(self.times, [start, end], side="left")
        return self.times[i:j], self.values[i:j]


@dataclass(slots=True)
class Segment:
    """A stretch of the session: between two markers, or a labelled phase."""

    kind: str  # "segment" (between markers) or "phase"
    label: str
    start: float
    end: float
    metrics: dict[str, float | str] = field(default_factory=dict)


def sampling_rate(times: F64) -> float | int:
    """The sampling rate of regularly sampled ``times`` (median spacing): an ``int`` when it is
    a whole number of Hz (NeuroKit2 0.2.13 indexes with ``lag * sampling_rate``, which fails
    for a float), else rounded to 1e-6 Hz."""
    if len(times) < 2:
        return math.nan
    fs = 1.0 / float(np.median(np.diff(times)))
    return round(fs) if abs(fs - round(fs)) < 1e-6 else round(fs, 6)


def clean_rr(values: F64, config: AnalysisConfig) -> F64:
    return values[(values >= config.rr_min_ms) & (values <= config.rr_max_ms)]


def _first_row(frame: object) -> dict[str, float]:
    import pandas as pd  # noqa: PLC0415

    assert isinstance(frame, pd.DataFrame)
    row = frame.iloc[0]
    return {str(k): float(v) for k, v in row.items()}


def eda_metrics(times: F64, values: F64) -> dict[str, float]:
    """``nk.eda_intervalrelated`` of ``nk.eda_process`` on one stretch of raw EDA (µS)."""
    import neurokit2 as nk  # noqa: PLC0415 (heavy; batch only)

    fs = sampling_rate(times)
    processed, _info = nk.eda_process(values, sampling_rate=fs)
    # (a fresh ``output``: NeuroKit2 0.2.13's default dict is shared between calls; with
    # eda_process's columns every key is rewritten each call, but nothing here relies on that)
    return _first_row(nk.eda_intervalrelated(processed, sampling_rate=fs, output={}))


def hrv_input(times: F64, rr_ms: F64) -> dict[str, F64]:
    """NeuroKit2's interval input: RR in ms and their times in s from the stretch's first beat."""
    return {"RRI": rr_ms, "RRI_Time": times - times[0]}


def hrv_metrics(times: F64, rr_ms: F64) -> dict[str, float]:
    """``nk.hrv_time``, and ``nk.hrv_frequency`` when the beats cover >= 2 min."""
    import neurokit2 as nk  # noqa: PLC0415

    out = _first_row(nk.hrv_time(hrv_input(times, rr_ms)))
    if float(rr_ms.sum()) / 1000.0 >= MIN_FREQUENCY_S:
        out.update(_first_row(nk.hrv_frequency(hrv_input(times, rr_ms))))
    return out


def stretch_metrics(
    eda: Series | None,
    rr: Series | None,
    start: float,
    end: float,
    config: AnalysisConfig,
) -> dict[str, float | str]:
    """NeuroKit2's interval-related metrics of the stretch ``start <= t < end``."""
    out: dict[str, float | str] = {}
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if eda is not None:
            t, v = eda.between(start, end)
            out["nk_eda_s"] = len(t) / sampling_rate(t) if len(t) > 1 else 0.0
            if len(t) > 1 and t[-1] - t[0] >= MIN_EDA_S:
                out.update({f"nk_{k}": x for k, x in eda_metrics(t, v).items()})
            else:
                notes.append(f"EDA: less than {MIN_EDA_S:g} s")
        if rr is not None:
            t, v = rr.between(start, end)
            keep = (v >= config.rr_min_ms) & (v <= config.rr_max_ms)
            t, v = t[keep], v[keep]
            out["nk_clean_beats"] = float(len(v))
            if len(v) >= MIN_BEATS:
                out.update({f"nk_{k}": x for k, x in hrv_metrics(t, v).items()})
            else:
                notes.append(f"HRV: {len(v)} clean beats (< {MIN_BEATS})")
            if len(v) >= MIN_BEATS and float(v.sum()) / 1000.0 < MIN_FREQUENCY_S:
                notes.append("HRV frequency domain: less than 2 min of clean beats")
    notes += sorted({f"NeuroKit2: {w.message}" for w in caught})
    if notes:
        out["nk_notes"] = "; ".join(notes)
    return out


def episode_metrics(
    episodes: Sequence[Episode], eda: Series | None, rr: Series | None, config: AnalysisConfig
) -> list[dict[str, float | str]]:
    """The metrics of each episode's stretch, onset to offset (a release: surge onset to the
    confirmed recovery)."""
    return [stretch_metrics(eda, rr, ep.onset, ep.offset, config) for ep in episodes]


def marker_segments(
    markers: Iterable[tuple[float, str]], start: float | None, end: float | None
) -> list[Segment]:
    """The stretches between consecutive markers (and the session's start and end); each is
    labelled by the marker that opens it ("start" for the first)."""
    if start is None or end is None:
        return []
    cuts = sorted((t, text) for t, text in markers if start < t < end)
    bounds = [(start, "start"), *cuts, (end, "")]
    return [
        Segment("segment", label, a, b)
        for (a, label), (b, _) in itertools.pairwise(bounds)
        if b > a
    ]


def phase_segments(phases: Iterable[tuple[str, float, float]]) -> list[Segment]:
    return [Segment("phase", label, a, b) for label, a, b in phases if b > a]


def segment_metrics(
    segments: Sequence[Segment], eda: Series | None, rr: Series | None, config: AnalysisConfig
) -> list[Segment]:
    for seg in segments:
        seg.metrics = stretch_metrics(eda, rr, seg.start, seg.end, config)
    return list(segments)


def metric_columns(rows: Iterable[Mapping[str, object]]) -> list[str]:
    """The metric columns of ``rows`` in a stable order: counts, EDA, HRV time, HRV frequency,
    then the notes."""
    seen: dict[str, None] = {}
    for r in rows:
        seen.update(dict.fromkeys(r))

    def order(name: str) -> tuple[int, str]:
        if name == "nk_notes":
            return (9, name)
        if name in {"nk_eda_s", "nk_clean_beats"}:
            return (0, name)
        if name.startswith(("nk_SCR", "nk_EDA")):
            return (1, "")
        return (2, "")

    return sorted(seen, key=order)
