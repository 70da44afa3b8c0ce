"""A publisher that resends its run after the analysis had already ended the session (the
acknowledgement came later than its 3-s resend timer: a loaded machine, a replay in 30-s
messages whose whole session is unconfirmed at once) does not start the session again."""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from rekindle.analysis.influx import BufferedWriter, InfluxSettings, V1Transport
from rekindle.analysis.service import AnalysisService
from rekindle.ingest.publisher import Publisher
from rekindle.ingest.replay import replay
from rekindle.ingest.sources.simulator import SimulationScript, simulate
from rekindle.mqtturl import MqttSettings
from tests.servers import InfluxD, Mosquitto

SITE = "resend"


def test_messages_resent_after_the_end_are_duplicates(
    mqtt_broker: Mosquitto, influxd: InfluxD
) -> None:
    influxd.create_database("resend")
    settings = MqttSettings.from_url(mqtt_broker.url)
    writer = BufferedWriter(V1Transport(InfluxSettings(influxd.url, database="resend")))
    service = AnalysisService(settings, writer, site=SITE, publish_features=False).start()
    sent: list[tuple[str, bytes]] = []
    subscribed = threading.Event()
    spy = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    spy.on_subscribe = lambda *_a: subscribed.set()
    spy.on_message = lambda _c, _u, m: sent.append((m.topic, bytes(m.payload)))
    spy.connect(mqtt_broker.host, mqtt_broker.port)
    spy.loop_start()
    try:
        spy.subscribe(f"rekindle/v1/{SITE}/s1/+", qos=1)
        spy.subscribe(f"rekindle/v1/{SITE}/s1/status/+", qos=1)
        assert subscribed.wait(10)
        with Publisher(settings, SITE, "s1", device="replay", ack_window=500) as pub:
            replay(simulate(SimulationScript(duration=120.0), seed=3), pub, speed=None)
        assert service.wait_sessions_finished(1, timeout=120)
        deadline = time.monotonic() + 30
        while not any(b'"end"' in p for _t, p in sent) and time.monotonic() < deadline:
            time.sleep(0.05)
        run = list(sent)  # (the spy also hears what it publishes below)
        assert len([t for t, _p in run if "/status/" not in t]) > 100
        before = service.stats.duplicates, service.stats.accepted
        # the run again, as Publisher._maybe_resend sends it: data (not retained), statuses
        for topic, payload in run:
            spy.publish(topic, payload, qos=1, retain="/status/" in topic)
        deadline = time.monotonic() + 60
        while service.stats.duplicates < before[0] + len(run) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert service.stats.duplicates == before[0] + len(run)
        assert service.stats.accepted == before[1]
        assert service.stats.sessions_finished == 1
        assert not service.pipelines
    finally:
        spy.loop_stop()
        spy.disconnect()
        service.stop()
