"""NeuroKit2's interval metrics per episode, per segment between markers and per labelled phase:
equal to NeuroKit2 called directly on the same stretch of the recording's own samples."""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Mapping
from pathlib import Path

import neurokit2 as nk
import numpy as np
import numpy.typing as npt
import pytest

from rekindle.analysis.batch import analyze_file
from rekindle.analysis.core import AnalysisConfig
from rekindle.analysis.evaluate import read_phases
from rekindle.analysis.intervals import (
    MIN_BEATS,
    Series,
    marker_segments,
    stretch_metrics,
)
from rekindle.analysis.offline import AnalysisResult, add_metrics, run_pipeline
from rekindle.analysis.report import html_report
from rekindle.ingest.sources.base import Chunk
from rekindle.ingest.sources.e4 import read_e4_folder
from rekindle.ingest.sources.simulator import SimulationScript, simulate
from tests.conftest import S02, fixture_path

F64 = npt.NDArray[np.float64]


def raw(chunks: list[Chunk], stream: str) -> tuple[F64, F64]:
    """The stream's samples with their times, straight from the source's chunks."""
    times: list[float] = []
    values: list[float] = []
    for c in chunks:
        if c.stream != stream:
            continue
        vals = [float(v) for v in c.values]  # type: ignore[arg-type]
        if c.t is not None:
            times += list(c.t)
        else:
            assert c.t0 is not None
            assert c.fs is not None
            times += [c.t0 + i / c.fs for i in range(len(vals))]
        values += vals
    order = np.argsort(times, kind="stable")
    return np.asarray(times)[order], np.asarray(values)[order]


def direct(
    eda: tuple[F64, F64], rr: tuple[F64, F64], start: float, end: float, cfg: AnalysisConfig
) -> dict[str, float]:
    """NeuroKit2 called directly on ``start <= t < end`` (what the docs say we compute)."""
    out: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t, v = eda
        m = (t >= start) & (t < end)
        if m.sum() > 1 and t[m][-1] - t[m][0] >= 10:
            signals, _ = nk.eda_process(v[m], sampling_rate=4)
            res = nk.eda_intervalrelated(signals, sampling_rate=4, output={})
            out.update({f"nk_{k}": float(x) for k, x in res.iloc[0].items()})
        t, v = rr
        m = (t >= start) & (t < end) & (v >= cfg.rr_min_ms) & (v <= cfg.rr_max_ms)
        out["nk_clean_beats"] = float(m.sum())
        if m.sum() >= MIN_BEATS:
            beats = {"RRI": v[m], "RRI_Time": t[m] - t[m][0]}
            out.update({f"nk_{k}": float(x) for k, x in nk.hrv_time(beats).iloc[0].items()})
            if v[m].sum() >= 120_000:
                out.update(
                    {f"nk_{k}": float(x) for k, x in nk.hrv_frequency(beats).iloc[0].items()}
                )
    return out


def same(ours: Mapping[str, object], theirs: Mapping[str, float]) -> None:
    """Our metrics (in memory or read back from a CSV) equal NeuroKit2's, bit for bit; NaN is
    an empty cell, and we report nothing NeuroKit2 did not."""
    skip = {"nk_notes", "nk_eda_s"}
    present = {k for k, v in ours.items() if k.startswith("nk_") and k not in skip and v != ""}
    assert present <= set(theirs), present - set(theirs)
    for k, expected in theirs.items():
        got = ours.get(k, "")
        if math.isnan(expected):
            assert got == "" or math.isnan(float(str(got))), k
        else:
            assert float(str(got)) == expected, k


@pytest.fixture(scope="module")
def sim_chunks() -> list[Chunk]:
    return list(simulate(SimulationScript(), seed=3))


@pytest.fixture(scope="module")
def sim(sim_chunks: list[Chunk]) -> AnalysisResult:
    result = run_pipeline(iter(sim_chunks), "sim", keep=("eda", "rr"))
    return add_metrics(result)


