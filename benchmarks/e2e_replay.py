"""End-to-end replay of Stress-Predict S02 (one session-hour of E4 data) at max speed: real
mosquitto -> analysis -> influxd, against what the broker alone carries for the same messages.

Starts its own mosquitto and influxd (as the test suite does). Every arm publishes the same
messages with the project's replay command in a process of its own (``rekindle replay --speed
max``: the same chunks, topics and payloads), so its CPU does not compete with the consumer's:

* **raw broker**: a plain paho QoS 1 subscriber counts the messages (``--window 0``: broker
  acknowledgements only); what the broker and paho carry, the ceiling of any consumer;
* **batched**: the analysis service (in this process) with its writer as it runs live
  (InfluxDB written at every commit, up to 5000 lines per POST), the publisher paced by the
  end-to-end acknowledgements (``--window 500``, the replay default);
* **naive**: the same service with a writer that POSTs once per MQTT message (what a
  straightforward consumer does): ~21k POSTs.

Each arm's wall time runs from the first message the consumer receives to the last message
(raw) or to the session's end with every line acknowledged by InfluxDB (service arms: until
``stop()`` returned, which makes the last commit and flushes the writer), so the
start-up of the publishing process is left out. Prints per arm the wall seconds, wall per
session-hour, messages and lines, and ``ratio_to_raw_broker`` (raw wall / arm wall, 100 % = as
fast as the broker alone) and ``speedup_vs_naive``. Run:
``.venv/bin/python -m benchmarks.e2e_replay`` (``--no-naive`` skips the slow arm).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from rekindle.analysis.influx import BufferedWriter, InfluxSettings, Transport, V1Transport
from rekindle.analysis.service import AnalysisService
from rekindle.mqtturl import MqttSettings
from tests.servers import InfluxD, Mosquitto

S02 = Path(__file__).resolve().parent.parent / "tests/fixtures/stress_predict_e4/Raw_data/S02"
SITE = "bench"


def proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a running process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    """CPU seconds of this process's waited-for children (the publishing processes)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class FirstCall:
    """A clock that remembers when it was first read (the consumer's first message)."""

    def __init__(self) -> None:
        self.first: float | None = None

    def __call__(self) -> float:
        now = time.time()
        if self.first is None:
            self.first = time.perf_counter()
        return now


class PerMessageWriter(BufferedWriter):
    """The naive consumer's writer: every message's lines in a POST of their own, at once."""

    def __init__(self, transport: Transport) -> None:
        super().__init__(transport)
        self.posts = 0

    def add(self, lines: list[str]) -> None:
        if lines:
            self.posts += 1
            super().add(lines)
            self.flush(block=True)


def publish(
    broker: Mosquitto, session: str, window: int, message_s: float | None
) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-m",
        "rekindle.cli",
        "replay",
        str(S02),
        "--session",
        session,
        "--site",
        SITE,
        "--speed",
        "max",
        "--mqtt",
        broker.url,
        "--window",
        str(window),
        *([] if message_s is None else ["--message-s", f"{message_s:g}"]),
    ]
    env = {**os.environ, "REKINDLE_LOG_LEVEL": "WARNING"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)


def finish(proc: subprocess.Popen[bytes], what: str) -> str:
    out, _ = proc.communicate(timeout=900)
    text = out.decode("utf-8", "replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{what}: replay exited {proc.returncode}: {text[-2000:]}")
    return text


def raw_broker(broker: Mosquitto, message_s: float | None, tag: str) -> dict[str, float]:
    """A plain QoS 1 subscriber: wall from the first to the ``end`` status."""
    session = f"S02raw{tag}"
    done = threading.Event()
    count = [0]
    first: list[float] = []
    last = [0.0]
    subscribed = threading.Event()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        if not first:
            first.append(now)
        count[0] += 1
        last[0] = now
        if "/status/" in msg.topic and b'"end"' in msg.payload:
            done.set()

    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    client.on_message = on_message
    client.on_subscribe = lambda *_a: subscribed.set()
    client.connect(broker.host, broker.port)
    client.loop_start()
    client.subscribe(f"rekindle/v1/{SITE}/{session}/#", qos=1)
    if not subscribed.wait(10):
        raise RuntimeError("raw subscriber: no subscription acknowledgement")
    pub0 = children_cpu_s()
    proc = publish(broker, session, 0, message_s)
    if not done.wait(900):
        raise RuntimeError("raw subscriber never saw the end status")
    finish(proc, "raw broker")
    client.loop_stop()
    client.disconnect()
    return {
        "wall_s": last[0] - first[0],
        "messages": count[0],
        "lines": 0.0,
        "publisher_cpu_s": children_cpu_s() - pub0,
    }


