"""Researcher outputs of ``rekindle analyze``: a session plot (PNG), a Markdown report, a
self-contained HTML report per recording and an ``index.html`` for a batch.

Only files are written here; the numbers come from :class:`AnalysisResult` and the tables of
:mod:`rekindle.analysis.offline` (the same columns as ``episodes.csv``/``features.csv``).
The HTML loads nothing from the network: the figure is a PNG data URI, the quality timeline an
inline SVG, the style inline.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from rekindle.analysis import params, schema
from rekindle.analysis.core import AnalysisConfig, Episode, FeatureRow
from rekindle.analysis.offline import (
    AnalysisResult,
    segment_table,
    summary,
)
from rekindle.analysis.schema import STREAM_ORDER, Cell, Table, episode_table

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: docs/method.md, "What Rekindle's numbers are not" (a test keeps the two equal).
DISCLAIMER = (
    "The arousal index and the episodes describe changes in autonomic signals (skin "
    "conductance, heart rate, heart-rate variability) relative to the same person's own "
    "preceding minutes in the same session. They are not a diagnosis, not a measure of emotion "
    "(fear, joy and physical effort can look alike), not comparable between people, and not "
    "validated as a clinical decision tool. A missing episode does not mean nothing happened; an "
    "episode does not mean something clinically relevant happened. Use them as a prompt to look "
    "at the person."
)
QUALITY_COLOURS = {"good": "#4caf50", "degraded": "#ffb300", "lost": "#e53935"}
EPISODE_COLOURS = {"arousal": "tab:orange", "release": "tab:green"}
#: Episode columns that hold unix times (shown as minutes since the start and clock time).
TIME_COLUMNS = frozenset({"onset", "peak", "offset", "confirmed", "start", "end"})
#: NeuroKit2 metrics the HTML report shows (column -> heading); the CSVs have all of them.
HTML_METRICS = {
    "nk_SCR_Peaks_N": "NK SCRs",
    "nk_SCR_Peaks_Amplitude_Mean": "NK SCR amp. (µS)",
    "nk_EDA_Tonic_SD": "NK tonic SD (µS)",
    "nk_clean_beats": "NK clean beats",
    "nk_HRV_MeanNN": "NK mean NN (ms)",
    "nk_HRV_RMSSD": "NK RMSSD (ms)",
    "nk_HRV_SDNN": "NK SDNN (ms)",
    "nk_HRV_LF": "NK LF",
    "nk_HRV_HF": "NK HF",
    "nk_HRV_LFHF": "NK LF/HF",
    "nk_notes": "NK notes",
}
#: Longest marker label drawn on the plot (the full text is in the reports).
MARKER_LABEL_CHARS = 24


def _minutes(t: float, start: float) -> float:
    return (t - start) / 60.0


def config_of(result: AnalysisResult) -> AnalysisConfig:
    """The configuration the result was computed with (defaults plus the changed parameters)."""
    return params.apply(result.params)


@dataclass(frozen=True, slots=True)
class QualityRun:
    """``stream`` was in ``state`` for the feature seconds ``start <= t < end``."""

    stream: str
    state: str
    start: float
    end: float


def quality_runs(rows: Sequence[FeatureRow]) -> list[QualityRun]:
    """Runs of equal quality per stream (a row at time ``t`` covers ``[t - 1, t)``)."""
    runs: list[QualityRun] = []
    open_: dict[str, tuple[str, float, float]] = {}
    for row in rows:
        for stream, state in row.quality.items():
            cur = open_.get(stream)
            if cur is not None and cur[0] == state and cur[2] == row.time - 1.0:
                open_[stream] = (state, cur[1], row.time)
            else:
                if cur is not None:
                    runs.append(QualityRun(stream, cur[0], cur[1] - 1.0, cur[2]))
                open_[stream] = (state, row.time, row.time)
    runs += [QualityRun(s, st, a - 1.0, b) for s, (st, a, b) in open_.items()]
    return runs


#: Recovery signal of a release -> (feature field, +1 if its surge is a rise, -1 if a fall).
RECOVERY_FEATURE = {"hr": ("hr", 1.0), "rmssd": ("rmssd", -1.0), "eda": ("eda_tonic", 1.0)}


def recovery_start(ep: Episode, rows: Sequence[FeatureRow]) -> float:
    """When a release's recovery began: the own peak of its leading signal (the first listed:
    heart rate, which carries every release; RMSSD is listed when it recovered too), searched
    between the surge onset and the moment the recovery criterion was first met. The surge peak
    (``ep.peak``) is when the *index* peaked; a heart-rate surge can keep rising for minutes after
    it, and shading from there would cover the rise."""
    met = ep.peak + (ep.recovery_latency or 0.0)
    starts = []
    for signal in ep.signals[:1]:
        name, sign = RECOVERY_FEATURE.get(signal, ("", 0.0))
        best: tuple[float, float] | None = None
        for r in rows:
            if r.time < ep.onset or r.time > met:
                continue
            value = getattr(r, name, None) if name else None
            if value is not None and (best is None or sign * value > best[0]):
                best = (sign * value, r.time)
        if best is not None:
            starts.append(best[1])
    return min(starts) if starts else ep.peak


def _streams(rows: Sequence[FeatureRow]) -> list[str]:
    seen: set[str] = set()
    for r in rows:
        seen.update(r.quality)
    return sorted(seen, key=lambda k: (STREAM_ORDER.index(k) if k in STREAM_ORDER else 99, k))


# --- the PNG ---------------------------------------------------------------------------------


def plot_figure(result: AnalysisResult) -> Figure:
    """HR and RMSSD, tonic EDA and SCR rate, the arousal index with its thresholds, and the
    per-stream quality timeline; arousal episodes shaded onset to offset, releases only over
    their recovery (surge peak to confirmed recovery); markers as dashed lines labelled above
    the top panel. Every line has a legend entry."""
    # heavy: imported only when a plot is asked for; no pyplot (no global state, thread-safe)
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415
    from matplotlib.lines import Line2D  # noqa: PLC0415
    from matplotlib.patches import Patch  # noqa: PLC0415

    start = result.start if result.start is not None else 0.0
    rows = result.features
    t = [_minutes(r.time, start) for r in rows]
    cfg = config_of(result)

    def series(name: str) -> list[float]:
        out = []
        for r in rows:
            value = getattr(r, name)
            out.append(math.nan if value is None else float(value))
        return out

    streams = _streams(rows)
    fig = Figure(figsize=(12, 9.5))
    canvas = FigureCanvasAgg(fig)
    grid = fig.add_gridspec(4, 1, height_ratios=[3, 3, 3, 0.4 + 0.35 * max(1, len(streams))])
    ax_hr = fig.add_subplot(grid[0])
    ax_eda = fig.add_subplot(grid[1], sharex=ax_hr)
    ax_idx = fig.add_subplot(grid[2], sharex=ax_hr)
    ax_q = fig.add_subplot(grid[3], sharex=ax_hr)
    axes = (ax_hr, ax_eda, ax_idx, ax_q)

    (hr_line,) = ax_hr.plot(t, series("hr"), color="tab:red", lw=0.8, label="HR (bpm)")
    ax_hr.set_ylabel("HR (bpm)")
    ax_rmssd = ax_hr.twinx()
    (rmssd_line,) = ax_rmssd.plot(
        t, series("rmssd"), color="tab:purple", lw=0.8, label="RMSSD (ms)"
    )
    ax_rmssd.set_ylabel("RMSSD (ms)")
    ax_hr.legend(handles=[hr_line, rmssd_line], loc="upper left", fontsize=8, framealpha=0.8)

    (tonic_line,) = ax_eda.plot(
        t, series("eda_tonic"), color="tab:blue", lw=0.8, label="tonic EDA (µS)"
    )
    ax_eda.set_ylabel("tonic EDA (µS)")
    ax_scr = ax_eda.twinx()
    (scr_line,) = ax_scr.plot(t, series("scr_rate"), color="tab:cyan", lw=0.6, label="SCR / min")
    ax_scr.set_ylabel("SCR / min")
    ax_eda.legend(handles=[tonic_line, scr_line], loc="upper left", fontsize=8, framealpha=0.8)

    (index_line,) = ax_idx.plot(
        t, series("arousal_index"), color="black", lw=0.8, label="arousal index"
    )
    enter = ax_idx.axhline(
        cfg.enter_index, color="tab:orange", lw=0.9, ls="--", label=f"enter {cfg.enter_index:g}"
    )
    exit_ = ax_idx.axhline(
        cfg.exit_index, color="tab:olive", lw=0.9, ls=":", label=f"exit {cfg.exit_index:g}"
    )
    ax_idx.set_ylim(0, 100)
    ax_idx.set_ylabel("arousal index")
    ax_idx.legend(handles=[index_line, enter, exit_], loc="upper left", fontsize=8, framealpha=0.8)

    for i, stream in enumerate(streams):
        for state, colour in QUALITY_COLOURS.items():
            spans = [
                (_minutes(r.start, start), (r.end - r.start) / 60.0)
                for r in quality_runs(rows)
                if r.stream == stream and r.state == state
            ]
            if spans:
                ax_q.broken_barh(spans, (i - 0.4, 0.8), color=colour, lw=0)
    ax_q.set_yticks(range(len(streams)), streams)
    ax_q.set_ylim(-0.6, max(1, len(streams)) - 0.4)
    ax_q.invert_yaxis()
    ax_q.set_ylabel("quality", rotation=0, ha="right", va="center")
    ax_q.legend(
        handles=[Patch(color=c, label=s) for s, c in QUALITY_COLOURS.items()],
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
        fontsize=7,
        frameon=False,
    )
    ax_q.set_xlabel(
        "minutes since " + datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    )

    for ep in result.episodes:
        # a release is the recovery after a surge: shade the recovery only, not the rise
        lo = ep.onset if ep.kind == "arousal" else recovery_start(ep, rows)
        for ax in axes[:3]:
            ax.axvspan(
                _minutes(lo, start),
                _minutes(ep.offset, start),
                color=EPISODE_COLOURS[ep.kind],
                alpha=0.15 if ep.kind == "arousal" else 0.25,
                lw=0,
            )
    labels = []
    for when, text in result.markers:
        for ax in axes:
            ax.axvline(_minutes(when, start), color="grey", lw=0.6, ls="--")
        short = text if len(text) <= MARKER_LABEL_CHARS else text[: MARKER_LABEL_CHARS - 1] + "…"
        labels.append(
            ax_hr.annotate(
                short,
                (_minutes(when, start), 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(0, 2),
                textcoords="offset points",
                fontsize=7,
                rotation=90,
                ha="center",
                va="bottom",
                color="dimgrey",
                annotation_clip=False,
            )
        )
    counts = {k: sum(e.kind == k for e in result.episodes) for k in EPISODE_COLOURS}
    for ax in axes[:3]:
        ax.tick_params(labelbottom=False)
    fig.legend(
        handles=[
            Patch(color=EPISODE_COLOURS["arousal"], alpha=0.3, label="arousal episode"),
            Patch(color=EPISODE_COLOURS["release"], alpha=0.4, label="release (recovery)"),
            Line2D([], [], color="grey", lw=0.6, ls="--", label="marker"),
        ],
        loc="upper right",
        ncols=3,
        fontsize=8,
        frameon=False,
    )
    title = fig.suptitle(
        f"{result.name}: {counts['arousal']} arousal, {counts['release']} release episodes",
        x=0.01,
        ha="left",
    )
    fig.tight_layout()
    _fit_top(fig, canvas.get_renderer(), title, labels)  # type: ignore[no-untyped-call]
    return fig


def _fit_top(fig: Figure, renderer: Any, title: Any, texts: Iterable[Any]) -> None:
    """Lower the panels until the marker labels (drawn above the top panel) fit under the
    title and the legend, so none is clipped at the top edge of the image."""
    texts = list(texts)
    if not texts:
        return
    height = fig.bbox.height
    ceiling = height - title.get_window_extent(renderer).height - 24
    for _ in range(3):
        top = max(t.get_window_extent(renderer).y1 for t in texts)
        if top <= ceiling:
            return
        fig.subplots_adjust(top=fig.subplotpars.top - (top - ceiling) / height)


def write_plot(result: AnalysisResult, path: Path) -> Path:
    """The session figure as a PNG."""
    fig = plot_figure(result)
    fig.savefig(path, dpi=100)
    return path


# --- Markdown --------------------------------------------------------------------------------


def _clock(t: float | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S")


def _per_stream(info: dict[str, object]) -> dict[str, dict[str, int]]:
    """Seconds per quality state per stream, as :func:`~rekindle.analysis.offline.summary`
    counted them (once for both reports)."""
    return cast(dict[str, dict[str, int]], info["seconds_by_quality_per_stream"])


def _quality_lines(per_stream: dict[str, dict[str, int]]) -> list[str]:
    lines = ["| stream | good (s) | degraded (s) | lost (s) | lost % |", "|---|---|---|---|---|"]
    for stream, counts in per_stream.items():
        total = sum(counts.values())
        lost = counts.get("lost", 0)
        lines.append(
            f"| {stream} | {counts.get('good', 0)} | {counts.get('degraded', 0)} | {lost} "
            f"| {100.0 * lost / total:.0f} |"
        )
    return lines


def write_report(
    result: AnalysisResult,
    path: Path,
    plot_name: str | None,
    *,
    info: dict[str, object] | None = None,
    features: list[list[str]] | None = None,
) -> Path:
    """``report.md``; ``info`` (:func:`~rekindle.analysis.offline.summary`) and ``features``
    (:func:`feature_summary`) of ``result`` when the caller has them already."""
    info = summary(result) if info is None else info
    start = result.start or 0.0
    lines = [
        f"# Rekindle session report: {result.name}",
        "",
        f"- recording: {_clock(result.start)} to {_clock(result.end)} UTC "
        f"({float(str(info['duration_s'])) / 60:.1f} min), {result.samples} samples",
        f"- episodes: {sum(e.kind == 'arousal' for e in result.episodes)} arousal, "
        f"{sum(e.kind == 'release' for e in result.episodes)} release",
        "- analysis parameters: "
        + (
            ", ".join(f"{k}={v}" for k, v in sorted(result.params.items())) + " (others default)"
            if result.params
            else "defaults"
        ),
        "",
        DISCLAIMER,
        "",
    ]
    if plot_name:
        lines += [f"![session]({plot_name})", ""]
    lines += ["## Signal quality (seconds per state)", "", *_quality_lines(_per_stream(info)), ""]
    lines += [
        "## Episodes",
        "",
        "| kind | onset (min) | peak (min) | offset (min) | duration (s) | peak index | signals "
        "| recovery depth | recovery latency (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for ep in result.episodes:
        depth = "" if ep.recovery_depth is None else f"{ep.recovery_depth:.2f}"
        latency = "" if ep.recovery_latency is None else f"{ep.recovery_latency:.0f}"
        lines.append(
            f"| {ep.kind} | {_minutes(ep.onset, start):.1f} | {_minutes(ep.peak, start):.1f} "
            f"| {_minutes(ep.offset, start):.1f} | {ep.offset - ep.onset:.0f} "
            f"| {ep.peak_index:.0f} | {', '.join(ep.signals)} | {depth} | {latency} |"
        )
    if not result.episodes:
        lines.append("| (none) | | | | | | | | |")
    lines += [
        "",
        "## Features (per second)",
        "",
        "| feature | unit | seconds with a value | mean | min | max |",
        "|---|---|---|---|---|---|",
        *(
            "| " + " | ".join(row) + " |"
            for row in (feature_summary(result) if features is None else features)
        ),
    ]
    if result.markers:
        lines += ["", "## Markers", ""]
        lines += [f"- {_minutes(t, start):.1f} min: {text}" for t, text in result.markers]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- HTML ------------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1250px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.4em 0; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { background: #f0f0f0; } td.text, th.text { text-align: left; }
td.text { max-width: 28em; }
.note { background: #fff8e1; border-left: 4px solid #ffb300; padding: 0.6em 1em; }
img.figure { max-width: 100%; }
svg text { font-size: 11px; font-family: system-ui, sans-serif; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _fmt(value: Cell, column: str, start: float) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return _e(value)
    if not math.isfinite(value):
        return ""
    if column in TIME_COLUMNS:
        return f"{_minutes(value, start):.1f} ({_clock(value)})"
    if value == int(value) and abs(value) < 1e12:
        return str(int(value))
    return f"{value:.3g}" if abs(value) < 1e-2 else f"{value:.2f}"


def _table(columns: Sequence[str], rows: Iterable[Sequence[str]], css_id: str) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>\n" for row in rows)
    return f'<table id="{css_id}"><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table>'


def _shown(table: Table) -> Table:
    """``table`` without the NeuroKit2 columns that the HTML report does not show (all of them
    are in the CSV)."""
    keep = [i for i, c in enumerate(table.columns) if not c.startswith("nk_") or c in HTML_METRICS]
    return Table([table.columns[i] for i in keep], [[r[i] for i in keep] for r in table.rows])


def _html_table(table: Table, start: float, css_id: str) -> str:
    """``table`` as HTML: times as minutes (clock), numbers right-aligned, text left-aligned."""
    head = "".join(f"<th>{_e(HTML_METRICS.get(c, c))}</th>" for c in table.columns)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="text">{_fmt(c, col, start)}</td>'
            if isinstance(c, str)
            else f"<td>{_fmt(c, col, start)}</td>"
            for c, col in zip(r, table.columns, strict=True)
        )
        + "</tr>\n"
        for r in table.rows
    )
    return f'<table id="{css_id}"><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table>'


def quality_svg(result: AnalysisResult, width: int = 1200) -> str:
    """The per-stream quality timeline as inline SVG (one row per stream)."""
    rows = result.features
    streams = _streams(rows)
    if not rows or not streams:
        return "<p>No signal was seen.</p>"
    t0, t1 = rows[0].time - 1.0, rows[-1].time
    left, row_h = 50, 16
    span = max(t1 - t0, 1.0)
    scale = (width - left - 10) / span
    parts = [
        f'<svg id="quality-timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{row_h * len(streams) + 22}" role="img" aria-label="signal quality timeline">'
    ]
    for i, stream in enumerate(streams):
        parts.append(f'<text x="0" y="{i * row_h + 12}">{_e(stream)}</text>')
    for run in quality_runs(rows):
        x = left + (run.start - t0) * scale
        w = max((run.end - run.start) * scale, 0.5)
        y = streams.index(run.stream) * row_h + 2
        parts.append(
            f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row_h - 4}" '
            f'fill="{QUALITY_COLOURS.get(run.state, "#999")}">'
            f"<title>{_e(run.stream)} {_e(run.state)} {_minutes(run.start, t0):.1f}-"
            f"{_minutes(run.end, t0):.1f} min</title></rect>"
        )
    y = row_h * len(streams) + 16
    x = left
    for state, colour in QUALITY_COLOURS.items():
        parts.append(f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{x + 14}" y="{y}">{state}</text>')
        x += 90
    parts.append(f'<text x="{width - 190}" y="{y}">{span / 60:.1f} min in total</text>')
    parts.append("</svg>")
    return "".join(parts)


def feature_summary(result: AnalysisResult) -> list[list[str]]:
    """Per feature field of the schema (the registered detectors' too): its unit, the seconds
    with a value, and the mean, minimum and maximum over the recording."""
    out = []
    records = [schema.feature_values(r) for r in result.features]
    for f in schema.feature_fields():
        values = [v for rec in records if (v := rec.get(f.name)) is not None and math.isfinite(v)]
        stats = (
            [f"{math.fsum(values) / len(values):.3g}", f"{min(values):.3g}", f"{max(values):.3g}"]
            if values
            else ["", "", ""]
        )
        out.append([f.name, f.unit, str(len(values)), *stats])
    return out


def _features_table(features: list[list[str]]) -> str:
    rows = ([_e(c) for c in row] for row in features)
    head = ["feature", "unit", "seconds with a value", "mean", "min", "max"]
    return _table(head, rows, "features")


def html_report(
    result: AnalysisResult,
    plot: Path | None = None,
    *,
    info: dict[str, object] | None = None,
    features: list[list[str]] | None = None,
) -> str:
    """The report of one recording as one self-contained HTML document (``info`` and
    ``features`` as for :func:`write_report`)."""
    info = summary(result) if info is None else info
    start = result.start or 0.0
    cfg = config_of(result)
    duration = float(str(info["duration_s"]))
    index = [r.arousal_index for r in result.features if r.arousal_index is not None]
    above = sum(1 for v in index if v >= cfg.enter_index)
    counts = {k: sum(e.kind == k for e in result.episodes) for k in EPISODE_COLOURS}
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Rekindle report: {_e(result.name)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Rekindle session report: {_e(result.name)}</h1>",
        f'<p id="overview">Recording {_clock(result.start)} to {_clock(result.end)} UTC '
        f"({duration / 60:.1f} min), {result.samples} samples; "
        f"{counts['arousal']} arousal and {counts['release']} release episodes; "
        f"{len(result.markers)} markers.</p>",
        f'<p class="note" id="disclaimer"><b>What these numbers are not.</b> {_e(DISCLAIMER)}</p>',
        "<h2>Signals, index and episodes</h2>",
    ]
    if plot is not None:
        data = base64.b64encode(plot.read_bytes()).decode("ascii")
        out.append(
            f'<img class="figure" id="session-figure" src="data:image/png;base64,{data}" '
            f'alt="HR, RMSSD, EDA, SCR rate, arousal index and quality of {_e(result.name)}">'
        )
    else:
        out.append("<p>The figure was skipped (<code>--no-plots</code>).</p>")
    mean = sum(index) / len(index) if index else None
    out += [
        "<h2>Arousal index</h2>",
        _table(
            ["mean", "max", "enter threshold", "exit threshold", "seconds at or above enter"],
            [
                [
                    "" if mean is None else f"{mean:.1f}",
                    "" if not index else f"{max(index):.1f}",
                    f"{cfg.enter_index:g}",
                    f"{cfg.exit_index:g}",
                    str(above),
                ]
            ],
            "index",
        ),
        "<h2>Episodes</h2>",
        "<p>Times are minutes since the start (clock time UTC). A release's onset and peak are "
        "those of its surge; its offset is when recovery was confirmed.</p>",
    ]
    table = _shown(episode_table(result.episodes, result.episode_metrics))
    if table.rows:
        out.append(_html_table(table, start, "episodes"))
    else:
        out.append('<p id="episodes">No episodes.</p>')
    if result.segments:
        out += [
            "<h2>Segments and phases (NeuroKit2)</h2>",
            "<p>Each stretch between two markers (labelled by the marker that opens it) and each "
            "labelled phase, described by NeuroKit2's interval-related analyses; every metric is "
            "in <code>segments.csv</code>.</p>",
            _html_table(_shown(segment_table(result.segments)), start, "segments"),
        ]
    out += [
        "<h2>Features (per second)</h2>",
        _features_table(feature_summary(result) if features is None else features),
    ]
    out.append("<h2>Markers</h2>")
    if result.markers:
        out.append(
            _table(
                ["minutes", "clock (UTC)", "text"],
                ([f"{_minutes(t, start):.1f}", _clock(t), _e(s)] for t, s in result.markers),
                "markers",
            )
        )
    else:
        out.append('<p id="markers">No markers.</p>')
    out += ["<h2>Signal quality</h2>", quality_svg(result)]
    per_stream = _per_stream(info)
    out.append(
        _table(
            ["stream", "good (s)", "degraded (s)", "lost (s)", "lost %"],
            (
                [
                    _e(s),
                    str(c.get("good", 0)),
                    str(c.get("degraded", 0)),
                    str(c.get("lost", 0)),
                    f"{100.0 * c.get('lost', 0) / sum(c.values()):.0f}",
                ]
                for s, c in per_stream.items()
            ),
            "quality",
        )
    )
    out.append("<h2>Analysis parameters changed from the defaults</h2>")
    if result.params:
        out.append(
            _table(
                ["parameter", "value", "default"],
                ([_e(k), _e(v), _e(params.default(k))] for k, v in sorted(result.params.items())),
                "params",
            )
        )
    else:
        out.append('<p id="params">None: every parameter has its default (docs/method.md).</p>')
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_html(
    result: AnalysisResult,
    path: Path,
    plot: Path | None = None,
    *,
    info: dict[str, object] | None = None,
    features: list[list[str]] | None = None,
) -> Path:
    page = html_report(result, plot, info=info, features=features)
    path.write_text(page, encoding="utf-8")
    return path


def index_html(targets: Sequence[Path]) -> str:
    """A batch's index: one row per recording (read from its ``summary.json``, so it works for
    recordings analysed in other processes), linking to its ``report.html``."""
    summaries = [json.loads((t / "summary.json").read_text(encoding="utf-8")) for t in targets]
    streams: list[str] = []
    for info in summaries:
        streams += [s for s in _per_stream(info) if s not in streams]
    columns = [
        "recording",
        "minutes",
        "arousal",
        "release",
        "markers",
        "mean index",
        "max index",
        *(f"{s} lost %" for s in streams),
    ]
    rows = []
    for target, info in zip(targets, summaries, strict=True):
        per_stream = _per_stream(info)
        lost = [
            (
                f"{100.0 * per_stream[s].get('lost', 0) / sum(per_stream[s].values()):.0f}"
                if s in per_stream
                else ""
            )
            for s in streams
        ]
        index = info["arousal_index"]
        rows.append(
            [
                f'<a href="{_e(target.name)}/report.html">{_e(info["source"])}</a>',
                f"{float(info['duration_s']) / 60:.1f}",
                str(info["episodes"]["arousal"]),
                str(info["episodes"]["release"]),
                str(len(info["markers"])),
                "" if index["mean"] is None else f"{index['mean']:.1f}",
                "" if index["max"] is None else f"{index['max']:.1f}",
                *lost,
            ]
        )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8"><title>Rekindle batch report</title>'
        f"<style>{_STYLE}</style></head><body>\n"
        f"<h1>Rekindle batch report: {len(targets)} recordings</h1>\n"
        f'<p class="note" id="disclaimer"><b>What these numbers are not.</b> {_e(DISCLAIMER)}</p>\n'
        + _table(columns, rows, "recordings")
        + "\n</body></html>\n"
    )


def write_index(targets: Sequence[Path], path: Path) -> Path:
    """``index.html`` for the recordings whose outputs are in ``targets``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(index_html(targets), encoding="utf-8")
    return path
