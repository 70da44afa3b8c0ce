"""The analysis service publishes episodes, quality changes and features on MQTT."""

from __future__ import annotations

import json
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from rekindle.analysis.influx import BufferedWriter, InfluxSettings, V1Transport
from rekindle.analysis.offline import run_pipeline
from rekindle.analysis.service import AnalysisService
from rekindle.contract import DeviceState
from rekindle.ingest.publisher import Publisher
from rekindle.ingest.replay import replay
from rekindle.ingest.sources.simulator import SimulationScript, simulate
from rekindle.mqtturl import MqttSettings
from tests.servers import InfluxD, Mosquitto
from tests.waiting import GENEROUS_S


def test_episodes_are_published_as_they_are_detected(
    mqtt_broker: Mosquitto, influxd: InfluxD
) -> None:
    influxd.create_database("outputs")
    settings = MqttSettings.from_url(mqtt_broker.url)
    received: dict[str, list[dict[str, object]]] = {}
    subscribed = threading.Event()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        received.setdefault(msg.topic.rsplit("/", 1)[1], []).append(json.loads(msg.payload))

    watcher = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    watcher.on_message = on_message
    watcher.on_subscribe = lambda *_a: subscribed.set()
    watcher.connect(mqtt_broker.host, mqtt_broker.port)
    watcher.subscribe("rekindle/v1/out-test/sim1/out/#", qos=1)
    watcher.loop_start()
    writer = BufferedWriter(V1Transport(InfluxSettings(influxd.url, database="outputs")))
    service = AnalysisService(settings, writer, site="out-test").start()
    script = SimulationScript()
    try:
        assert subscribed.wait(GENEROUS_S)
        with Publisher(settings, "out-test", "sim1", device="sim") as pub:
            replay(simulate(script, seed=2), pub, speed=None)
        assert service.wait_sessions_finished(1, timeout=60)
        assert service.wait_idle(quiet_s=1.0)
    finally:
        service.stop()
        watcher.loop_stop()
        watcher.disconnect()
    offline = run_pipeline(simulate(script, seed=2), "sim").episodes
    assert offline
    closed = [e for e in received["episode"] if e["state"] == "closed"]
    opened = [e for e in received["episode"] if e["state"] == "open"]
    published = sorted((e["kind"], e["onset"], e["offset"]) for e in closed)
    assert published == sorted((e.kind, e.onset, e.offset) for e in offline)
    assert all(e["v"] == 1 and e["session"] == "sim1" for e in received["episode"])
    # every arousal episode was announced while open, before it closed, with the same onset
    arousal = [e for e in closed if e["kind"] == "arousal"]
    assert sorted(float(str(e["onset"])) for e in opened) == sorted(
        float(str(e["onset"])) for e in arousal
    )
    order = [(e["state"], e["onset"]) for e in received["episode"] if e["kind"] == "arousal"]
    for ep in arousal:
        assert order.index(("open", ep["onset"])) < order.index(("closed", ep["onset"]))
    assert all(float(str(o["confirmed"])) > float(str(o["onset"])) for o in opened)
    features = received["features"]
    assert len(features) > 1500  # one per second of the 30-min session
    assert all(
        0 <= float(str(f["arousal_index"])) <= 100
        for f in features
        if f["arousal_index"] is not None
    )
    assert {q["stream"] for q in received.get("quality", [])} >= {"eda"}


def test_a_session_whose_publisher_vanished_is_closed_after_the_idle_time(
    mqtt_broker: Mosquitto, influxd: InfluxD
) -> None:
    influxd.create_database("idle")
    settings = MqttSettings.from_url(mqtt_broker.url)
    writer = BufferedWriter(V1Transport(InfluxSettings(influxd.url, database="idle")))
    service = AnalysisService(settings, writer, site="idle", session_idle_s=1.0).start()
    try:
        now = time.time()
        with Publisher(settings, "idle", "gone") as pub:
            pub.send_status("strap", "online", now - 20)
            pub.send_samples("hr", "strap", [70.0] * 10, t0=now - 20, fs=1.0)
        # no "end" ever comes
        assert service.wait_sessions_finished(1, timeout=GENEROUS_S)
    finally:
        service.stop()
    assert service.stats.sessions_finished == 1
    assert service.pipelines == {}


def _ended_marks(influxd: InfluxD, db: str, session: str) -> int:
    return influxd.count(
        f'SELECT count("ended") FROM "features" WHERE "session" = \'{session}\'', db
    )


def test_the_end_mark_needs_every_device_to_end(mqtt_broker: Mosquitto, influxd: InfluxD) -> None:
    """``features.ended`` (what silences the no-data alert) is written only when every device
    that came online sent ``end``; a session with a device lost is closed after the idle time
    without it."""
    influxd.create_database("ends")
    settings = MqttSettings.from_url(mqtt_broker.url)
    writer = BufferedWriter(V1Transport(InfluxSettings(influxd.url, database="ends")))
    service = AnalysisService(settings, writer, site="ends", session_idle_s=1.0).start()
    now = time.time()
    try:
        ends: tuple[tuple[str, DeviceState], ...] = (("both-end", "end"), ("wrist-lost", "lost"))
        for session, wrist_state in ends:
            with Publisher(settings, "ends", session) as pub:
                for device in ("strap", "wrist"):
                    pub.send_status(device, "online", now - 30)
                pub.send_samples("hr", "strap", [70.0] * 20, t0=now - 30, fs=1.0)
                pub.send_samples("eda", "wrist", [2.0] * 80, t0=now - 30, fs=4.0)
                pub.send_status("wrist", wrist_state, now - 10)
                pub.send_status("strap", "end", now - 10)
        assert service.wait_sessions_finished(2, timeout=30)
        assert service.wait_idle(quiet_s=0.5)
    finally:
        service.stop()
    assert _ended_marks(influxd, "ends", "both-end") == 1
    assert _ended_marks(influxd, "ends", "wrist-lost") == 0
    states = influxd.series('SELECT "state" FROM "status" GROUP BY "session", "device"', "ends")
    assert len(states) == 4, "every status reached InfluxDB"