def service_arm(
    broker: Mosquitto, influx: InfluxD, db: str, *, naive: bool, message_s: float | None
) -> dict[str, float]:
    influx.create_database(db)
    settings = MqttSettings.from_url(broker.url)
    transport = V1Transport(InfluxSettings(influx.url, database=db))
    writer = PerMessageWriter(transport) if naive else BufferedWriter(transport)
    clock = FirstCall()
    service = AnalysisService(
        settings, writer, site=SITE, publish_features=False, clock=clock
    ).start()
    cpu0 = time.process_time()
    servers0 = proc_cpu_s(influx.proc.pid), proc_cpu_s(broker.proc.pid)
    pub0 = children_cpu_s()
    proc = publish(broker, db, 500, message_s)
    if not service.wait_sessions_finished(1, timeout=900):
        raise RuntimeError("the analysis service never saw the session end")
    service.stop()  # (the worker's last commit and the writer's final flush)
    done = time.perf_counter()
    cpu = time.process_time() - cpu0
    influx_cpu = proc_cpu_s(influx.proc.pid) - servers0[0]
    broker_cpu = proc_cpu_s(broker.proc.pid) - servers0[1]
    if writer.queued:
        raise RuntimeError("InfluxDB did not take every line")
    finish(proc, db)
    pub_cpu = children_cpu_s() - pub0
    assert clock.first is not None
    points = influx.count(f'SELECT count("value") FROM "signal" WHERE session = \'{db}\'', db)
    out = {
        "wall_s": done - clock.first,
        "messages": float(service.stats.accepted),
        "lines": float(writer.written),
        "signal_points": float(points),
        "cpu_s": cpu,
        "influxd_cpu_s": influx_cpu,
        "mosquitto_cpu_s": broker_cpu,
        "publisher_cpu_s": pub_cpu,
    }
    if isinstance(writer, PerMessageWriter):
        out["posts"] = float(writer.posts)
    return out


def data_hours() -> float:
    from rekindle.ingest.sources.e4 import read_e4_folder  # noqa: PLC0415

    first = last = None
    for chunk in read_e4_folder(S02):
        first = chunk.start if first is None else min(first, chunk.start)
        last = chunk.end if last is None else max(last, chunk.end)
    assert first is not None
    assert last is not None
    return (last - first) / 3600.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-naive", action="store_true", help="skip the per-message arm")
    parser.add_argument(
        "--message-s",
        default="1,30",
        help="comma-separated data seconds per message to compare (replay --message-s; "
        "default 1,30: live-sized messages and the --speed max default)",
    )
    args = parser.parse_args(argv)
    spans = [float(x) for x in args.message_s.split(",")]
    hours = data_hours()
    runs: list[tuple[float, dict[str, dict[str, float]]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto.start(Path(tmp) / "mq")
        influx = InfluxD.start(Path(tmp) / "influx")
        try:
            for i, span in enumerate(spans):
                tag = f"{i}"
                arms = {"raw broker": raw_broker(broker, span, tag)}
                arms["batched"] = service_arm(
                    broker, influx, f"batched{tag}", naive=False, message_s=span
                )
                if not args.no_naive and i == 0:
                    arms["naive"] = service_arm(
                        broker, influx, f"naive{tag}", naive=True, message_s=span
                    )
                runs.append((span, arms))
        finally:
            broker.stop()
            influx.stop()
    print(f"S02: {hours:.2f} session-hours of E4 data (ACC, BVP, EDA, HR, IBI, TEMP)")
    for span, arms in runs:
        raw = arms["raw broker"]["wall_s"]
        print(f"--- replay --speed max --message-s {span:g}")
        for name, res in arms.items():
            extra = f"  POSTs {res['posts']:.0f}" if "posts" in res else ""
            if "signal_points" not in res:
                extra += f"  publisher CPU {res['publisher_cpu_s']:.2f} s"
            stored = (
                f"  signal points in db {res['signal_points']:.0f}  CPU s: service "
                f"{res['cpu_s']:.2f} influxd {res['influxd_cpu_s']:.2f} mosquitto "
                f"{res['mosquitto_cpu_s']:.2f} publisher {res['publisher_cpu_s']:.2f}"
                if "signal_points" in res
                else ""
            )
            print(
                f"{name:10s} wall {res['wall_s']:6.2f} s = {res['wall_s'] / hours:6.2f} s per "
                f"session-hour  messages {res['messages']:.0f}  lines written {res['lines']:.0f}"
                f"{stored}{extra}  ratio_to_raw_broker {raw / res['wall_s'] * 100:5.1f} %"
            )
        if "naive" in arms:
            speedup = arms["naive"]["wall_s"] / arms["batched"]["wall_s"]
            print(f"speedup_vs_naive: {speedup:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
