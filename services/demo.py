"""``rekindle demo``: the whole live pipeline in one process on embedded defaults.

An in-process MQTT broker (unless ``--mqtt``), the simulated wearable (or a recording) replayed
through the real publisher, the real analysis service, and storage to local files (unless
``--influx``), with a live terminal view and a summary at the end.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from services.analysis.core import Episode, EpisodeStart, Event, FeatureRow
from services.analysis.influx import (
    BufferedWriter,
    FileTransport,
    InfluxSettings,
    Transport,
    make_transport,
)
from services.analysis.offline import AnalysisResult, write_outputs
from services.analysis.service import AnalysisService
from services.embedded_broker import EmbeddedBroker
from services.ingest.publisher import Publisher
from services.ingest.replay import replay
from services.ingest.sources import open_spec
from services.mqtturl import MqttSettings


@dataclass(frozen=True, slots=True)
class DemoOptions:
    mqtt_url: str | None = None
    influx: InfluxSettings | None = None
    source: str = "sim"
    speed: float | None = 60.0
    out: Path = Path("rekindle-demo")
    seed: int = 1
    session: str = "demo"
    site: str = "demo"


def _clock(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S")


def _fmt(value: float | None, spec: str) -> str:
    return "  -  " if value is None else format(value, spec)


class LiveView:
    """Prints the newest feature row at most every ``interval_s`` and every episode at once."""

    def __init__(self, out: TextIO, interval_s: float = 0.5) -> None:
        self.out = out
        self.interval_s = interval_s
        self._last = 0.0
        self._lock = threading.Lock()
        self.result = AnalysisResult("demo")

    def on_events(self, _site: str, _session: str, events: list[Event]) -> None:
        with self._lock:
            latest: FeatureRow | None = None
            for ev in events:
                if isinstance(ev, FeatureRow):
                    self.result.features.append(ev)
                    latest = ev
                elif isinstance(ev, EpisodeStart):
                    self.out.write(
                        f"  >> {ev.kind.upper()} episode under way since {_clock(ev.onset)} "
                        f"(index {ev.peak_index:.0f})\n"
                    )
                elif isinstance(ev, Episode):
                    self.result.episodes.append(ev)
                    extra = ""
                    if ev.kind == "release" and ev.recovery_latency is not None:
                        extra = f", recovery after {ev.recovery_latency:.0f} s"
                    self.out.write(
                        f"  >> {ev.kind.upper()} episode {_clock(ev.onset)}-{_clock(ev.offset)} "
                        f"peak index {ev.peak_index:.0f} ({', '.join(ev.signals)}{extra})\n"
                    )
            now = time.monotonic()
            if latest is not None and now - self._last >= self.interval_s:
                self._last = now
                q = ",".join(f"{k}:{v}" for k, v in sorted(latest.quality.items()))
                self.out.write(
                    f"{_clock(latest.time)}  HR {_fmt(latest.hr, '5.1f')} bpm  "
                    f"RMSSD {_fmt(latest.rmssd, '5.1f')} ms  "
                    f"EDA {_fmt(latest.eda_tonic, '5.2f')} uS"
                    f"  arousal {_fmt(latest.arousal_index, '5.1f')}  [{q}]\n"
                )
            self.out.flush()


def run_demo(options: DemoOptions, stop: threading.Event, out: TextIO = sys.stdout) -> int:
    broker = None
    if options.mqtt_url is None:
        broker = EmbeddedBroker().start()
        mqtt_url = broker.url
        out.write(f"embedded MQTT broker on {mqtt_url}\n")
    else:
        mqtt_url = options.mqtt_url
    settings = MqttSettings.from_url(mqtt_url)
    options.out.mkdir(parents=True, exist_ok=True)
    transport: Transport
    if options.influx is None:
        lp_path = options.out / "points.lp"
        lp_path.unlink(missing_ok=True)
        transport = FileTransport(lp_path)
        out.write(f"storing points in {lp_path}\n")
    else:
        transport = make_transport(options.influx)
        out.write(f"storing points in InfluxDB at {options.influx.url}\n")
    view = LiveView(out)
    service = AnalysisService(
        settings, BufferedWriter(transport), site=options.site, on_events=view.on_events
    ).start()
    name, chunks = open_spec(options.source, speed=options.speed)
    speed_text = "max" if options.speed is None else f"{options.speed:g}x"
    out.write(f"replaying {name} as session {options.session} at {speed_text}\n")
    started = time.monotonic()
    try:
        with Publisher(settings, options.site, options.session, device="demo") as pub:
            stats = replay(chunks, pub, speed=options.speed, status_device="demo", stop=stop)
        service.wait_sessions_finished(1, timeout=120, stop=stop)
    finally:
        service.stop()
        if broker is not None:
            broker.stop()
    result = view.result
    result.name = name
    result.samples = stats.samples
    result.start, result.end = stats.first, stats.last
    target = write_outputs(result, options.out)
    out.write(
        f"\nsummary: {stats.samples} samples, {(stats.last or 0) - (stats.first or 0):.0f} s of "
        f"data in {time.monotonic() - started:.1f} s wall; "
        f"{service.stats.accepted} messages accepted, {service.stats.rejected} rejected\n"
    )
    for ep in result.episodes:
        out.write(
            f"  {ep.kind:<8} {_clock(ep.onset)} -> {_clock(ep.offset)}  "
            f"({ep.offset - ep.onset:.0f} s, peak index {ep.peak_index:.0f})\n"
        )
    if not result.episodes:
        out.write("  no episodes\n")
    out.write(f"episodes, features and summary written to {target}\n")
    return 0
