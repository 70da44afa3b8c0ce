"""A status delivered before data its run published earlier (mosquitto does that when its
in-flight window frees and fills out of order, as it does for the partitioned workers) waits
for that data, counted by the status's ``sent``: an ``end`` never finishes a session before its
last messages, which would then start a new run of it. Data that never comes is waited for
``gap_wait_s``, then the status applies."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from paho.mqtt.client import Client
from paho.mqtt.enums import CallbackAPIVersion

from rekindle import contract
from rekindle.analysis.influx import BufferedWriter, InfluxSettings, V1Transport
from rekindle.analysis.service import AnalysisService
from rekindle.mqtturl import MqttSettings
from tests.servers import InfluxD, Mosquitto

SITE, RUN, DB = "order", "r1", "status_order"


def test_end_waits_for_the_data_published_before_it(
    mqtt_broker: Mosquitto, influxd: InfluxD, tmp_path: Path
) -> None:
    influxd.create_database(DB)
    writer = BufferedWriter(V1Transport(InfluxSettings(influxd.url, database=DB)))
    service = AnalysisService(
        MqttSettings.from_url(mqtt_broker.url),
        writer,
        site=SITE,
        state_path=tmp_path / "state",
        gap_wait_s=1.0,
    ).start()
    client = Client(callback_api_version=CallbackAPIVersion.VERSION2)
    client.connect(mqtt_broker.host, mqtt_broker.port)
    client.loop_start()
    now = time.time() - 100

    def send(msg: contract.Message) -> None:
        topic, payload = contract.encode(msg)
        client.publish(topic, payload, qos=1).wait_for_publish(10)

    def hr(session: str, seq: int) -> contract.SampleMessage:
        msg = contract.samples(
            SITE, session, "hr", "strap", seq, [60.0 + seq], t0=now + seq, fs=1.0, run=RUN
        )
        return dataclasses.replace(msg, n=seq)

    def end(session: str, sent: int) -> contract.StatusMessage:
        return contract.StatusMessage(SITE, session, "strap", "end", now + 6, run=RUN, sent=sent)

    try:
        # "late": the end (after 6 messages) arrives before the last two
        send(contract.StatusMessage(SITE, "late", "strap", "online", now, run=RUN, sent=0))
        for seq in (0, 1, 2, 3):
            send(hr("late", seq))
        send(end("late", 6))
        for seq in (4, 5):
            send(hr("late", seq))
        assert service.wait_sessions_finished(1, timeout=120)
        # "lost": the end counts 6 messages, the last two never come
        send(contract.StatusMessage(SITE, "lost", "strap", "online", now, run=RUN, sent=0))
        for seq in (0, 1, 2, 3):
            send(hr("lost", seq))
        send(end("lost", 6))
        assert service.wait_sessions_finished(2, timeout=120)
    finally:
        service.stop()
        client.loop_stop()
        client.disconnect()
    for session, values in (("late", [60.0, 61, 62, 63, 64, 65]), ("lost", [60.0, 61, 62, 63])):
        stored = influxd.series(f"SELECT value FROM signal WHERE session = '{session}'", DB)
        assert [row[1] for row in stored[0]["values"]] == values, session
        ends = influxd.count(
            f"SELECT count(state) FROM status WHERE session = '{session}' AND state = 'end'", DB
        )
        assert ends == 1, session
    # the late data did not reopen the ended session as a new run
    assert (service.stats.sessions_finished, len(service.pipelines)) == (2, 0)
    assert service.stats.duplicates == 0
