"""What each durability step costs in throughput: Stress-Predict S02 replayed at max speed
through a real mosquitto into the analysis service and a real influxd, once per configuration:

* ``base``        no checkpoint, no end-to-end window (broker acknowledgements only); the
                  analysis still acknowledges each message only once its lines are in InfluxDB
* ``+checkpoint`` ``state_path``: an fsynced checkpoint before every batch of acknowledgements
* ``+e2e``        the publisher's end-to-end window (500 unconfirmed, out/ack)
* ``+wal``        InfluxDB away: every commit appends its lines to the fsynced write-ahead log
* ``naive``       the durable set-up (checkpoint + e2e) committing after every single message
                  (one checkpoint, one InfluxDB write and one fsync per message)

with a mosquitto allowing 100 in-flight and 100,000 queued messages per client (the suite's),
then with mosquitto's defaults (20 in flight, 1000 queued), where only the configurations with
the end-to-end window are run: without it the broker drops messages for the analysis, the
``end`` status among them, so the session never ends (the issue's 42 % replay). Prints wall
seconds, messages per second, each configuration's cost relative to ``base`` (or ``+e2e``) and
how much faster the durable set-up is than ``naive``.
Run: ``.venv/bin/python -m benchmarks.durability [--quick]`` (``--quick``: first 20 min of S02).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rekindle.analysis.influx import BufferedWriter, InfluxSettings, V1Transport
from rekindle.analysis.service import AnalysisService
from rekindle.ingest.publisher import Publisher
from rekindle.ingest.replay import replay
from rekindle.ingest.sources.base import Chunk
from rekindle.ingest.sources.e4 import read_e4_folder
from rekindle.mqtturl import MqttSettings
from tests.servers import InfluxD, Mosquitto, free_port

S02 = Path(__file__).resolve().parent.parent / "tests/fixtures/stress_predict_e4/Raw_data/S02"


def run(
    broker: Mosquitto,
    influx_url: str,
    db: str,
    chunks: list[Chunk],
    tmp: Path,
    *,
    checkpoint: bool,
    window: int | None,
    wal: bool = False,
    per_message: bool = False,
) -> float:
    settings = MqttSettings.from_url(broker.url)
    writer = BufferedWriter(
        V1Transport(InfluxSettings(influx_url, database=db, timeout_s=5)),
        spool_path=tmp / f"{db}.wal" if wal else None,
        max_backoff_s=3600.0 if wal else 30.0,
    )
    service = AnalysisService(
        settings,
        writer,
        site="bench",
        publish_features=False,
        client_id=f"bench-{db}",
        persistent_session=True,
        state_path=tmp / f"{db}.state" if checkpoint else None,
        ack_batch=1 if per_message else 16,
        commit_interval_s=0.0 if per_message else 0.25,
    )
    started = time.perf_counter()
    service.start()
    with Publisher(settings, "bench", db, device="replay", ack_window=window) as pub:
        replay(iter(chunks), pub, speed=None)
        pub.flush(timeout=3600)
    if not service.wait_sessions_finished(1, timeout=3600):
        raise RuntimeError("the analysis service never saw the session end")
    wall = time.perf_counter() - started
    service.stop(timeout=5 if wal else 60)
    return wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="first 20 min of S02 only")
    args = parser.parse_args()
    chunks = list(read_e4_folder(S02))
    if args.quick:
        start = min(c.start for c in chunks)
        chunks = [c for c in chunks if c.end < start + 1200]
    messages = len(chunks)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        influx = InfluxD.start(tmp / "influxd")
        away = f"http://127.0.0.1:{free_port()}"  # nothing listens: InfluxDB away
        try:
            print(f"S02{' (first 20 min)' if args.quick else ''}: {messages} messages")
            print(f"{'inflight':>8} {'configuration':<12} {'wall s':>8} {'msg/s':>8} {'cost':>7}")
            for inflight in (100, 20):
                broker = Mosquitto.start(tmp / f"mq{inflight}", default_queues=inflight == 20)
                try:
                    results: dict[str, float] = {}
                    configs: list[tuple[str, dict[str, object]]] = [
                        ("base", {"checkpoint": False, "window": None}),
                        ("+checkpoint", {"checkpoint": True, "window": None}),
                        ("+e2e", {"checkpoint": True, "window": 500}),
                        ("+wal", {"checkpoint": True, "window": 500, "wal": True}),
                        ("naive", {"checkpoint": True, "window": 500, "per_message": True}),
                    ]
                    if inflight == 20:
                        configs = configs[2:]
                    for name, options in configs:
                        db = f"d{inflight}_{name.strip('+')}"
                        wal = bool(options.get("wal"))
                        if not wal:
                            influx.create_database(db)
                        wall = run(
                            broker,
                            away if wal else influx.url,
                            db,
                            chunks,
                            tmp,
                            **options,  # type: ignore[arg-type]
                        )
                        results[name] = wall
                        cost = (
                            wall / (results["base"] if "base" in results else results["+e2e"]) - 1
                        )
                        print(
                            f"{inflight:>8} {name:<12} {wall:>8.1f} {messages / wall:>8.0f} "
                            f"{cost:>+7.0%}",
                            flush=True,
                        )
                    print(
                        f"{inflight:>8} durable (+e2e) vs naive per-message commits: "
                        f"{results['naive'] / results['+e2e']:.1f}x faster"
                    )
                finally:
                    broker.stop()
        finally:
            influx.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
