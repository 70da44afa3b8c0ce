"""``rekindle demo``: the whole live pipeline in one process on embedded defaults.

An in-process MQTT broker (unless ``--mqtt``), the simulated wearable (or a recording) replayed
through the real publisher, the real analysis service, and storage to local files (unless
``--influx``), with a live terminal view and a summary at the end.

The live view is plain text, one line per event, so it reads the same on a terminal, in a pipe
or in a log: a header with a legend and labelled columns (units in the column names), then a row
at most every ``interval_s`` of wall time (session clock, progress, HR, RMSSD, EDA, index,
signal quality, and "learning baseline: n s left" while the detector warms up), and episode and
marker lines as they happen, in the order the analysis confirms them. Logs go to a file.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from rekindle.analysis.core import AnalysisConfig, Episode, EpisodeStart, Event, FeatureRow
from rekindle.analysis.evaluate import warmup_s
from rekindle.analysis.influx import (
    BufferedWriter,
    FileTransport,
    InfluxSettings,
    Transport,
    make_transport,
)
from rekindle.analysis.offline import AnalysisResult, write_outputs
from rekindle.analysis.service import AnalysisService
from rekindle.embedded_broker import EmbeddedBroker
from rekindle.ingest.publisher import Publisher
from rekindle.ingest.replay import replay
from rekindle.ingest.sources import open_spec
from rekindle.ingest.sources.base import Chunk
from rekindle.ingest.sources.simulator import SimulationScript
from rekindle.mqtturl import MqttSettings


@dataclass(frozen=True, slots=True)
class DemoOptions:
    mqtt_url: str | None = None
    mqtt: MqttSettings | None = None
    influx: InfluxSettings | None = None
    source: str = "sim"
    speed: float | None = 60.0
    out: Path = Path("rekindle-demo")
    seed: int = 1
    session: str = "demo"
    site: str = "clinic"
    log_path: Path | None = None
    report: bool = True


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _num(value: float | None, spec: str, width: int) -> str:
    return f"{'-':>{width}}" if value is None else format(value, f">{width}{spec}")


#: The live view's columns: (label, width). Units are in the labels.
COLUMNS = (
    ("session", 8),
    ("done", 5),
    ("HR bpm", 7),
    ("RMSSD ms", 9),
    ("EDA µS", 7),
    ("index", 6),
    ("signal quality", 0),
)


#: The column labels are printed again after this many rows.
HEADER_EVERY = 20


class LiveView:
    """The demo's terminal view; every ``on_*`` method may be called from any thread.

    ``config`` gives the thresholds shown in the legend and the warm-up (from
    :func:`rekindle.analysis.evaluate.warmup_s`); ``total_s`` the session length when known
    (progress); ``color`` adds ANSI colours (a terminal).
    """

    def __init__(
        self,
        out: TextIO,
        config: AnalysisConfig | None = None,
        *,
        total_s: float | None = None,
        interval_s: float = 0.5,
        color: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.out = out
        self.config = config or AnalysisConfig()
        self.total_s = total_s
        self.interval_s = interval_s
        self.color = color
        self._clock = clock
        self._last_row = -1e9
        self._lock = threading.Lock()
        self.start: float | None = None  # first sample time (session clock 0)
        self.now: float | None = None  # newest feature second
        self.result = AnalysisResult("demo")
        self._warm = False
        self._rows = 0
        self._open_since: float | None = None  # onset of the arousal episode under way
        self._pending: list[tuple[float, str]] = []  # markers the analysis has not reached yet

    # ---------------------------------------------------------------- formatting

    def _paint(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def session_clock(self, t: float | None) -> str:
        """``mm:ss`` (``h:mm:ss`` past an hour) of session time since the first sample."""
        if t is None or self.start is None:
            return "--:--"
        s = max(0, round(t - self.start))
        h, rest = divmod(s, 3600)
        return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60:02d}:{rest % 60:02d}"

    def legend(self) -> str:
        cfg = self.config
        rise_pct = 100 * (math.exp(cfg.eda_rise_ln) - 1)
        return (
            "legend: index = arousal 0-100, the rise of skin conductance (EDA) against this "
            f"person's own preceding minutes (50 = a +{rise_pct:.0f} % rise); AROUSAL episode = "
            f"index >= {cfg.enter_index:g} for {cfg.min_episode_s:g} s, ends below "
            f"{cfg.exit_index:g}; RELEASE = recovery after a surge (HR down by "
            f"{cfg.release_hr_drop_bpm:g} bpm for {cfg.recovery_hold_s:g} s"
            f"{' once the episode has ended' if cfg.release_needs_close else ''}, EDA no longer "
            "rising); MARKER = a note on the "
            "timeline (a clinician's mark, an E4 button tag); times are session time mm:ss"
        )

    def header_line(self) -> str:
        return "  ".join(f"{label:>{w}}" if w else label for label, w in COLUMNS)

    def row(self, r: FeatureRow) -> str:
        done = "    -"
        if self.total_s and self.start is not None:
            done = f"{min(100.0, 100.0 * (r.time - self.start) / self.total_s):4.0f}%"
        quality = " ".join(f"{k}:{v}" for k, v in sorted(r.quality.items())) or "-"
        cells = [
            f"{self.session_clock(r.time):>8}",
            done,
            _num(r.hr, ".1f", 7),
            _num(r.rmssd, ".1f", 9),
            _num(r.eda_tonic, ".2f", 7),
            _num(r.arousal_index, ".0f", 6),
            quality,
        ]
        line = "  ".join(cells)
        left = self.warmup_left(r.time)
        if left > 0:
            line += "  " + self._paint(f"learning baseline: {left:.0f} s left", "2")
        return line

    def warmup_left(self, t: float) -> float:
        if self.start is None:
            return warmup_s(self.config)
        return max(0.0, self.start + warmup_s(self.config) - t)

    def _event_line(self, text: str, code: str) -> None:
        when = self.session_clock(self.now)
        self.out.write(f"{when:>8}  {self._paint(text, code)}\n")

    # ---------------------------------------------------------------- inputs

    def write_header(self, title: str) -> None:
        with self._lock:
            self.out.write(f"{title}\n{self.legend()}\n")
            self.out.write(
                f"warm-up: the first {warmup_s(self.config):.0f} s of data settle the sensors "
                "and learn the baseline; no episode before that\n"
            )
            self.out.write(self._paint(self.header_line(), "1") + "\n")
            self.out.flush()

    def on_chunk(self, chunk: Chunk) -> None:
        """Every chunk replayed: the first sets the session clock; markers are collected and
        shown once the analysis has reached their time (so the view keeps session order even
        when the replay runs ahead of the analysis)."""
        with self._lock:
            if self.start is None:
                self.start = chunk.start
            if chunk.stream == "marker":
                for t, text in zip(chunk.t or (), chunk.values, strict=True):
                    self.result.markers.append((t, str(text)))
                    self._pending.append((t, str(text)))
                self._pending.sort()

    def _show_markers(self, until: float | None) -> None:
        while self._pending and (until is None or self._pending[0][0] <= until):
            t, text = self._pending.pop(0)
            line = self._paint(f"MARKER  {text}", "36")
            self.out.write(f"{self.session_clock(t):>8}  {line}\n")

    def finish(self) -> None:
        """The session is over: show the markers the analysis never reached."""
        with self._lock:
            self._show_markers(None)
            self.out.flush()

    def on_events(self, _site: str, _session: str, events: list[Event]) -> None:
        with self._lock:
            latest: FeatureRow | None = None
            for ev in events:
                if isinstance(ev, FeatureRow):
                    self.result.features.append(ev)
                    self.now = ev.time
                    latest = ev
                    self._show_markers(ev.time)
                    if not self._warm and self.start is not None and not self.warmup_left(ev.time):
                        self._warm = True
                        self._event_line("baseline learned: episodes can be detected now", "32")
                elif isinstance(ev, EpisodeStart):
                    self._open_since = ev.onset
                    self._event_line(
                        f"AROUSAL episode under way since {self.session_clock(ev.onset)} "
                        f"(index {ev.peak_index:.0f} so far)",
                        "1;33",
                    )
                elif isinstance(ev, Episode):
                    self.result.episodes.append(ev)
                    if ev.kind == "arousal":
                        self._open_since = None
                    self._event_line(
                        self.episode_text(ev), "1;33" if ev.kind == "arousal" else "1;32"
                    )
            now = self._clock()
            if latest is not None and now - self._last_row >= self.interval_s:
                self._last_row = now
                self._rows += 1
                if self._rows % HEADER_EVERY == 0:  # the labels stay in sight as rows scroll
                    self.out.write(self._paint(self.header_line(), "1") + "\n")
                self.out.write(self.row(latest) + "\n")
            self.out.flush()

    def episode_text(self, ev: Episode, *, live: bool = True) -> str:
        """One episode in words (``live``: as the line printed when it is reported)."""
        span = f"{self.session_clock(ev.onset)}-{self.session_clock(ev.offset)}"
        if ev.kind == "arousal":
            head = "AROUSAL episode ended: " if live else "AROUSAL  "
            return (
                f"{head}{span} ({ev.offset - ev.onset:.0f} s), peak index "
                f"{ev.peak_index:.0f} at {self.session_clock(ev.peak)} ({', '.join(ev.signals)})"
            )
        latency = "" if ev.recovery_latency is None else f" {ev.recovery_latency:.0f} s after"
        depth = "" if ev.recovery_depth is None else f", {_depth_words(ev.recovery_depth)}"
        text = (
            f"recovery{latency} the peak of the surge that began at "
            f"{self.session_clock(ev.onset)} ({', '.join(ev.signals)}{depth})"
        )
        if not live:
            return f"RELEASE  confirmed {self.session_clock(ev.confirmed or ev.offset)}: {text}"
        if self._open_since is not None and self._open_since <= ev.onset:
            text += "; the arousal episode is still open"
        return f"RELEASE confirmed: {text}"


def _depth_words(depth: float) -> str:
    """A release's recovery depth for staff: "108% recovered" reads as a glitch, though a heart
    rate that falls below where it was before the surge is an ordinary, complete recovery."""
    if depth >= 1.0:
        return "HR back below its pre-surge level"
    return f"{100 * depth:.0f}% recovered"


def _tapped(chunks: Iterator[Chunk], view: LiveView) -> Iterator[Chunk]:
    for chunk in chunks:
        view.on_chunk(chunk)
        yield chunk


def run_demo(
    options: DemoOptions,
    stop: threading.Event,
    out: TextIO = sys.stdout,
    config: AnalysisConfig | None = None,
) -> int:
    config = config or AnalysisConfig()
    started = time.monotonic()
    broker = None
    if options.mqtt is not None:
        settings = options.mqtt
    elif options.mqtt_url is not None:
        settings = MqttSettings.from_url(options.mqtt_url)
    else:
        broker = EmbeddedBroker().start()
        settings = MqttSettings.from_url(broker.url)
        out.write(f"set-up: embedded MQTT broker on {broker.url}\n")
    options.out.mkdir(parents=True, exist_ok=True)
    transport: Transport
    if options.influx is None:
        lp_path = options.out / "points.lp"
        lp_path.unlink(missing_ok=True)
        transport = FileTransport(lp_path)
        out.write(f"set-up: storing points in {lp_path} (InfluxDB line protocol)\n")
    else:
        transport = make_transport(options.influx)
        out.write(f"set-up: storing points in InfluxDB at {options.influx.url}\n")
    if options.log_path is not None:
        out.write(f"set-up: logs in {options.log_path}\n")
    source = f"sim:{options.seed}" if options.source == "sim" else options.source
    name, chunks = open_spec(source, speed=options.speed)
    total = SimulationScript().duration if source.startswith("sim") else None
    view = LiveView(
        out, config, total_s=total, color=getattr(out, "isatty", lambda: False)() is True
    )
    service = AnalysisService(
        settings,
        BufferedWriter(transport),
        site=options.site,
        config=config,
        on_events=view.on_events,
    ).start()
    speed_text = "as fast as possible" if options.speed is None else f"at {options.speed:g}x"
    length = "" if total is None else f" ({total / 60:.0f} min of data"
    if total is not None and options.speed is not None:
        length += f", about {total / options.speed:.0f} s"
    length += ")" if length else ""
    what = "simulated session" if total is not None else "recording"
    view.write_header(
        f"\nRekindle demo: {what} {name}{length} replayed {speed_text} as "
        f"{options.site}/{options.session}"
    )
    try:
        with Publisher(settings, options.site, options.session, device="demo") as pub:
            stats = replay(
                _tapped(chunks, view), pub, speed=options.speed, status_device="demo", stop=stop
            )
        service.wait_sessions_finished(1, timeout=120, stop=stop)
    finally:
        service.stop()
        if broker is not None:
            broker.stop()
    view.finish()
    result = view.result
    result.name = name
    result.samples = stats.samples
    result.start, result.end = stats.first, stats.last
    result.gaps = service.gap_summary(options.site, options.session)
    target = write_outputs(result, options.out)
    written = ["episodes.csv", "features.csv", "summary.json"]
    if options.report:
        from rekindle.analysis.report import write_html, write_plot  # noqa: PLC0415

        plot = write_plot(result, target / "session.png")
        write_html(result, target / "report.html", plot)
        written += ["session.png", "report.html"]
    _summary(out, view, result, stats.samples, time.monotonic() - started, service)
    out.write(f"written to {target}/: {', '.join(written)}\n")
    if result.start is not None:
        out.write(f"data from {_utc(result.start)} to {_utc(result.end or result.start)}\n")
    out.flush()
    return 0


def _summary(
    out: TextIO,
    view: LiveView,
    result: AnalysisResult,
    samples: int,
    wall_s: float,
    service: AnalysisService,
) -> None:
    span = (result.end or 0.0) - (result.start or 0.0)
    out.write(
        f"\nsummary: {samples} samples, {span:.0f} s of data in {wall_s:.1f} s wall; "
        f"{service.stats.accepted} messages accepted, {service.stats.rejected} rejected\n"
    )
    out.write("episodes (by onset; a release follows the arousal episode it recovers from):\n")
    order = {"arousal": 0, "release": 1}
    for ep in sorted(result.episodes, key=lambda e: (e.onset, order[e.kind])):
        out.write(f"  {view.episode_text(ep, live=False)}\n")
    if not result.episodes:
        out.write("  none\n")
    out.write("markers:\n")
    for t, text in result.markers:
        out.write(f"  {view.session_clock(t)}  {text}\n")
    if not result.markers:
        out.write("  none\n")
