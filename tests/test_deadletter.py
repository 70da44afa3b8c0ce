"""Bad input on the wire lands on the dead-letter topic with a reason; the service keeps going."""

from __future__ import annotations

import json
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from rekindle import contract
from rekindle.analysis.influx import BufferedWriter, InfluxSettings, V1Transport
from rekindle.analysis.service import AnalysisService
from rekindle.mqtturl import MqttSettings
from tests.servers import InfluxD, Mosquitto
from tests.waiting import GENEROUS_S, wait_until

SITE = "dl"
SESSION = "bad1"
NOW = time.time()


def body(**fields: object) -> bytes:
    base: dict[str, object] = {
        "v": 1,
        "device": "e4",
        "seq": 1,
        "t0": NOW - 60,
        "fs": 4.0,
        "values": [0.4, 0.5],
    }
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()


EDA = f"rekindle/v1/{SITE}/{SESSION}/eda"
BAD_INPUTS: list[tuple[str, str, bytes, str]] = [
    ("not json", EDA, b"{not json", "not JSON"),
    ("wrong version", EDA, body(v=9), "unsupported version"),
    ("missing field", EDA, body(device=...), "required field is missing"),
    ("extra field", EDA, body(colour="red"), "unknown field"),
    ("wrong type", EDA, body(seq="one"), "expected an integer"),
    ("NaN", EDA, body().replace(b"[0.4, 0.5]", b"[NaN, 0.5]"), "non-finite"),
    ("inf", EDA, body().replace(b"[0.4, 0.5]", b"[0.4, Infinity]"), "non-finite"),
    ("out of range", EDA, body(values=[0.4, 250.0]), "physical range"),
    ("unknown stream", f"rekindle/v1/{SITE}/{SESSION}/mood", body(), "unknown stream"),
    ("1 MB payload", EDA, body(values=[0.5] * 200_000), "exceed the limit"),
    ("far future", EDA, body(t0=NOW + 7 * 86400), "in the future"),
]


@pytest.fixture
def service(mqtt_broker: Mosquitto, influxd: InfluxD) -> AnalysisService:
    influxd.create_database("deadletter")
    writer = BufferedWriter(V1Transport(InfluxSettings(influxd.url, database="deadletter")))
    return AnalysisService(MqttSettings.from_url(mqtt_broker.url), writer, site=SITE)


def test_each_bad_input_is_deadlettered_and_service_keeps_going(
    service: AnalysisService, mqtt_broker: Mosquitto, influxd: InfluxD
) -> None:
    letters: list[tuple[str, dict[str, object]]] = []
    all_in = threading.Event()
    subscribed = threading.Event()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        letters.append((msg.topic, json.loads(msg.payload)))
        if len(letters) >= len(BAD_INPUTS):
            all_in.set()

    watcher = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    watcher.on_message = on_message
    watcher.on_subscribe = lambda *_a: subscribed.set()
    watcher.connect(mqtt_broker.host, mqtt_broker.port)
    watcher.subscribe(f"{contract.DEADLETTER_ROOT}/#", qos=1)
    watcher.loop_start()
    service.start()
    try:
        assert subscribed.wait(GENEROUS_S)
        for _name, topic, payload, _reason in BAD_INPUTS:
            watcher.publish(topic, payload, qos=1).wait_for_publish(GENEROUS_S)
        good = contract.samples(SITE, SESSION, "eda", "e4", 2, [0.7, 0.8], t0=NOW - 30, fs=4.0)
        topic, payload = contract.encode(good)
        watcher.publish(topic, payload, qos=1).wait_for_publish(GENEROUS_S)
        assert all_in.wait(GENEROUS_S), f"only {len(letters)} dead letters arrived"
        assert service.wait_idle(quiet_s=0.5)
    finally:
        service.stop()
        watcher.loop_stop()
        watcher.disconnect()

    assert len(letters) == len(BAD_INPUTS)
    for (name, topic, payload, reason), (dl_topic, letter) in zip(BAD_INPUTS, letters, strict=True):
        assert dl_topic == contract.deadletter_topic(topic), name
        assert letter["topic"] == topic, name
        assert reason in str(letter["reason"]), f"{name}: {letter['reason']}"
        assert letter["bytes"] == len(payload)
        assert len(str(letter["excerpt"])) <= 2048
    assert service.stats.rejected == len(BAD_INPUTS)
    assert service.stats.accepted == 1
    stored = influxd.series(
        f"SELECT value FROM signal WHERE session = '{SESSION}' AND stream = 'eda'", "deadletter"
    )
    assert [row[1] for row in stored[0]["values"]] == [0.7, 0.8]


def test_duplicates_dropped_and_gaps_counted(
    service: AnalysisService, mqtt_broker: Mosquitto, influxd: InfluxD
) -> None:
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    client.connect(mqtt_broker.host, mqtt_broker.port)
    client.loop_start()
    service.start()
    try:
        for seq in (0, 1, 1, 0, 4):
            msg = contract.samples(
                SITE, "dup", "hr", "strap", seq, [60.0 + seq], t0=NOW - 100 + seq, fs=1.0
            )
            topic, payload = contract.encode(msg)
            client.publish(topic, payload, qos=1).wait_for_publish(GENEROUS_S)
        wait_until(lambda: service.stats.received >= 5, "the five messages at the service")
        assert service.wait_idle(quiet_s=0.5)
    finally:
        service.stop()
        client.loop_stop()
        client.disconnect()
    assert service.stats.duplicates == 2
    assert service.stats.missing_seq == 2
    stored = influxd.series(
        "SELECT value FROM signal WHERE session = 'dup' AND stream = 'hr'", "deadletter"
    )
    assert [row[1] for row in stored[0]["values"]] == [60.0, 61.0, 64.0]