def test_episode_and_segment_metrics_equal_neurokit2_called_directly(
    sim: AnalysisResult, sim_chunks: list[Chunk]
) -> None:
    cfg = AnalysisConfig()
    eda, rr = raw(sim_chunks, "eda"), raw(sim_chunks, "rr")
    assert sim.episodes
    assert len(sim.episode_metrics) == len(sim.episodes)
    for ep, metrics in zip(sim.episodes, sim.episode_metrics, strict=True):
        same(metrics, direct(eda, rr, ep.onset, ep.offset, cfg))
        assert "nk_HRV_HF" in metrics  # the simulator's beats cover > 2 min of each episode
    assert [s.label for s in sim.segments] == ["start", "tears"]
    for seg in sim.segments:
        same(seg.metrics, direct(eda, rr, seg.start, seg.end, cfg))
    # 4-Hz EDA: NeuroKit2 warns it skips its filter; the warning is kept, not raised or printed
    assert "sampled at very low frequency" in str(sim.segments[0].metrics["nk_notes"])


def test_csv_and_report_carry_the_metrics_of_s02_and_its_phases(tmp_path: Path) -> None:
    """S02 through the command's own job: episodes.csv and segments.csv equal NeuroKit2 on the
    same stretches (also the phases of the labelled protocol), and the HTML report shows them."""
    phases_file = fixture_path("stress_predict_e4/time_log_phases.csv")
    phases = [(p.subject, p.phase, p.start, p.end) for p in read_phases(phases_file)]
    done = analyze_file(
        str(fixture_path(S02)), tmp_path, None, plots=False, metrics=True, phases=phases
    )
    assert done.error is None
    assert done.target is not None
    chunks = list(read_e4_folder(fixture_path(S02)))
    eda, rr = raw(chunks, "eda"), raw(chunks, "rr")
    cfg = AnalysisConfig()
    with (done.target / "episodes.csv").open() as fh:
        episodes = list(csv.DictReader(fh))
    assert len(episodes) == done.episodes > 0
    for row in episodes:
        same(dict(row), direct(eda, rr, float(row["onset"]), float(row["offset"]), cfg))
    with (done.target / "segments.csv").open() as fh:
        segments = list(csv.DictReader(fh))
    labelled = [s for s in segments if s["kind"] == "phase"]
    assert [s["label"] for s in labelled] == [p[1] for p in phases if p[0] == "S02"]
    assert sum(s["kind"] == "segment" for s in segments) == 10  # 9 tags cut S02 into 10
    for row in segments:
        same(dict(row), direct(eda, rr, float(row["start"]), float(row["end"]), cfg))
    stroop = next(s for s in labelled if s["label"] == "stroop")
    assert float(stroop["nk_HRV_RMSSD"]) > 0
    # S02's wrist RR never covers 2 min of a stretch: no frequency domain, and the note says so
    assert all(not s.get("nk_HRV_HF") for s in segments)
    assert "less than 2 min of clean beats" in stroop["nk_notes"]
    page = (done.target / "report.html").read_text()
    assert 'id="segments"' in page
    assert "NK RMSSD (ms)" in page
    assert "relax_after_stroop" in page


def test_segments_are_cut_at_markers_inside_the_recording() -> None:
    segs = marker_segments([(30.0, "b"), (10.0, "a"), (100.0, "late"), (0.0, "at start")], 0, 50)
    assert [(s.label, s.start, s.end) for s in segs] == [
        ("start", 0, 10.0),
        ("a", 10.0, 30.0),
        ("b", 30.0, 50),
    ]
    assert marker_segments([], None, None) == []


def test_no_rr_and_short_eda_are_stated_not_guessed() -> None:
    t = 1.7e9 + np.arange(0, 8, 0.25)
    m = stretch_metrics(Series(t, np.full(len(t), 2.0)), None, t[0], t[-1] + 1, AnalysisConfig())
    assert m["nk_notes"] == "EDA: less than 10 s"
    assert not any(k.startswith(("nk_SCR", "nk_HRV")) for k in m)
    page = html_report(AnalysisResult("empty"))
    assert 'id="segments"' not in page
