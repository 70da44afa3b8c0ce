"""Researcher outputs of ``rekindle analyze``: per-stream quality and contribution columns,
Parquet beside CSV, the session PNG and the self-contained HTML report in a real Chromium."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.patches import Rectangle

from rekindle.analysis.core import AnalysisConfig, Episode
from rekindle.analysis.offline import AnalysisResult, run_pipeline, write_outputs
from rekindle.analysis.report import (
    DISCLAIMER,
    EPISODE_COLOURS,
    RECOVERY_FEATURE,
    html_report,
    plot_figure,
    recovery_start,
)
from rekindle.analysis.schema import episode_table, feature_table
from rekindle.ingest.sources.base import Chunk
from rekindle.ingest.sources.simulator import SimulationScript, simulate
from tests.browser import Browser
from tests.conftest import REPO, S02, fixture_path

LONG_MARKER = "client describes the accident in detail, long pause"


@pytest.fixture(scope="module")
def sim() -> AnalysisResult:
    """The simulator's default 30-min session (a surge with release, a fading one), plus two
    markers with long texts at the very start and end of the recording."""
    chunks = list(simulate(SimulationScript(), seed=3))
    start = min(c.start for c in chunks if c.stream != "marker")
    end = max(c.end for c in chunks if c.stream != "marker")
    chunks.insert(0, Chunk("marker", "clinician", (LONG_MARKER,), t=(start,)))
    chunks.append(Chunk("marker", "clinician", (LONG_MARKER + " (end)",), t=(end,)))
    return run_pipeline(iter(chunks), "sim", config=AnalysisConfig(exit_index=25.0))


def test_features_have_per_stream_quality_and_contribution_columns(sim: AnalysisResult) -> None:
    table = feature_table(sim.features)
    cols = table.columns
    for name in ("quality_eda", "quality_hr", "quality_rr", "quality_acc"):
        assert name in cols
    for name in ("contrib_eda", "contrib_hr", "contrib_rmssd"):
        assert name in cols
    # every scalar field of the row is a column of the same name, in field order (the mapping
    # fields become quality/quality_*, contrib_* and, for registered detectors, their fields)
    scalars = [
        f.name
        for f in fields(type(sim.features[0]))
        if f.name not in {"quality", "contributions", "extra"}
    ]
    assert cols[: len(scalars)] == scalars
    worst = {"lost": 0, "degraded": 1, "good": 2}
    with_index = 0
    for row, cells in zip(sim.features, table.rows, strict=True):
        rec = dict(zip(cols, cells, strict=True))
        for stream in ("eda", "hr", "rr", "acc"):
            assert rec[f"quality_{stream}"] == row.quality.get(stream)
        if row.quality:
            assert rec["quality"] == min(row.quality.values(), key=worst.__getitem__)
        contrib = [v for k, v in rec.items() if k.startswith("contrib_") and v is not None]
        assert sorted(contrib) == sorted(row.contributions.values())
        if row.arousal_index is not None and row.contributions:
            with_index += 1
            assert math.isclose(sum(contrib), row.arousal_index, rel_tol=1e-9, abs_tol=1e-9)  # type: ignore[arg-type]
    assert with_index > 1000


def test_s02_quality_columns_tell_which_stream_was_lost(tmp_path: Path) -> None:
    """The issue's example: S02's wrist RR was lost most of the session, EDA and HR never."""
    from rekindle.ingest.sources.e4 import read_e4_folder  # noqa: PLC0415

    result = run_pipeline(read_e4_folder(fixture_path(S02)), "S02")
    target = write_outputs(result, tmp_path)
    frame = pd.read_csv(target / "features.csv")
    lost = {s: float((frame[f"quality_{s}"] == "lost").mean()) for s in ("eda", "hr", "rr")}
    assert lost["eda"] == 0.0
    assert lost["hr"] == 0.0
    assert lost["rr"] > 0.5
    assert float((frame["quality"] == "lost").mean()) > 0.5  # the old single column's reading
    per_stream = json.loads((target / "summary.json").read_text())["seconds_by_quality_per_stream"]
    assert per_stream["rr"]["lost"] == int((frame["quality_rr"] == "lost").sum())


def test_parquet_beside_csv_holds_the_same_tables(sim: AnalysisResult, tmp_path: Path) -> None:
    target = write_outputs(sim, tmp_path, formats=("csv", "parquet"))
    for name in ("features", "episodes"):
        from_csv = pd.read_csv(
            target / f"{name}.csv",
            keep_default_na=False,
            na_values=[""],
            float_precision="round_trip",
        )
        from_parquet = pd.read_parquet(target / f"{name}.parquet")
        assert list(from_parquet.columns) == list(from_csv.columns)
        assert len(from_parquet) == len(from_csv) > 0
        for col in from_csv.columns:
            a, b = from_csv[col], from_parquet[col]
            if pd.api.types.is_numeric_dtype(b):
                assert b.dtype == np.float64
                np.testing.assert_array_equal(a.to_numpy(np.float64), b.to_numpy(), err_msg=col)
            else:
                assert a.fillna("").astype(str).tolist() == b.fillna("").tolist(), col
    assert not (tmp_path / "sim" / "nothing.parquet").exists()
    only_csv = write_outputs(sim, tmp_path / "csv")
    assert not list(only_csv.glob("*.parquet"))


def test_episode_columns_follow_the_episode_fields(sim: AnalysisResult) -> None:
    table = episode_table(sim.episodes)
    names = [f.name for f in fields(Episode)]
    expected = [{"recovery_latency": "recovery_latency_s"}.get(n, n) for n in names]
    expected.insert(expected.index("peak_index") + 1, "duration_s")
    assert table.columns == expected
    assert {"arousal", "release"} <= {r[0] for r in table.rows}
    for ep, row in zip(sim.episodes, table.rows, strict=True):
        assert dict(zip(table.columns, row, strict=True))["duration_s"] == ep.offset - ep.onset


def test_disclaimer_is_the_method_docs_paragraph() -> None:
    doc = (REPO / "docs" / "method.md").read_text(encoding="utf-8")
    para = doc.split("**What Rekindle's numbers are not.**", 1)[1].split("\n\n", 1)[0]
    assert " ".join(para.split()) == DISCLAIMER


def test_plot_has_legends_unclipped_markers_and_release_shading_over_the_recovery(
    sim: AnalysisResult,
) -> None:
    fig = plot_figure(sim)
    fig.canvas.draw()
    ax_hr, ax_eda, ax_idx, _ax_q = fig.axes[:4]

    def legend(ax: object) -> list[str]:
        leg = ax.get_legend()  # type: ignore[attr-defined]
        assert leg is not None
        return [t.get_text() for t in leg.get_texts()]

    assert legend(ax_hr) == ["HR (bpm)", "RMSSD (ms)"]
    assert legend(ax_eda) == ["tonic EDA (µS)", "SCR / min"]
    assert legend(ax_idx) == ["arousal index", "enter 50", "exit 25"]
    # marker labels (long texts, first and last second of the data) inside the image
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    labels = [t for t in ax_hr.texts if t.get_text().startswith(LONG_MARKER[:10])]
    assert len(labels) == 2
    box = fig.bbox
    for text in labels:
        ext = text.get_window_extent(renderer)
        assert box.x0 <= ext.x0, (ext, box)
        assert ext.x1 <= box.x1, (ext, box)
        assert box.y0 <= ext.y0, (ext, box)
        assert ext.y1 <= box.y1, (ext, box)
    # release shading: from the recovering signal's own peak (not over its rise) to the offset
    start = sim.start or 0.0
    green = [
        p
        for p in ax_hr.patches
        if np.allclose(p.get_facecolor()[:3], _rgb(EPISODE_COLOURS["release"]))
    ]
    releases = [e for e in sim.episodes if e.kind == "release"]
    assert releases
    assert len(green) == len(releases)
    for ep, patch in zip(releases, green, strict=True):
        assert isinstance(patch, Rectangle)
        x0, x1 = patch.get_x(), patch.get_x() + patch.get_width()
        assert math.isclose(x1, (ep.offset - start) / 60)
        began = recovery_start(ep, sim.features)
        assert math.isclose(x0, (began - start) / 60)
        assert ep.onset <= began < ep.offset
        name, sign = RECOVERY_FEATURE[ep.signals[0]]
        rise = [
            sign * v
            for r in sim.features
            if ep.onset <= r.time <= began and (v := getattr(r, name)) is not None
        ]
        at = next(getattr(r, name) for r in sim.features if r.time == began)
        assert sign * at == max(rise)  # nothing of the rise is shaded
        assert began > ep.onset  # and the rise was there to leave out


def _rgb(name: str) -> tuple[float, float, float]:
    from matplotlib.colors import to_rgb  # noqa: PLC0415

    r, g, b = to_rgb(name)
    return (r, g, b)


def test_html_report_is_self_contained_and_has_every_section(sim: AnalysisResult) -> None:
    page = html_report(sim, None)
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page
    for section in (
        "episodes",
        "markers",
        "quality",
        "quality-timeline",
        "index",
        "params",
        "disclaimer",
    ):
        assert f'id="{section}"' in page, section
    assert "exit_index" in page  # the changed parameter, with its default
    assert LONG_MARKER in page


def _blank(png: bytes) -> tuple[float, int]:
    """(share of pixels that differ from the most common colour, number of distinct colours)."""
    from matplotlib.image import imread  # noqa: PLC0415

    img = imread(io.BytesIO(png))
    flat = (img[..., :3] * 255).astype(np.uint8).reshape(-1, 3)
    colours, counts = np.unique(flat, axis=0, return_counts=True)
    return 1.0 - counts.max() / counts.sum(), len(colours)


@pytest.mark.slow
def test_html_reports_load_in_chromium_without_errors(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rekindle.cli",
            "analyze",
            str(fixture_path(S02)),
            "--out",
            str(out),
            "--format",
            "parquet",
            "--param",
            "enter_index=55",
            "--phases",
            str(fixture_path("stress_predict_e4/time_log_phases.csv")),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    target = out / "S02"
    assert (target / "features.parquet").exists()
    assert len(pd.read_parquet(target / "segments.parquet")) == 20  # 10 between tags, 10 phases
    with (target / "episodes.csv").open() as fh:
        episodes = list(csv.DictReader(fh))
    assert episodes
    report = (target / "report.html").read_text()
    assert "enter_index" in report
    broken = tmp_path / "broken.html"
    broken.write_text("<html><body><p>x</p><script>console.error('boom'); nosuch();</script>")
    with Browser(tmp_path / "profile") as browser:
        page = browser.load(
            (target / "report.html").as_uri(),
            (
                "document.getElementById('session-figure').naturalWidth",
                "document.querySelectorAll('#episodes tbody tr').length",
                "document.querySelectorAll('#markers tbody tr').length",
                "document.querySelectorAll('#quality-timeline rect').length",
                "document.getElementById('disclaimer').innerText",
                "document.querySelectorAll('#segments tbody tr').length",
            ),
        )
        index = browser.load(
            (out / "index.html").as_uri(),
            ("document.querySelector('#recordings a').getAttribute('href')",),
        )
        bad = browser.load(broken.as_uri())
    # the harness sees console errors and exceptions (so an empty list below means something)
    assert any("boom" in e for e in bad.errors)
    assert any("nosuch" in e for e in bad.errors)
    assert page.errors == []
    assert index.errors == []
    # nothing but the page itself was requested (the figure is a data URI)
    assert [u for u in page.requests if not u.startswith(("file:", "data:"))] == []
    values = list(page.values.values())
    assert values[0] == 1200  # the PNG decoded (12 in at 100 dpi)
    assert values[1] == len(episodes)
    assert values[2] == 9  # S02's e4 tags
    assert values[3] > 100  # many quality runs (rr comes and goes)
    assert "not a diagnosis" in values[4]
    assert values[5] == 20
    assert index.values["document.querySelector('#recordings a').getAttribute('href')"] == (
        "S02/report.html"
    )
    for shot in (page.screenshot, index.screenshot):
        assert shot[:8] == b"\x89PNG\r\n\x1a\n"
        share, colours = _blank(shot)
        assert share > 0.05, share
        assert colours > 50, colours
    (tmp_path / "report.png").write_bytes(page.screenshot)
    assert re.search(r"<td>S02</td>|>S02</a>", (out / "index.html").read_text())
