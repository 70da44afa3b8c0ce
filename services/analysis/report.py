"""Researcher outputs of ``rekindle analyze``: a session plot (PNG) and a Markdown report.

Only files are written here; the numbers come from :class:`AnalysisResult`.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

from services.analysis.offline import AnalysisResult, summary


def _minutes(t: float, start: float) -> float:
    return (t - start) / 60.0


def write_plot(result: AnalysisResult, path: Path) -> Path:
    """HR and RMSSD, tonic EDA and SCR rate, and the arousal index with episodes shaded."""
    import matplotlib as mpl  # noqa: PLC0415 (heavy; only when a plot is asked for)

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    start = result.start if result.start is not None else 0.0
    rows = result.features
    t = [_minutes(r.time, start) for r in rows]

    def series(name: str) -> list[float]:
        out = []
        for r in rows:
            value = getattr(r, name)
            out.append(math.nan if value is None else float(value))
        return out

    fig, axes = plt.subplots(3, 1, figsize=(12, 8), sharex=True)
    ax_hr, ax_eda, ax_idx = axes
    ax_hr.plot(t, series("hr"), color="tab:red", lw=0.8, label="HR (bpm)")
    ax_hr.set_ylabel("HR (bpm)")
    ax_rmssd = ax_hr.twinx()
    ax_rmssd.plot(t, series("rmssd"), color="tab:purple", lw=0.8, label="RMSSD (ms)")
    ax_rmssd.set_ylabel("RMSSD (ms)")
    ax_eda.plot(t, series("eda_tonic"), color="tab:blue", lw=0.8)
    ax_eda.set_ylabel("tonic EDA (µS)")
    ax_scr = ax_eda.twinx()
    ax_scr.plot(t, series("scr_rate"), color="tab:cyan", lw=0.6)
    ax_scr.set_ylabel("SCR / min")
    ax_idx.plot(t, series("arousal_index"), color="black", lw=0.8)
    ax_idx.set_ylim(0, 100)
    ax_idx.set_ylabel("arousal index")
    ax_idx.set_xlabel(
        "minutes since " + datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    )
    colours = {"arousal": "tab:orange", "release": "tab:green"}
    for ep in result.episodes:
        for ax in axes:
            ax.axvspan(
                _minutes(ep.onset, start),
                _minutes(ep.offset, start),
                color=colours[ep.kind],
                alpha=0.15 if ep.kind == "arousal" else 0.25,
                lw=0,
            )
    for when, text in result.markers:
        for ax in axes:
            ax.axvline(_minutes(when, start), color="grey", lw=0.6, ls="--")
        ax_hr.annotate(
            text,
            (_minutes(when, start), 1.0),
            xycoords=("data", "axes fraction"),
            fontsize=7,
            rotation=90,
            va="top",
            color="grey",
        )
    counts = {k: sum(e.kind == k for e in result.episodes) for k in colours}
    fig.suptitle(
        f"{result.name}: {counts['arousal']} arousal (orange), {counts['release']} release "
        "(green) episodes; dashed lines are markers"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _clock(t: float | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S")


def write_report(result: AnalysisResult, path: Path, plot_name: str | None) -> Path:
    info = summary(result)
    start = result.start or 0.0
    lines = [
        f"# Rekindle session report: {result.name}",
        "",
        f"- recording: {_clock(result.start)} to {_clock(result.end)} UTC "
        f"({float(str(info['duration_s'])) / 60:.1f} min), {result.samples} samples",
        f"- episodes: {sum(e.kind == 'arousal' for e in result.episodes)} arousal, "
        f"{sum(e.kind == 'release' for e in result.episodes)} release",
        f"- seconds by signal quality: {info['seconds_by_quality']}",
        "- analysis parameters: "
        + (
            ", ".join(f"{k}={v}" for k, v in sorted(result.params.items())) + " (others default)"
            if result.params
            else "defaults"
        ),
        "",
        "The arousal index and episodes describe changes in autonomic signals relative to this",
        "person's own baseline in this session. They are not a diagnosis; see docs/method.md.",
        "",
    ]
    if plot_name:
        lines += [f"![session]({plot_name})", ""]
    lines += [
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
    if result.markers:
        lines += ["", "## Markers", ""]
        lines += [f"- {_minutes(t, start):.1f} min: {text}" for t, text in result.markers]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
