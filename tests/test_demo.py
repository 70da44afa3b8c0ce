"""`rekindle demo`: the live view piped and under a pseudo-terminal, the summary and the outputs."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from rekindle.analysis.core import AnalysisConfig, Episode, EpisodeStart, FeatureRow
from rekindle.analysis.evaluate import warmup_s
from rekindle.demo import LiveView
from rekindle.ingest.sources.base import Chunk

REPO = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: The simulated session's scripted "tears" marker: at the end of its first episode (480 + 180 s).
TEARS_AT = "11:00"


def _demo(out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "rekindle.cli",
        "demo",
        "--speed",
        "max",
        "--out",
        str(out),
        "--no-report",
    ]


def _check_screen(text: str, out: Path) -> None:
    """What a newcomer must see: labelled columns, the legend, the warm-up, episodes, markers."""
    lines = text.splitlines()
    header = next(line for line in lines if "HR bpm" in line)
    for label in ("session", "done", "HR bpm", "RMSSD ms", "EDA µS", "index", "signal quality"):
        assert label in header, header
    assert "legend: index = arousal 0-100, the rise of skin conductance (EDA) against" in text
    cfg = AnalysisConfig()
    assert f"AROUSAL episode = index >= 50 for {cfg.min_episode_s:g} s" in text
    left = [int(n) for n in re.findall(r"learning baseline: (\d+) s left", text)]
    warm = warmup_s(AnalysisConfig())
    assert left, text[:3000]
    assert warm - 30 <= left[0] <= warm
    assert left == sorted(left, reverse=True)
    assert "baseline learned: episodes can be detected now" in text
    assert re.search(r"^ +\d\d:\d\d  AROUSAL episode under way since \d\d:\d\d", text, re.M)
    assert re.search(r"^ +\d\d:\d\d  RELEASE confirmed: recovery \d+ s after the peak", text, re.M)
    assert re.search(r"^ +\d\d:\d\d  AROUSAL episode ended: \d\d:\d\d-\d\d:\d\d", text, re.M)
    assert re.search(rf"^ +{TEARS_AT}  MARKER  tears", text, re.M)
    # event lines carry the session clock and come in the order the analysis reported them
    clocks = [m for m in re.findall(r"^ +(\d\d:\d\d)  [A-Z]", text, re.M)]
    assert clocks == sorted(clocks)
    summary = text[text.index("\nsummary:") :]
    assert f"markers:\n  {TEARS_AT}  tears\n" in summary
    assert re.search(r"^  AROUSAL  \d\d:\d\d-\d\d:\d\d", summary, re.M)
    assert re.search(r"^  RELEASE  confirmed \d\d:\d\d: recovery", summary, re.M)
    assert summary.index("AROUSAL  ") < summary.index("RELEASE  ")  # the release follows it
    # logs are kept out of the view, in a file
    assert not re.search(r"\b(DEBUG|INFO|WARNING|ERROR)\b", text), text[:3000]
    assert (out / "demo.log").stat().st_size > 0
    assert f"logs in {out / 'demo.log'}" in text


def _check_outputs(out: Path) -> None:
    with (out / "sim-1" / "episodes.csv").open() as fh:
        kinds = [e["kind"] for e in csv.DictReader(fh)]
    assert "arousal" in kinds
    assert "release" in kinds
    summary = json.loads((out / "sim-1" / "summary.json").read_text())
    assert summary["episodes"]["arousal"] == kinds.count("arousal")
    assert summary["markers"] == [{"time": 1.7e9 + 660.0, "text": "tears"}]
    points = (out / "points.lp").read_text().splitlines()
    assert any(p.startswith("episode,") for p in points)
    assert any(p.startswith("marker,") for p in points)
    assert sum(p.startswith("signal,") for p in points) > 10_000


def test_demo_piped(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = subprocess.run(
        _demo(out), capture_output=True, text=True, timeout=600, check=False, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not ANSI.search(proc.stdout), "colour codes in a pipe"
    _check_screen(proc.stdout, out)
    _check_outputs(out)


def test_demo_under_a_pseudo_terminal(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        _demo(out), stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, cwd=REPO
    )
    os.close(slave)
    raw = bytearray()
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the demo closed the terminal
                break
            if not data:
                break
            raw += data
        assert proc.wait(60) == 0, raw.decode(errors="replace")[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    screen = raw.decode("utf-8").replace("\r\n", "\n")
    assert ANSI.search(screen), "no colour on a terminal"
    _check_screen(ANSI.sub("", screen), out)


# --- the view alone, on synthetic events ---------------------------------------------------------


def _row(t: float, index: float | None) -> FeatureRow:
    return FeatureRow(t, 70.0, 40.0, 2.0, 0.0, 1.0, index, {}, {"eda": "good", "hr": "good"})


def test_view_reads_the_warmup_from_the_config() -> None:
    cfg = AnalysisConfig(settle_s=10.0, rise_window_s=90.0)
    assert warmup_s(cfg) != warmup_s(AnalysisConfig())
    screen = io.StringIO()
    view = LiveView(screen, cfg, total_s=1000.0, interval_s=0.0)
    view.on_chunk(Chunk("eda", "d", (2.0, 2.0), t0=1000.0, fs=4.0))
    view.on_events("s", "x", [_row(1005.0, None)])
    view.on_events("s", "x", [_row(1000.0 + warmup_s(cfg), 10.0)])
    text = screen.getvalue()
    first = "   00:05     0%     70.0       40.0     2.00       -  eda:good hr:good"
    assert f"{first}  learning baseline: {warmup_s(cfg) - 5:.0f} s left\n" in text
    assert "baseline learned" in text
    assert "learning baseline" not in text.splitlines()[-1]


def test_view_reports_a_release_before_its_arousal_closes_and_collects_markers() -> None:
    screen = io.StringIO()
    view = LiveView(screen, AnalysisConfig(), interval_s=1e9)
    view.on_chunk(Chunk("eda", "d", (2.0,), t0=0.0, fs=4.0))
    view.on_events("s", "x", [_row(600.0, 80.0), EpisodeStart("arousal", 500.0, 520.0, 80.0)])
    view.on_chunk(Chunk("marker", "clinician", ("tears",), t=(650.0,)))
    view.on_chunk(Chunk("marker", "clinician", ("after the end",), t=(2000.0,)))
    release = Episode("release", 500.0, 530.0, 700.0, 90.0, ("hr",), 0.9, 120.0, confirmed=700.0)
    view.on_events("s", "x", [_row(700.0, 70.0), release])
    arousal = Episode("arousal", 500.0, 530.0, 900.0, 90.0, ("eda", "hr"), confirmed=520.0)
    view.on_events("s", "x", [_row(900.0, 20.0), arousal])
    lines = screen.getvalue().splitlines()
    events = [line for line in lines if re.match(r" +\d\d:\d\d  [A-Z]", line)]
    assert events == [
        "   10:00  AROUSAL episode under way since 08:20 (index 80 so far)",
        "   10:50  MARKER  tears",
        "   11:40  RELEASE confirmed: recovery 120 s after the peak of the surge that began at "
        "08:20 (hr, 90% recovered); the arousal episode is still open",
        "   15:00  AROUSAL episode ended: 08:20-15:00 (400 s), peak index 90 at 08:50 (eda, hr)",
    ]
    assert "after the end" not in screen.getvalue()  # the analysis has not reached it
    view.finish()
    assert screen.getvalue().endswith("   33:20  MARKER  after the end\n")
    assert view.result.markers == [(650.0, "tears"), (2000.0, "after the end")]
    assert view.result.episodes == [release, arousal]


def test_demo_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    argv = [*_demo(out)]
    argv[argv.index("max")] = "60"
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:  # the live view is running: a row with the warm-up notice
            seen.append(line)
            if "learning baseline" in line:
                break
        assert seen, "the demo printed nothing"
        assert "learning baseline" in seen[-1], "".join(seen)
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "\nsummary: " in rest
    assert "received signal 2, stopping" in (out / "demo.log").read_text()
    assert (out / "sim-1" / "summary.json").exists()


def test_view_words_a_release_deeper_than_the_surge_as_a_full_recovery() -> None:
    view = LiveView(io.StringIO(), AnalysisConfig(), interval_s=1e9)
    deep = Episode("release", 500.0, 530.0, 700.0, 90.0, ("hr",), 1.08, 120.0, confirmed=700.0)
    text = view.episode_text(deep, live=False)
    assert "(hr, HR back below its pre-surge level)" in text
    assert "108%" not in text
