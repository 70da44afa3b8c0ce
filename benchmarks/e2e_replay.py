"""End-to-end replay of Stress-Predict S02 at max speed: real mosquitto -> analysis -> influxd.

Starts its own mosquitto and influxd (as the test suite does), replays S02 through the live path
twice and prints wall seconds, samples, messages and points for:

* batched: the service's BufferedWriter (5000 lines per POST), and
* naive:   one POST per MQTT message (what a straightforward consumer does),

then ``speedup_vs_naive`` (naive wall / batched wall). Run: ``.venv/bin/python -m
benchmarks.e2e_replay``.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

from rekindle.analysis.influx import BufferedWriter, InfluxSettings, V1Transport
from rekindle.analysis.service import AnalysisService
from rekindle.ingest.publisher import Publisher
from rekindle.ingest.replay import replay
from rekindle.ingest.sources.e4 import read_e4_folder
from rekindle.mqtturl import MqttSettings
from tests.servers import InfluxD, Mosquitto

S02 = Path(__file__).resolve().parent.parent / "tests/fixtures/stress_predict_e4/Raw_data/S02"


def run(broker: Mosquitto, influx: InfluxD, db: str, batch_lines: int) -> dict[str, float]:
    influx.create_database(db)
    settings = MqttSettings.from_url(broker.url)
    writer = BufferedWriter(
        V1Transport(InfluxSettings(influx.url, database=db)), batch_lines=batch_lines
    )
    service = AnalysisService(settings, writer, site="bench", publish_features=False)
    started = time.perf_counter()
    service.start()
    with Publisher(settings, "bench", "S02", device="replay") as pub:
        stats = replay(read_e4_folder(S02), pub, speed=None)
    published = time.perf_counter() - started
    if not service.wait_sessions_finished(1, timeout=600):
        raise RuntimeError("the analysis service never saw the session end")
    service.stop()
    wall = time.perf_counter() - started
    points = influx.count('SELECT count("value") FROM "signal"', db)
    return {
        "wall_s": wall,
        "publish_s": published,
        "samples": stats.samples,
        "messages": service.stats.accepted,
        "lines_written": writer.written,
        "signal_points_in_db": points,
        "data_s": (stats.last or 0) - (stats.first or 0),
    }


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto.start(Path(tmp) / "mq")
        influx = InfluxD.start(Path(tmp) / "influx")
        try:
            batched = run(broker, influx, "batched", 5000)
            naive = run(broker, influx, "naive", 1)
        finally:
            broker.stop()
            influx.stop()
    for name, res in (("batched", batched), ("naive", naive)):
        print(
            f"{name:8s} wall {res['wall_s']:7.1f} s  samples {res['samples']:.0f}  "
            f"messages {res['messages']:.0f}  lines written {res['lines_written']:.0f}  "
            f"signal points in db {res['signal_points_in_db']:.0f}  "
            f"({res['data_s'] / res['wall_s']:.0f}x real time)"
        )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process (publisher + service): {peak_mb:.0f} MB")
    print(f"speedup_vs_naive: {naive['wall_s'] / batched['wall_s']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
